"""The operator's declared permissions cover its code: every API call and every kopf handler.

The operator tests also check every request actually made against the same declaration (see
``check_permissions`` in conftest), and the chart's tests render exactly these rules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import courier_operator
from courier_gateway.config import Settings
from courier_operator import OperatorState, build_registry
from courier_operator import kube as kube_module
from courier_operator.rbac import CLEANUP_PERMISSIONS, PERMISSIONS, allows

PACKAGE = Path(courier_operator.__file__).parent
# KubeClient methods and the verb each is authorized as (a server-side apply is a PATCH).
VERBS = {"get": "get", "apply": "patch", "delete": "delete", "create": "create"}


def _client_calls(*, cleanup: bool = False) -> set[tuple[str, str, str]]:
    """(api group, resource, verb) of every ``KubeClient`` call in the operator's code (or in
    the cleanup command's, which runs under its own service account)."""
    resources = {
        name: value
        for name, value in vars(kube_module).items()
        if isinstance(value, kube_module.Resource)
    }
    found: set[tuple[str, str, str]] = set()
    for path in PACKAGE.rglob("*.py"):
        if (path.name == "cleanup.py") != cleanup:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            if isinstance(node.func, ast.Name) and node.func.id == "ensure":
                # objects.ensure(client, RESOURCE, desired): read, then apply.
                resource_arg = node.args[1]
                if isinstance(resource_arg, ast.Name) and resource_arg.id in resources:
                    resource = resources[resource_arg.id]
                    found |= {(resource.group, resource.plural, v) for v in ("get", "patch")}
                continue
            if not isinstance(node.func, ast.Attribute):
                continue
            if node.func.attr not in VERBS or not node.args:
                continue
            first = node.args[0]
            if not (isinstance(first, ast.Name) and first.id in resources):
                continue
            resource = resources[first.id]
            plural = resource.plural
            for keyword in node.keywords:
                if keyword.arg == "subresource" and isinstance(keyword.value, ast.Constant):
                    plural += f"/{keyword.value.value}"
            found.add((resource.group, plural, VERBS[node.func.attr]))
    return found


def test_every_api_call_in_the_code_is_allowed() -> None:
    calls = _client_calls()
    # The calls the reconcilers and the replay follower make: a scan that finds none is broken.
    assert ("apps", "deployments", "patch") in calls
    assert ("gateway.courier.dev", "couriergateways/status", "patch") in calls
    assert ("batch", "jobs", "delete") in calls
    missing = sorted(call for call in calls if not allows(*call))
    assert missing == []


def test_the_cleanup_command_may_do_what_it_does_and_no_more() -> None:
    calls = _client_calls(cleanup=True)
    granted = {
        (rule.api_group, resource, verb)
        for rule in CLEANUP_PERMISSIONS
        for resource in rule.resources
        for verb in rule.verbs
    }
    assert (
        calls
        == granted
        == {
            ("gateway.courier.dev", "couriergateways", "get"),
            ("gateway.courier.dev", "couriergateways", "delete"),
        }
    )


def test_the_operator_writes_only_by_server_side_apply() -> None:
    """No create, update or merge patch in the operator's code: every write is an apply."""
    writes = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and node.attr in ("create", "merge_patch")
                and isinstance(node.value, ast.Attribute)
                and node.value.attr == "client"
            ):
                writes.append(f"{path.name}:{node.lineno} {node.attr}")
    assert writes == []


def test_every_resource_kopf_handles_can_be_listed_watched_and_patched() -> None:
    registry = build_registry(Settings.from_env({}), OperatorState())
    handlers = [
        *registry._changing.get_all_handlers(),
        *registry._watching.get_all_handlers(),
        *registry._spawning.get_all_handlers(),
    ]
    selected = {(h.selector.group, h.selector.any_name) for h in handlers}
    assert len(selected) == 4
    for group, plural in selected:
        assert group is not None and plural is not None
        for verb in (
            ("list", "watch", "patch") if group == "gateway.courier.dev" else ("list", "watch")
        ):
            assert allows(group, plural, verb), (group, plural, verb)


def test_nothing_is_granted_that_no_code_or_kopf_uses() -> None:
    used = _client_calls()
    kopf_needs = {
        ("", "events", "create"),
        *{
            ("kopf.dev", plural, verb)
            for plural in ("kopfpeerings", "clusterkopfpeerings")
            for verb in ("get", "list", "watch", "patch")
        },
        *{
            (group, plural, verb)
            for group, plural in (
                ("gateway.courier.dev", "couriergateways"),
                ("gateway.courier.dev", "replayrequests"),
                ("apps", "deployments"),
                ("batch", "jobs"),
            )
            for verb in ("list", "watch")
        },
        ("gateway.courier.dev", "couriergateways", "patch"),  # kopf's annotations
        ("gateway.courier.dev", "replayrequests", "patch"),  # and its finalizer
    }
    granted = {
        (rule.api_group, resource, verb)
        for rule in PERMISSIONS
        for resource in rule.resources
        for verb in rule.verbs
    }
    assert granted - used - kopf_needs == set()
