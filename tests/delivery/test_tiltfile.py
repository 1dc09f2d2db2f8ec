"""The Tiltfile, executed for real with stubbed Tilt builtins (no Tilt, Docker or cluster here).

The Tiltfile runs under the pure-Python ``starlark`` interpreter with a stub for each Tilt builtin
it uses; every stub records its call. A builtin without a stub is an unknown name, so a Tiltfile
that starts using more of Tilt's API fails here until the stub (and these checks) catch up.
``helm()`` renders the chart for real (helm-python-sdk) with the values files and ``set`` flags
the Tiltfile passes, so the resources it declares are checked against the objects the chart
renders, and its port-forwards and selectors against the names the operator's own code gives the
objects it creates at run time. What stays unproved: that Tilt itself behaves as stubbed here.
"""

from __future__ import annotations

import copy
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import starlark
import yaml

from courier_operator.gateway.spec import parse_gateway_spec
from courier_operator.gateway.workloads import (
    ingress_deployment,
    selector_labels,
    service,
    worker_deployment,
)

ROOT = Path(__file__).resolve().parents[2]
TILTFILE = ROOT / "Tiltfile"
KIND_CONFIG = ROOT / "k8s" / "kind-config.yaml"
DEV_VALUES = ROOT / "k8s" / "dev-values.yaml"
OTHER_CONTEXT = "docker-desktop"

# Kinds Tilt treats as workloads (their pods are followed), besides those declared with k8s_kind.
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod"}
BUILTIN_KINDS = {
    "Namespace", "Secret", "ConfigMap", "Service", "ServiceAccount", "Deployment", "StatefulSet",
    "DaemonSet", "Job", "CronJob", "Pod", "Role", "RoleBinding", "ClusterRole",
    "ClusterRoleBinding", "PodDisruptionBudget", "NetworkPolicy", "CustomResourceDefinition",
}  # fmt: skip
# Kinds whose CRDs kube-prometheus-stack installs (the Tiltfile's opt-in monitoring stack).
PROMETHEUS_OPERATOR_KINDS = {"PodMonitor", "ServiceMonitor", "PrometheusRule"}
UI_LABELS = {"operator", "gateway", "data-stores", "monitoring", "tests"}


@dataclass
class Call:
    builtin: str
    args: list[Any]
    kwargs: dict[str, Any]

    def arg(self, position: int, name: str, default: Any = None) -> Any:
        """A parameter given by position or by keyword, as Tilt accepts both."""
        if len(self.args) > position:
            return self.args[position]
        return self.kwargs.get(name, default)


@dataclass
class TiltRun:
    """What one execution of the Tiltfile asked Tilt to do."""

    context: str
    calls: list[Call] = field(default_factory=list)
    applied: list[dict[str, Any]] = field(default_factory=list)
    defined_flags: set[str] = field(default_factory=set)
    read_paths: list[str] = field(default_factory=list)

    def of(self, builtin: str) -> list[Call]:
        return [call for call in self.calls if call.builtin == builtin]

    def local_resource(self, name: str) -> Call:
        found = [call for call in self.of("local_resource") if call.arg(0, "name") == name]
        assert len(found) == 1, f"{len(found)} local_resource named {name!r}"
        return found[0]

    def resource_names(self) -> set[str]:
        names = {call.arg(0, "name") for call in self.of("local_resource")}
        names |= {call.arg(0, "name") for call in self.of("helm_resource")}
        names |= {call.kwargs.get("resource_name") or call.args[0] for call in self.of("helm_repo")}
        for call in self.of("k8s_resource"):
            names.add(call.kwargs.get("new_name") or call.arg(0, "workload"))
        return names

    def custom_workload_kinds(self) -> set[str]:
        return {call.arg(0, "kind") for call in self.of("k8s_kind")}

    def gateway(self) -> dict[str, Any]:
        found = [doc for doc in self.applied if doc["kind"] == "CourierGateway"]
        assert len(found) == 1
        return found[0]

    def port_forwards(self) -> list[tuple[str, str, str, int, int]]:
        """(resource, namespace, target, local port, remote port) of every kubectl port-forward."""
        found = []
        for call in self.of("local_resource"):
            command = call.kwargs.get("serve_cmd") or ""
            for match in re.finditer(r"kubectl ([^;]*?)port-forward (\S+) (\d+):(\d+)", command):
                options = shlex.split(match.group(1))
                namespace = options[options.index("--namespace") + 1]
                local, remote = int(match.group(3)), int(match.group(4))
                found.append((call.arg(0, "name"), namespace, match.group(2), local, remote))
        return found


def _python(value: Any) -> Any:
    return starlark.from_value(value)


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _is_workload(doc: dict[str, Any], custom: set[str]) -> bool:
    return doc["kind"] in WORKLOAD_KINDS | custom


def _selects(fragment: str, doc: dict[str, Any]) -> bool:
    """Tilt's object selector name[:kind[:namespace]]: each part exact, case-insensitive."""
    parts = fragment.lower().split(":")
    actual = [
        doc["metadata"]["name"].lower(),
        doc["kind"].lower(),
        (doc["metadata"].get("namespace") or "").lower(),
    ]
    return all(part == actual[index] for index, part in enumerate(parts))


def run_tiltfile(
    chart: helm.Chart, *, context: str, flags: dict[str, Any], without: str | None = None
) -> TiltRun:
    """Execute the Tiltfile with recording stubs; Tilt's own behaviour is mirrored where used.

    ``without`` leaves one builtin out, as a Tilt version without it would.
    """
    run = TiltRun(context=context)

    def stub(name: str, result: Callable[..., Any] | None = None) -> starlark.BuiltinFunction:
        def impl(*args: Any, **kwargs: Any) -> Any:
            call = Call(
                name, [_python(arg) for arg in args], {k: _python(v) for k, v in kwargs.items()}
            )
            run.calls.append(call)
            return None if result is None else result(*call.args, **call.kwargs)

        return starlark.BuiltinFunction(name=name, impl=impl)

    def read_file(path: str, default: str | None = None) -> str:
        run.read_paths.append(path)
        return (ROOT / path).read_text()

    def render_chart(path: str, **kwargs: Any) -> str:
        values: dict[str, Any] = {}
        for values_file in kwargs.get("values") or []:
            values = _deep_merge(values, yaml.safe_load((ROOT / values_file).read_text()) or {})
        for expression in kwargs.get("set") or []:
            values = _deep_merge(values, helm.parse_set_string(expression))
        assert Path(ROOT / path).resolve() == Path(chart_path()).resolve()
        manifests = chart.render(
            values, name=kwargs["name"], namespace=kwargs["namespace"], is_install=True
        )
        # As `helm template --include-crds`: the CRDs first, then the templates (hooks included).
        texts = [crd["data"] for crd in chart.crds] if not kwargs.get("skip_crds") else []
        texts += [
            text
            for template, text in sorted(manifests.items())
            if template.endswith((".yaml", ".yml"))
        ]
        return "\n---\n".join(texts)

    def decode_yaml_stream(text: str) -> Any:
        return starlark.to_value([doc for doc in yaml.safe_load_all(text) if doc])

    def encode_yaml_stream(docs: list[Any]) -> str:
        return yaml.safe_dump_all(docs, sort_keys=False)

    def k8s_yaml(text: str, allow_duplicates: bool = False) -> None:
        run.applied.extend(doc for doc in yaml.safe_load_all(text) if doc)

    def define_flag(name: str, **kwargs: Any) -> None:
        run.defined_flags.add(name)

    def parse() -> Any:
        unknown = set(flags) - run.defined_flags
        assert not unknown, f"flags not defined with config.define_*: {unknown}"
        return starlark.to_value(flags)

    config = starlark.namespace(
        "config",
        {
            "define_bool": stub("config.define_bool", define_flag),
            "define_string": stub("config.define_string", define_flag),
            "define_string_list": stub("config.define_string_list", define_flag),
            "parse": stub("config.parse", parse),
        },
    )
    predeclared: dict[str, Any] = {
        "config": config,
        "k8s_context": stub("k8s_context", lambda: context),
        "read_file": stub("read_file", read_file),
        "docker_build": stub("docker_build"),
        "sync": stub("sync", lambda src, dest: ("sync", src, dest)),
        "run": stub("run", lambda command, trigger=None: ("run", command)),
        "fall_back_on": stub("fall_back_on", lambda files: ("fall_back_on", tuple(files))),
        "k8s_kind": stub("k8s_kind"),
        "helm": stub("helm", render_chart),
        "decode_yaml_stream": stub("decode_yaml_stream", decode_yaml_stream),
        "encode_yaml_stream": stub("encode_yaml_stream", encode_yaml_stream),
        "k8s_yaml": stub("k8s_yaml", k8s_yaml),
        "k8s_resource": stub("k8s_resource"),
        "local_resource": stub("local_resource"),
        "link": stub("link", lambda url, name="": ("link", url, name)),
        "TRIGGER_MODE_AUTO": "TRIGGER_MODE_AUTO",
        "TRIGGER_MODE_MANUAL": "TRIGGER_MODE_MANUAL",
    }
    predeclared.pop(without or "", None)
    extensions = {
        "ext://helm_resource": {
            "helm_resource": stub("helm_resource"),
            "helm_repo": stub("helm_repo"),
        },
    }

    def loader(name: str) -> starlark.Module:
        assert name in extensions, f"load({name!r}) has no stub"
        module = starlark.Module(name)
        for symbol, value in extensions[name].items():
            module.set(symbol, value)
        module.freeze()
        return module

    starlark.exec_file(
        TILTFILE.read_text(), filename=str(TILTFILE), predeclared=predeclared, loader=loader
    )
    return run


def chart_path() -> Path:
    return ROOT / "charts" / "courier-gateway"


@cache
def kind_config() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(KIND_CONFIG.read_text())
    return loaded


def kind_context() -> str:
    return f"kind-{kind_config()['name']}"


SCENARIOS: dict[str, dict[str, Any]] = {
    "kind": {"context": "kind", "flags": {}},
    "kind-grafana": {"context": "kind", "flags": {"grafana": True}},
    "other-cluster": {"context": OTHER_CONTEXT, "flags": {}},
}


@pytest.fixture(scope="module")
def tilt_runs(chart: helm.Chart) -> dict[str, TiltRun]:
    runs = {}
    for name, scenario in SCENARIOS.items():
        context = kind_context() if scenario["context"] == "kind" else scenario["context"]
        runs[name] = run_tiltfile(chart, context=context, flags=scenario["flags"])
    return runs


@pytest.fixture(params=sorted(SCENARIOS))
def tilt(request: pytest.FixtureRequest, tilt_runs: dict[str, TiltRun]) -> TiltRun:
    """Each way of running the Tiltfile in turn."""
    return tilt_runs[request.param]


def _operator_image_ref() -> str:
    repository: str = yaml.safe_load(DEV_VALUES.read_text())["image"]["repository"]
    return repository


def _docker_build(run: TiltRun, ref: str) -> Call:
    found = [call for call in run.of("docker_build") if call.arg(0, "ref") == ref]
    assert len(found) == 1, f"{len(found)} docker_build of {ref!r}"
    return found[0]


def _repository(image: str) -> str:
    return image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image


def _operator_deployment(run: TiltRun) -> dict[str, Any]:
    found = [
        doc
        for doc in run.applied
        if doc["kind"] == "Deployment"
        and doc["metadata"]["labels"].get("app.kubernetes.io/component") == "operator"
    ]
    assert len(found) == 1
    return found[0]


# ---- the harness itself -------------------------------------------------------------------------


@pytest.mark.parametrize("builtin", ["docker_build", "k8s_resource", "local_resource"])
def test_a_builtin_without_a_stub_fails_loudly(chart: helm.Chart, builtin: str) -> None:
    with pytest.raises(starlark.EvalError, match=f"name '{builtin}' is not defined"):
        run_tiltfile(chart, context=kind_context(), flags={}, without=builtin)


# ---- files --------------------------------------------------------------------------------------


def test_every_path_it_references_exists(tilt: TiltRun) -> None:
    paths: list[str] = list(tilt.read_paths)
    for call in tilt.of("docker_build"):
        paths.append(call.arg(1, "context"))
        if call.kwargs.get("dockerfile"):
            paths.append(call.kwargs["dockerfile"])
        for step in call.kwargs.get("live_update") or []:
            if step[0] == "sync":
                paths.append(step[1])
            elif step[0] == "fall_back_on":
                paths.extend(step[1])
    for call in tilt.of("helm"):
        paths.append(call.arg(0, "path"))
        paths.extend(call.kwargs.get("values") or [])
    missing = [path for path in paths if not (ROOT / path).exists()]
    assert paths
    assert not missing


def test_the_chart_is_deployed_with_the_dev_values(tilt: TiltRun) -> None:
    (call,) = tilt.of("helm")
    assert call.arg(0, "path") == "charts/courier-gateway"
    assert call.kwargs["values"] == ["k8s/dev-values.yaml"]
    assert all((ROOT / path).is_file() for path in call.kwargs["values"])
    assert call.kwargs["name"] == "courier-gateway"
    assert call.kwargs["namespace"]
    # Every applied object of the release is in the namespace Tilt creates (or cluster-scoped).
    namespaces = {doc["metadata"]["name"] for doc in tilt.applied if doc["kind"] == "Namespace"}
    assert namespaces == {call.kwargs["namespace"]}
    used = {doc["metadata"].get("namespace") for doc in tilt.applied} - {None}
    assert used == namespaces


def test_sync_sources_reach_the_build_context() -> None:
    # Tilt watches only what the context keeps: a synced directory excluded by .dockerignore
    # would never be synced.
    ignored = {
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert not {"services", "operator", "pyproject.toml"} & ignored


# ---- images and live update ---------------------------------------------------------------------


def test_operator_image_live_updates_services_and_operator(tilt: TiltRun) -> None:
    ref = _operator_image_ref()
    build = _docker_build(tilt, ref)
    steps = build.kwargs["live_update"]
    syncs = {(step[1], step[2]) for step in steps if step[0] == "sync"}
    assert ("services", "/app/services") in syncs
    assert ("operator", "/app/operator") in syncs
    # The restart comes last, after every sync, and writes the marker the supervisor watches.
    assert steps[-1][0] == "run"
    marker = re.search(r"marker=(\S+)", build.kwargs["entrypoint"][2])
    assert marker
    assert steps[-1][1].endswith(f"> {marker.group(1)}")
    assert marker.group(1).startswith("/tmp/")

    # The synced directories are where the image imports from: the stage added to the
    # repository's Dockerfile copies them there and puts them first on sys.path.
    contents = build.kwargs["dockerfile_contents"]
    assert contents.startswith((ROOT / "Dockerfile").read_text())
    stage = contents[len((ROOT / "Dockerfile").read_text()) :]
    assert f"AS {build.kwargs['target']}" in stage
    for source, dest in syncs:
        assert re.search(rf"COPY --chown=10001:10001 {source}/ {dest}/", stage)
    assert "ENV PYTHONPATH=/app/services:/app/operator" in stage
    base = re.search(r"^FROM (\S+) AS ", stage, re.MULTILINE)
    assert base
    assert re.search(rf"^FROM \S+ AS {base.group(1)}$", (ROOT / "Dockerfile").read_text(), re.M)
    # The supervisor runs the console script, which the image puts on PATH.
    assert 'courier-gateway "$@"' in build.kwargs["entrypoint"][2]
    assert 'ENTRYPOINT ["courier-gateway"]' in (ROOT / "Dockerfile").read_text()


def test_operator_container_can_take_the_live_update(tilt: TiltRun) -> None:
    deployment = _operator_deployment(tilt)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert _repository(container["image"]) == _operator_image_ref()
    # Tilt replaces the command with the supervisor; the role must come as args for "$@".
    assert "command" not in container
    assert container["args"] == ["operator"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is False
    assert any(mount["mountPath"] == "/tmp" for mount in container["volumeMounts"])


def test_gateway_pods_run_the_release_image_injected_into_the_custom_resource(
    tilt: TiltRun,
) -> None:
    gateway_image = _repository(tilt.gateway()["spec"]["image"])
    build = _docker_build(tilt, gateway_image)
    assert build.kwargs.get("dockerfile", "Dockerfile") == "Dockerfile"
    assert "dockerfile_contents" not in build.kwargs
    assert not build.kwargs.get("live_update")
    (kind,) = tilt.of("k8s_kind")
    assert kind.arg(0, "kind") == "CourierGateway"
    assert kind.kwargs["image_json_path"] == "{.spec.image}"
    assert kind.kwargs["api_version"] == tilt.gateway()["apiVersion"]
    assert gateway_image != _operator_image_ref()


# ---- resources ----------------------------------------------------------------------------------


def test_every_resource_names_objects_that_exist(tilt: TiltRun) -> None:
    custom = tilt.custom_workload_kinds()
    workloads = [doc for doc in tilt.applied if _is_workload(doc, custom)]
    workload_names = [doc["metadata"]["name"] for doc in workloads]
    # Tilt names a workload's resource after the object when the name is unique.
    assert len(workload_names) == len(set(workload_names))
    claimed: list[int] = []
    for call in tilt.of("k8s_resource"):
        workload = call.arg(0, "workload")
        if workload:
            assert workload in workload_names, workload
            claimed.append(id(workloads[workload_names.index(workload)]))
        else:
            assert call.kwargs["new_name"]
        for fragment in call.kwargs.get("objects") or []:
            matches = [doc for doc in tilt.applied if _selects(fragment, doc)]
            assert len(matches) == 1, f"{fragment!r} selects {len(matches)} objects"
            assert not _is_workload(matches[0], custom), fragment
            claimed.append(id(matches[0]))
    # Every object belongs to exactly one resource: none left in "uncategorized".
    assert sorted(claimed) == sorted(id(doc) for doc in tilt.applied)


def test_resources_are_grouped_and_ordered(tilt: TiltRun) -> None:
    names = tilt.resource_names()
    for call in tilt.of("k8s_resource") + tilt.of("local_resource") + tilt.of("helm_resource"):
        assert set(call.kwargs.get("labels") or []) <= UI_LABELS
        assert call.kwargs.get("labels"), call
        assert set(call.kwargs.get("resource_deps") or []) <= names
    labels = {label for call in tilt.of("k8s_resource") for label in call.kwargs["labels"]}
    assert {"operator", "gateway", "data-stores", "monitoring"} <= labels
    by_name = {call.kwargs.get("new_name"): call for call in tilt.of("k8s_resource")}
    assert {"operator", "redis", "mongo"} <= set(by_name["gateway"].kwargs["resource_deps"])


def test_every_applied_kind_is_known_to_the_cluster_when_applied(tilt: TiltRun) -> None:
    crd_kinds = {
        doc["spec"]["names"]["kind"]
        for doc in tilt.applied
        if doc["kind"] == "CustomResourceDefinition"
    }
    monitoring_installed = bool(tilt.of("helm_resource"))
    unknown = []
    for doc in tilt.applied:
        kind = doc["kind"]
        if kind in BUILTIN_KINDS or kind in crd_kinds:
            continue
        if kind in PROMETHEUS_OPERATOR_KINDS and monitoring_installed:
            continue
        unknown.append(f"{kind}/{doc['metadata']['name']}")
    assert not unknown, f"no CRD for {unknown}"


def test_objects_the_tiltfile_adds_are_valid(tilt: TiltRun) -> None:
    chart_labels = "helm.sh/chart"
    added = [doc for doc in tilt.applied if chart_labels not in doc["metadata"].get("labels", {})]
    added = [doc for doc in added if doc["kind"] != "CustomResourceDefinition"]
    assert added
    for doc in added:
        kubernetes_validate.validate(doc, "1.30.0", strict=True)


def test_helm_test_pods_are_left_out(tilt: TiltRun) -> None:
    hooks = [
        doc
        for doc in tilt.applied
        if "test" in (doc["metadata"].get("annotations") or {}).get("helm.sh/hook", "")
    ]
    assert not hooks


# ---- the gateway the operator creates -----------------------------------------------------------


def _operator_objects(run: TiltRun) -> dict[str, dict[str, Any]]:
    """The objects the operator's code makes for the rendered CourierGateway."""
    # As the API server returns it: with a uid (the operator's owner references carry it).
    gateway = copy.deepcopy(run.gateway())
    gateway["metadata"]["uid"] = "00000000-0000-0000-0000-000000000001"
    spec = parse_gateway_spec(gateway["spec"])
    return {
        "ingress": ingress_deployment(gateway, spec),
        "worker": worker_deployment(gateway, spec, spec.worker.minReplicas),
        "service": service(gateway, spec),
    }


def test_gateway_name_is_the_one_in_the_dev_values(tilt: TiltRun) -> None:
    dev = yaml.safe_load(DEV_VALUES.read_text())
    assert tilt.gateway()["metadata"]["name"] == dev["gateway"]["name"]


def test_port_forwards_reach_the_api_and_the_worker_metrics(tilt: TiltRun) -> None:
    made = _operator_objects(tilt)
    forwards = tilt.port_forwards()
    namespace = tilt.gateway()["metadata"]["namespace"]
    targets = {
        (target, local, remote) for _, ns, target, local, remote in forwards if ns == namespace
    }

    worker = made["worker"]
    (worker_container,) = worker["spec"]["template"]["spec"]["containers"]
    metrics = {port["containerPort"] for port in worker_container["ports"]}
    assert (f"deployment/{worker['metadata']['name']}", 9100, 9100) in targets
    assert metrics == {9100}

    api_service = made["service"]
    assert [port["port"] for port in api_service["spec"]["ports"]] == [3000]
    local_ports = [local for *_, local, _ in forwards]
    assert len(local_ports) == len(set(local_ports))
    if tilt.context == kind_context():
        # The API comes through kind's port mapping, not a port-forward (host 3000 is kind's).
        assert 3000 not in local_ports
        _assert_nodeport_reaches_ingress(tilt, made)
    else:
        assert (f"service/{api_service['metadata']['name']}", 3000, 3000) in targets
        assert not [doc for doc in tilt.applied if doc.get("spec", {}).get("type") == "NodePort"]


def _assert_nodeport_reaches_ingress(tilt: TiltRun, made: dict[str, Any]) -> None:
    (nodeport,) = [
        doc
        for doc in tilt.applied
        if doc["kind"] == "Service" and doc["spec"].get("type") == "NodePort"
    ]
    gateway_name = tilt.gateway()["metadata"]["name"]
    assert nodeport["spec"]["selector"] == selector_labels(tilt.gateway(), "ingress")
    ingress = made["ingress"]
    pod_labels = ingress["spec"]["template"]["metadata"]["labels"]
    assert nodeport["spec"]["selector"].items() <= pod_labels.items()
    assert ingress["metadata"]["name"] == f"{gateway_name}-ingress"
    (port,) = nodeport["spec"]["ports"]
    (container,) = ingress["spec"]["template"]["spec"]["containers"]
    named = {item["name"]: item["containerPort"] for item in container["ports"]}
    assert named[port["targetPort"]] == 3000
    (node,) = kind_config()["nodes"]
    mappings = {(item["containerPort"], item["hostPort"]) for item in node["extraPortMappings"]}
    assert (port["nodePort"], 3000) in mappings


def test_grafana_only_when_the_flag_is_on(tilt_runs: dict[str, TiltRun]) -> None:
    plain, grafana = tilt_runs["kind"], tilt_runs["kind-grafana"]
    assert "grafana" in plain.defined_flags
    assert not plain.of("helm_resource")
    assert not [f for f in plain.port_forwards() if f[0] == "grafana"]
    (stack,) = grafana.of("helm_resource")
    assert stack.arg(1, "chart") == "prometheus-community/kube-prometheus-stack"
    (forward,) = [f for f in grafana.port_forwards() if f[0] == "grafana"]
    _, namespace, target, local, _ = forward
    assert namespace == stack.kwargs["namespace"]
    assert target == f"service/{stack.arg(0, 'name')}-grafana"
    assert local not in {3000, 9100}
    kinds = {doc["kind"] for doc in grafana.applied}
    assert {"PodMonitor", "PrometheusRule"} <= kinds
    assert not {"PodMonitor", "PrometheusRule"} & {doc["kind"] for doc in plain.applied}
    monitoring = [
        call for call in grafana.of("k8s_resource") if call.kwargs.get("labels") == ["monitoring"]
    ]
    assert all(stack.arg(0, "name") in call.kwargs["resource_deps"] for call in monitoring)


# ---- tests --------------------------------------------------------------------------------------


def test_tests_resource_runs_make_test_on_demand(tilt: TiltRun) -> None:
    call = tilt.local_resource("tests")
    assert call.arg(1, "cmd") == "make test"
    assert call.kwargs["auto_init"] is False
    assert call.kwargs["trigger_mode"] == "TRIGGER_MODE_MANUAL"
    assert call.kwargs["labels"] == ["tests"]
    assert re.search(r"^test:", (ROOT / "Makefile").read_text(), re.MULTILINE)


def test_kind_cluster_has_one_node_and_the_api_mapping() -> None:
    config = kind_config()
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert config["kind"] == "Cluster"
    (node,) = config["nodes"]
    assert node["role"] == "control-plane"
    assert {(m["containerPort"], m["hostPort"]) for m in node["extraPortMappings"]} == {
        (30300, 3000)
    }
