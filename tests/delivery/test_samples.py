"""The samples under k8s/samples: valid for the API server, accepted by the operator, and whole.

Custom resources are checked against the chart's CRD schemas (tests.support.crds), built-in ones
against Kubernetes 1.30's schemas (kubernetes-validate, strict), the CRDs' CEL rules evaluated
with cel-python; the samples also go through the operator's own spec parsing, which repeats
those rules. The
references between the samples (gateway -> Secrets and keys, ReplayRequest -> gateway) and to the
chart's development Redis and MongoDB Services are followed; the ReplayRequest's Job arguments
are parsed by the real `courier-gateway replay` argument parser.
"""

from __future__ import annotations

import argparse
import base64
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from courier_gateway.cli.replay import add_arguments
from courier_operator.gateway.spec import parse_duration, parse_gateway_spec
from courier_operator.replay.job import job_name, parse_replay_spec, replay_arguments
from tests.delivery.conftest import NAMESPACE, dev_values
from tests.support.crds import validate_custom_resource

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "k8s" / "samples"
CUSTOM_GROUP = "gateway.courier.dev"
# Kubelet refreshes a mounted Secret within about a minute (sync period plus cache TTL): a
# rotation's overlap must comfortably exceed it, or couriers get refused in between.
KUBELET_SECRET_REFRESH_SECONDS = 120


def _documents() -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    for path in sorted(SAMPLES.glob("*.y*ml")):
        found.extend((path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc)
    return found


DOCUMENTS = _documents()


def _one(kind: str) -> dict[str, Any]:
    found = [doc for _, doc in DOCUMENTS if doc["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind} samples"
    return found[0]


def _secret_value(secret: dict[str, Any], key: str) -> str | None:
    if key in (secret.get("stringData") or {}):
        value: str = secret["stringData"][key]
        return value
    if key in (secret.get("data") or {}):
        return base64.b64decode(secret["data"][key]).decode()
    return None


def _secrets() -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in DOCUMENTS if doc["kind"] == "Secret"}


def _referenced(gateway: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """What the gateway reads from Secrets: role -> (Secret, key), with the CRD's default keys."""
    spec = parse_gateway_spec(gateway["spec"])
    refs = {
        "redis": (spec.redis.urlSecretRef.name, spec.redis.urlSecretRef.key),
        "mongo": (spec.mongo.uriSecretRef.name, spec.mongo.uriSecretRef.key),
    }
    if spec.downstream.signingSecretRef is not None:
        ref = spec.downstream.signingSecretRef
        refs["downstream"] = (ref.name, ref.key)
    return refs


def test_samples_exist() -> None:
    kinds = sorted(doc["kind"] for _, doc in DOCUMENTS)
    assert kinds.count("CourierGateway") == 1
    assert kinds.count("ReplayRequest") == 1
    assert "Secret" in kinds


@pytest.mark.parametrize(
    "doc",
    [doc for _, doc in DOCUMENTS],
    ids=[f"{name}:{doc['kind']}/{doc['metadata']['name']}" for name, doc in DOCUMENTS],
)
def test_every_document_is_valid(doc: dict[str, Any]) -> None:
    # Applied with `kubectl apply --namespace ...`: a namespace in a sample would override it.
    assert "namespace" not in doc["metadata"]
    if doc["apiVersion"].startswith(f"{CUSTOM_GROUP}/"):
        validate_custom_resource(doc)
    else:
        kubernetes_validate.validate(doc, "1.30.0", strict=True)


def test_the_operator_accepts_the_gateway() -> None:
    # The CEL rules (min <= max replicas, overlap < interval) are also the operator's.
    spec = parse_gateway_spec(_one("CourierGateway")["spec"])
    assert spec.worker.minReplicas < spec.worker.maxReplicas
    schemes = {source.scheme for source in spec.signing.sources}
    assert {"v1", "standard-webhooks"} <= schemes
    rotating = [source for source in spec.signing.sources if source.rotation.enabled]
    assert rotating
    for source in rotating:
        overlap = parse_duration(source.rotation.overlap).total_seconds()
        assert overlap > KUBELET_SECRET_REFRESH_SECONDS


def test_the_gateway_secrets_are_in_the_samples() -> None:
    secrets = _secrets()
    for role, (name, key) in _referenced(_one("CourierGateway")).items():
        assert name in secrets, f"{role}: Secret {name} is not in k8s/samples"
        assert _secret_value(secrets[name], key), f"{role}: Secret {name} has no key {key}"


def test_the_connection_urls_point_at_the_charts_dev_stores(render: Any) -> None:
    # The dev install is what `tilt up` makes: the chart with k8s/dev-values.yaml.
    rendered = render(dev_values())
    ports = {
        doc["metadata"]["name"]: {port["port"] for port in doc["spec"]["ports"]}
        for doc in rendered.of_kind("Service")
    }
    secrets = _secrets()
    refs = _referenced(_one("CourierGateway"))
    for role, scheme, default_port in (("redis", "redis", 6379), ("mongo", "mongodb", 27017)):
        name, key = refs[role]
        url = urlsplit(_secret_value(secrets[name], key) or "")
        assert url.scheme == scheme
        host = url.hostname or ""
        # A short name resolves in the sample's namespace; a qualified one must name the same.
        service, _, rest = host.partition(".")
        assert rest in ("", NAMESPACE, f"{NAMESPACE}.svc", f"{NAMESPACE}.svc.cluster.local")
        assert service in ports, f"{role}: no Service {service} in the dev install"
        assert (url.port or default_port) in ports[service]


def test_the_sample_gateway_does_not_share_state_with_the_dev_gateway() -> None:
    sample = _one("CourierGateway")
    dev = dev_values()["gateway"]
    assert sample["metadata"]["name"] != dev["name"]
    spec = parse_gateway_spec(sample["spec"])
    assert spec.mongo.database != dev.get("mongo", {}).get("database", "courier_gateway")
    dev_stream = dev.get("redis", {}).get("stream", "courier-events")
    redis_name, redis_key = _referenced(sample)["redis"]
    redis_db = urlsplit(_secret_value(_secrets()[redis_name], redis_key) or "").path.strip("/")
    assert spec.redis.stream != dev_stream or redis_db not in ("", "0")


def test_the_replay_request_targets_the_sample_gateway() -> None:
    request = _one("ReplayRequest")
    spec = parse_replay_spec(request["spec"])
    assert spec.gatewayRef.name == _one("CourierGateway")["metadata"]["name"]
    assert spec.selector.reasonCodes
    assert spec.selector.since is not None
    assert spec.selector.until is not None
    assert spec.dryRun is False


def test_the_replay_job_arguments_parse() -> None:
    request = _one("ReplayRequest")
    request = {**request, "metadata": {**request["metadata"], "namespace": NAMESPACE}}
    spec = parse_replay_spec(request["spec"])
    args = replay_arguments(request, spec)
    assert args[0] == "replay"
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_arguments(parser)
    parsed = parser.parse_args(args[1:])
    assert parsed.reason == spec.selector.reasonCodes
    assert parsed.limit == spec.limit
    assert parsed.request_id == f"{NAMESPACE}/{request['metadata']['name']}"
    assert len(job_name(request)) <= 63
