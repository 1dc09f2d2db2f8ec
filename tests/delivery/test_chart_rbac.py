"""The operator's permissions and peering objects, in both of its modes.

The rules are exactly the operator's declared ``PERMISSIONS`` (which the operator tests compare
with every request it makes), written once in ``_helpers.tpl``: cluster-wide by default, or
repeated as a Role in each watched namespace. kopf runs with mandatory peering and pauses until
it sees its peering object, which it never creates, so the chart creates one wherever kopf looks
for it.
"""

from __future__ import annotations

from typing import Any

import pytest

from courier_operator.rbac import CLEANUP_PERMISSIONS, PERMISSIONS
from tests.delivery.conftest import CHART, NAMESPACE, RELEASE, Render, Rendered

# The operator's own declaration; the operator tests hold its requests to the same list.
OPERATOR_RULES: list[dict[str, Any]] = [rule.as_manifest() for rule in PERMISSIONS]

WATCHED = ["shipping", "returns"]


def service_account_subject(rendered: Rendered) -> dict[str, str]:
    pod = rendered.one("Deployment", f"{RELEASE}-operator")["spec"]["template"]["spec"]
    return {"kind": "ServiceAccount", "name": pod["serviceAccountName"], "namespace": NAMESPACE}


def of_component(rendered: Rendered, kind: str, component: str = "operator") -> list[Any]:
    """The objects of ``kind`` that belong to ``component`` (the operator, or the cleanup hook)."""
    return [
        doc
        for doc in rendered.of_kind(kind)
        if doc["metadata"]["labels"].get("app.kubernetes.io/component") == component
    ]


def test_cluster_wide_by_default(render: Render) -> None:
    rendered = render()
    (role,) = of_component(rendered, "ClusterRole")
    assert role["rules"] == OPERATOR_RULES
    (binding,) = of_component(rendered, "ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [service_account_subject(rendered)]
    (account,) = of_component(rendered, "ServiceAccount")
    assert account["metadata"]["name"] == f"{RELEASE}-operator"
    assert rendered.of_kind("Role") == rendered.of_kind("RoleBinding") == []


def test_namespaced_operator_gets_a_role_in_each_watched_namespace(render: Render) -> None:
    rendered = render({"operator": {"watchNamespaces": WATCHED}})
    assert rendered.of_kind("ClusterRole") == rendered.of_kind("ClusterRoleBinding") == []
    roles = {role["metadata"]["namespace"]: role for role in of_component(rendered, "Role")}
    bindings = {
        item["metadata"]["namespace"]: item for item in of_component(rendered, "RoleBinding")
    }
    assert sorted(roles) == sorted(bindings) == sorted(WATCHED)
    for namespace in WATCHED:
        assert roles[namespace]["rules"] == OPERATOR_RULES
        assert bindings[namespace]["roleRef"]["kind"] == "Role"
        assert bindings[namespace]["roleRef"]["name"] == roles[namespace]["metadata"]["name"]
        assert bindings[namespace]["subjects"] == [service_account_subject(rendered)]


@pytest.mark.parametrize("watched", [[], WATCHED])
def test_the_uninstall_cleanup_hook_may_delete_the_charts_gateway_only(
    render: Render, watched: list[str]
) -> None:
    stores = {"redis": {"existingSecret": "r"}, "mongo": {"existingSecret": "m"}}
    values = {
        "operator": {"watchNamespaces": watched},
        "gateway": {"enabled": True, "name": "edge"},
        "cleanup": {"enabled": True},
        **stores,
    }
    rendered = render(values)
    (role,) = of_component(rendered, "Role", "cleanup")
    (binding,) = of_component(rendered, "RoleBinding", "cleanup")
    assert of_component(rendered, "ClusterRole", "cleanup") == []
    # Only where the chart's gateway lives, whatever the operator watches.
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == NAMESPACE
    assert role["rules"] == [rule.as_manifest() for rule in CLEANUP_PERMISSIONS]
    assert role["rules"] == [
        {
            "apiGroups": ["gateway.courier.dev"],
            "resources": ["couriergateways"],
            "verbs": ["get", "delete"],
        }
    ]
    (account,) = of_component(rendered, "ServiceAccount", "cleanup")
    (job,) = of_component(rendered, "Job", "cleanup")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": NAMESPACE}
    ]
    for doc in [role, binding, account, job]:
        assert doc["metadata"]["annotations"]["helm.sh/hook"] == "pre-delete"
    # RBAC and the account exist before the Job runs; all go once it succeeded.
    assert int(account["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
        job["metadata"]["annotations"]["helm.sh/hook-weight"]
    )
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == [
        "cleanup",
        "--namespace",
        NAMESPACE,
        "--gateway",
        "edge",
        "--timeout",
        "120",
    ]
    assert pod["serviceAccountName"] == account["metadata"]["name"]


def test_uninstall_deletes_no_gateway_by_default(render: Render) -> None:
    """CloudNativePG-like: removing the operator never removes what runs on it."""
    stores = {"redis": {"existingSecret": "r"}, "mongo": {"existingSecret": "m"}}
    rendered = render({"gateway": {"enabled": True}, **stores})
    assert rendered.of_kind("Job") == []
    assert [
        doc
        for _, doc in rendered.objects
        if "helm.sh/hook" in doc["metadata"].get("annotations", {})
        and doc["metadata"]["annotations"]["helm.sh/hook"] == "pre-delete"
    ] == []
    gateway = rendered.one("CourierGateway")
    assert gateway["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    # Nothing to clean up when the chart made no gateway.
    assert render({"cleanup": {"enabled": True}}).of_kind("Job") == []


def test_rbac_and_service_account_can_be_left_out(render: Render) -> None:
    rendered = render({"rbac": {"create": False}, "serviceAccount": {"create": False}})
    # The cleanup hook goes too: without the chart's RBAC it would have no permissions.
    for kind in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "ServiceAccount"):
        assert rendered.of_kind(kind) == [], kind
    assert rendered.of_kind("Job") == []
    assert service_account_subject(rendered)["name"] == "default"


def test_the_rules_are_written_in_one_place() -> None:
    templates = CHART / "templates"
    holders = [path.name for path in templates.rglob("*") if "apiGroups:" in _text(path)]
    assert holders == ["_helpers.tpl"]


def _text(path: Any) -> str:
    return path.read_text() if path.is_file() else ""


def test_the_chart_creates_the_peering_kopf_waits_for(render: Render) -> None:
    cluster = render()
    (peering,) = cluster.of_kind("ClusterKopfPeering")
    assert peering["metadata"]["name"] == "courier-gateway"
    assert cluster.of_kind("KopfPeering") == []

    namespaced = render({"operator": {"watchNamespaces": WATCHED, "peering": "couriers"}})
    assert namespaced.of_kind("ClusterKopfPeering") == []
    peerings = namespaced.of_kind("KopfPeering")
    assert sorted(p["metadata"]["namespace"] for p in peerings) == sorted(WATCHED)
    assert {p["metadata"]["name"] for p in peerings} == {"couriers"}
    container = namespaced.one("Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "OPERATOR_PEERING", "value": "couriers"} in container["env"]

    standalone = render({"operator": {"peering": "standalone"}})
    assert standalone.of_kind("ClusterKopfPeering") == standalone.of_kind("KopfPeering") == []
