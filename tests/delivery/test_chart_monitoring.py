"""What the chart points at the gateway pods: monitors, policies, the helm test, the notes.

The gateway's pods and Service are created by the operator, not by the chart, so these tests
build them with the operator's own code from the chart's CourierGateway and check that every
selector, port name and Secret name the chart uses finds them. The dashboard and the alert rules
are the files under ``files/``, carried unchanged.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from tests.delivery.conftest import (
    CHART,
    FULL_VALUES,
    NAMESPACE,
    RELEASE,
    VALUE_SETS,
    Render,
    Rendered,
    matches,
    operator_objects,
)


def gateway_pods(rendered: Rendered) -> dict[str, dict[str, Any]]:
    """component -> pod template of the Deployments the operator would create."""
    return {
        doc["metadata"]["labels"]["app.kubernetes.io/component"]: doc["spec"]["template"]
        for doc in operator_objects(rendered)
        if doc["kind"] == "Deployment"
    }


def port_names(pod: dict[str, Any]) -> set[str]:
    return {port["name"] for c in pod["spec"]["containers"] for port in c.get("ports", [])}


def port_numbers(pod: dict[str, Any]) -> set[int]:
    return {port["containerPort"] for c in pod["spec"]["containers"] for port in c["ports"]}


def operator_pod_labels(rendered: Rendered) -> dict[str, str]:
    labels: dict[str, str] = rendered.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    return labels


def test_monitoring_objects_are_opt_in(render: Render) -> None:
    rendered = render()
    for kind in ("PodMonitor", "ServiceMonitor", "PrometheusRule", "ConfigMap", "NetworkPolicy"):
        assert rendered.of_kind(kind) == [], kind


def test_the_pod_monitor_scrapes_every_gateway_pod(render: Render) -> None:
    rendered = render({"monitoring": {"podMonitor": {"enabled": True}}})
    monitor = rendered.one("PodMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    # The operator watches every namespace: so do the monitors, unless told otherwise.
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    endpoints = {item["port"]: item for item in monitor["spec"]["podMetricsEndpoints"]}
    pods = gateway_pods(rendered)
    for component, port in (("ingress", "http"), ("worker", "metrics")):
        assert matches(monitor["spec"]["selector"], pods[component]["metadata"]["labels"])
        assert port in port_names(pods[component])
        assert endpoints[port]["path"] == "/metrics"
    assert not matches(monitor["spec"]["selector"], operator_pod_labels(rendered))


def test_the_monitors_look_where_the_operator_works_or_where_told(render: Render) -> None:
    on = {"podMonitor": {"enabled": True}, "serviceMonitor": {"enabled": True}}
    namespaced = render(
        {"monitoring": on, "operator": {"watchNamespaces": ["shipping", "returns"]}}
    )
    chosen = render({"monitoring": {**on, "namespaceSelector": {"matchNames": ["edge"]}}})
    for kind in ("PodMonitor", "ServiceMonitor"):
        selector = namespaced.one(kind)["spec"]["namespaceSelector"]
        assert selector == {"matchNames": ["shipping", "returns"]}
        assert chosen.one(kind)["spec"]["namespaceSelector"] == {"matchNames": ["edge"]}


def test_with_the_service_monitor_each_pod_is_scraped_once(render: Render) -> None:
    rendered = render(FULL_VALUES)
    pods = gateway_pods(rendered)
    service = next(doc for doc in operator_objects(rendered) if doc["kind"] == "Service")
    monitor = rendered.one("ServiceMonitor")
    assert matches(monitor["spec"]["selector"], service["metadata"]["labels"])
    assert [item["port"] for item in monitor["spec"]["endpoints"]] == ["http"]
    assert "http" in {port["name"] for port in service["spec"]["ports"]}
    pod_monitor = rendered.one("PodMonitor")
    assert not matches(pod_monitor["spec"]["selector"], pods["ingress"]["metadata"]["labels"])
    assert matches(pod_monitor["spec"]["selector"], pods["worker"]["metadata"]["labels"])
    assert [item["port"] for item in pod_monitor["spec"]["podMetricsEndpoints"]] == ["metrics"]
    for doc in (monitor, pod_monitor, rendered.one("PrometheusRule")):
        assert doc["metadata"]["labels"]["release"] == "prometheus"


def test_the_dashboard_config_map_holds_the_dashboard(render: Render) -> None:
    rendered = render(VALUE_SETS["dev"])
    (config_map,) = rendered.of_kind("ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    (text,) = config_map["data"].values()
    dashboard = json.loads(text)
    assert dashboard == json.loads((CHART / "files" / "dashboard.json").read_text())
    assert dashboard["panels"]
    assert all("targets" in panel for panel in dashboard["panels"] if panel["type"] != "row")

    custom = render(
        {
            "grafanaDashboard": {
                "enabled": True,
                "namespace": "monitoring",
                "sidecarLabel": "example.com/dashboard",
                "sidecarLabelValue": "courier",
            }
        }
    ).one("ConfigMap")
    assert custom["metadata"]["namespace"] == "monitoring"
    assert custom["metadata"]["labels"]["example.com/dashboard"] == "courier"


def test_the_prometheus_rule_holds_the_alert_file(render: Render) -> None:
    rule = render({"prometheusRule": {"enabled": True}}).one("PrometheusRule")
    alerts = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
    assert rule["spec"]["groups"] == alerts["groups"]
    # Prometheus's own templates reach Prometheus untouched by Helm.
    assert "{{ $value" in json.dumps(rule["spec"]["groups"])


def test_the_network_policies_admit_exactly_the_gateway_ports(render: Render) -> None:
    rendered = render(FULL_VALUES)
    pods = gateway_pods(rendered)
    gateway = rendered.one("NetworkPolicy", f"{RELEASE}-gateway")["spec"]
    operator = rendered.one("NetworkPolicy", f"{RELEASE}-operator")["spec"]
    for component in ("ingress", "worker"):
        assert matches(gateway["podSelector"], pods[component]["metadata"]["labels"])
        assert not matches(operator["podSelector"], pods[component]["metadata"]["labels"])
    assert matches(operator["podSelector"], operator_pod_labels(rendered))
    assert not matches(gateway["podSelector"], operator_pod_labels(rendered))

    allowed = {rule["ports"][0]["port"]: rule for rule in gateway["ingress"]}
    assert set(allowed) == port_numbers(pods["ingress"]) | port_numbers(pods["worker"])
    assert allowed[3000]["from"] == FULL_VALUES["networkPolicy"]["ingress"]["from"]
    metrics = FULL_VALUES["networkPolicy"]["metrics"]["namespaceSelector"]
    assert allowed[9100]["from"] == [{"namespaceSelector": metrics}]
    assert [rule["ports"][0]["port"] for rule in operator["ingress"]] == [8080]
    # Restricted egress: DNS, the stores, then the extra rule for the downstream.
    egress_ports = [{port["port"] for port in rule["ports"]} for rule in gateway["egress"]]
    assert egress_ports == [{53}, {6379, 26379, 27017}, {443}]
    operator_ports = {port["port"] for rule in operator["egress"] for port in rule["ports"]}
    assert operator_ports == {53, 443, 6443, 6379, 26379}  # Redis or its sentinels


def test_egress_is_open_unless_restricted(render: Render) -> None:
    rendered = render({"networkPolicy": {"enabled": True}})
    for policy in rendered.of_kind("NetworkPolicy"):
        assert policy["spec"]["egress"] == [{}]
    gateway = rendered.one("NetworkPolicy", f"{RELEASE}-gateway")["spec"]
    assert "from" not in gateway["ingress"][0]  # webhooks from anywhere by default


def test_the_helm_test_posts_a_signed_event_to_the_gateway(render: Render) -> None:
    rendered = render(FULL_VALUES)
    pod = rendered.one("Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["restartPolicy"] == "Never"
    service = next(doc for doc in operator_objects(rendered) if doc["kind"] == "Service")
    first = FULL_VALUES["gateway"]["signing"]["sources"][0]
    (container,) = pod["spec"]["containers"]
    assert container["args"] == [
        "sign",
        "--send",
        "--url",
        f"http://{service['metadata']['name']}.{NAMESPACE}.svc:3000",
        "--source",
        first["name"],
        "--scheme",
        first["scheme"],
        "--secret-file",
        "/keys",
    ]
    from courier_operator.gateway.workloads import source_secret_name

    gateway = rendered.one("CourierGateway")
    volumes = {volume["name"]: volume for volume in pod["spec"]["volumes"]}
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    assert volumes[mounts["/keys"]]["secret"]["secretName"] == source_secret_name(
        gateway, first["name"]
    )
    assert render().of_kind("Pod") == []


def test_the_notes_say_how_to_send_the_first_event(render: Render) -> None:
    notes = render(VALUE_SETS["dev"]).notes
    assert "port-forward svc/courier-gateway 3000:3000" in notes
    assert "courier-gateway sign --source courier --secret-file courier.key" in notes
    assert "get secret courier-gateway-source-courier" in notes
    assert f"helm test {RELEASE}" in notes
    assert "Create a CourierGateway" in render().notes
