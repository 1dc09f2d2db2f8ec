"""The operator under test: kopf running in the test's event loop against an emulated API.

The operator is the real one (``run_operator``, with the production handlers), logged in to
:class:`~tests.support.kube.KubernetesAPI` over HTTP. Tests act as ``kubectl`` would through a
:class:`~courier_operator.kube.KubeClient` on the same API, and as the controllers would where
the emulator has none (writing a Deployment's or Job's status).
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import jsonschema
import kopf
import pytest

from courier_gateway.config import Settings
from courier_operator import run_operator
from courier_operator.kube import COURIER_GATEWAYS, SECRETS, KubeClient
from courier_operator.rbac import CLEANUP_PERMISSIONS, PERMISSIONS
from courier_operator.runner import CLEANUP_AGENT
from tests.support.crds import crd_schema
from tests.support.kube import KubernetesAPI, declare_resources

NAMESPACE = "couriers"
TEST_CLIENT = "kubectl-in-tests"
INTERVAL = 0.3


@pytest.fixture
def kmock_options(kmock_options: dict[str, Any]) -> dict[str, Any]:
    """Every operator test runs on the emulator with identities and versions."""
    return {**kmock_options, "cls": KubernetesAPI}


@pytest.fixture
def kube_api(kmock: Any) -> Iterator[Any]:
    """The emulated API with every resource declared and our namespace present.

    When the test ends, every status the operator wrote must fit its CRD's status schema with
    no unknown field: the API server would drop an undeclared field without a word.
    """
    declare_resources(kmock)
    kmock.objects["v1/namespaces", None, NAMESPACE] = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": NAMESPACE},
    }
    yield kmock
    check_permissions(kmock)
    for (resource, _namespace, _name), obj in list(kmock.objects.items()):
        if resource.group == "gateway.courier.dev" and obj.get("status"):
            check_status(json.loads(json.dumps(obj.raw, default=dict)))


def _verb(request: Any) -> str:
    method = str(request.method).rsplit(".", 1)[-1].lower()
    if method == "get":
        if request.params.get("watch") == "true":
            return "watch"
        return "get" if request.name else "list"
    return {"post": "create", "put": "update"}.get(method, method)


def operator_requests(api: Any, agent: str | None = None) -> Iterator[tuple[str, str, str]]:
    """(api group, resource, verb) of every request the operator (kopf included) made, or of
    the client with user agent ``agent``."""
    for request in list(api):
        if request.resource is None or request.resource.plural is None:
            continue  # API discovery: allowed to every authenticated client
        headers = {name.lower(): value for name, value in request.headers.items()}
        user_agent = headers.get("user-agent")
        if user_agent == TEST_CLIENT:
            continue  # the test acting as a user or a controller
        if (user_agent == CLEANUP_AGENT) != (agent == CLEANUP_AGENT):
            continue
        resource = request.resource.plural
        if request.subresource:
            resource += f"/{request.subresource}"
        yield request.resource.group, resource, _verb(request)


def check_permissions(api: Any) -> None:
    """Every request the operator made is allowed by its declared RBAC; the cleanup's by its."""
    for agent, rules in ((None, PERMISSIONS), (CLEANUP_AGENT, CLEANUP_PERMISSIONS)):
        for group, resource, verb in operator_requests(api, agent):
            allowed = any(
                rule.api_group == group and resource in rule.resources and verb in rule.verbs
                for rule in rules
            )
            assert allowed, (
                f"{agent or 'the operator'} made a request its RBAC does not allow: {verb}"
                f" {group or 'core'}/{resource}"
            )


def check_status(obj: dict[str, Any]) -> None:
    """Validate ``obj['status']`` against its CRD's status schema, unknown fields refused."""
    schema = crd_schema(obj["kind"])["properties"]["status"]
    schema["$schema"] = "http://json-schema.org/draft-07/schema#"
    jsonschema.validate(obj["status"], schema, format_checker=jsonschema.FormatChecker())


@pytest.fixture
async def kubectl(kube_api: Any) -> AsyncIterator[KubeClient]:
    """A client on the emulated API, for what a user (or a controller) would do."""
    client = KubeClient(
        kopf.ConnectionInfo(server=str(kube_api.url)),
        user_agent=TEST_CLIENT,
        field_manager=TEST_CLIENT,
    )
    try:
        yield client
    finally:
        await client.aclose()


OperatorFactory = Callable[..., Any]


@pytest.fixture
async def operator(kube_api: Any) -> AsyncIterator[OperatorFactory]:
    """Start the operator (``await operator(**settings)``); it is stopped when the test ends.

    It runs in a thread with its own event loop, as in production: when kopf stops it cancels
    every task of its loop that it did not start with, which would include pytest's own.
    """
    running: list[tuple[threading.Thread, threading.Event]] = []

    async def start(**overrides: str) -> None:
        environ = {
            # Cluster-wide, the chart's default (one test runs the namespaced mode).
            "OPERATOR_NAMESPACES": "",
            "OPERATOR_PEERING": "standalone",
            "OPERATOR_INTERVAL_SECONDS": str(INTERVAL),
            "OPERATOR_HEALTH_PORT": "0",
            **overrides,
        }
        settings = Settings.from_env(environ)
        stop, ready = threading.Event(), threading.Event()
        main = run_operator(
            settings,
            login=lambda **_: kopf.ConnectionInfo(server=str(kube_api.url)),
            stop_flag=stop,
            ready_flag=ready,
            configure_logs=False,
        )
        thread = threading.Thread(target=asyncio.run, args=(main,), name="operator", daemon=True)
        thread.start()
        running.append((thread, stop))
        assert await asyncio.to_thread(ready.wait, 10), "the operator did not start"

    try:
        yield start
    finally:
        for thread, stop in running:
            stop.set()
            await asyncio.to_thread(thread.join, 15)
            assert not thread.is_alive(), "the operator did not stop"


def secret(name: str, **values: str) -> dict[str, Any]:
    """A Secret manifest with ``values`` base64-encoded."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "data": {key: base64.b64encode(value.encode()).decode() for key, value in values.items()},
    }


def gateway_manifest(name: str, **spec: Any) -> dict[str, Any]:
    """A CourierGateway as a user would write it (defaults left to the operator)."""
    body: dict[str, Any] = {
        "image": "registry.example/courier-gateway:1.0.0",
        "redis": {"urlSecretRef": {"name": "queue"}},
        "mongo": {"uriSecretRef": {"name": "store"}},
        "signing": {"sources": [{"name": "dhl", "scheme": "standard-webhooks"}, {"name": "fedex"}]},
    }
    body.update(spec)
    return {
        "apiVersion": "gateway.courier.dev/v1alpha1",
        "kind": "CourierGateway",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": body,
    }


async def create_gateway(
    kubectl: KubeClient, redis_url: str, name: str | None = None, **spec: Any
) -> dict[str, Any]:
    """Create the connection Secrets (if missing) and a gateway; return the created object."""
    for manifest in (secret("queue", url=redis_url), secret("store", uri="mongodb://store:27017")):
        if await kubectl.get(SECRETS, NAMESPACE, manifest["metadata"]["name"]) is None:
            await kubectl.create(SECRETS, NAMESPACE, manifest)
    manifest = gateway_manifest(name or f"gw-{uuid.uuid4().hex[:6]}", **spec)
    return await kubectl.create(COURIER_GATEWAYS, NAMESPACE, manifest)


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any] | None:
    """The status condition of type ``kind``, if any."""
    for item in ((obj or {}).get("status") or {}).get("conditions") or []:
        if item.get("type") == kind:
            return dict(item)
    return None
