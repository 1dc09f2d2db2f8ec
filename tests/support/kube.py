"""A Kubernetes API for the operator tests: kmock's emulator, made a little more like the real one.

kmock keeps objects in memory and serves list, watch, get, create, merge/JSON patch and delete
over real HTTP. It sets no ``uid``, ``resourceVersion``, ``generation`` or
``creationTimestamp`` and answers a failed JSON-patch ``test`` with 500; kopf needs all of
these to behave as it does against a real cluster, so :class:`KubernetesAPI` adds them.

Not emulated (see docs/operator.md): controllers (Deployments get no pods, Jobs never run; tests
write their status as the controllers would), admission and CRD schema validation (tests check
objects against the CRD schemas instead), garbage collection, label selectors.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp.web
import jsonpatch
import kmock
from kmock._internal.k8s import KubernetesObjectConflictError

__all__ = ["RESOURCES", "KubernetesAPI", "declare_resources", "eventually"]

_UPDATE = kmock.action.UPDATE
_CREATE = kmock.action.CREATE

# Every resource the operator and kopf touch, as the API server would announce them.
RESOURCES: dict[str, dict[str, Any]] = {
    "gateway.courier.dev/v1alpha1/couriergateways": {"kind": "CourierGateway", "status": True},
    "gateway.courier.dev/v1alpha1/replayrequests": {"kind": "ReplayRequest", "status": True},
    "apps/v1/deployments": {"kind": "Deployment", "status": True},
    "batch/v1/jobs": {"kind": "Job", "status": True},
    "policy/v1/poddisruptionbudgets": {"kind": "PodDisruptionBudget", "status": True},
    "v1/services": {"kind": "Service", "status": True},
    "v1/secrets": {"kind": "Secret", "status": False},
    "v1/configmaps": {"kind": "ConfigMap", "status": False},
    "v1/events": {"kind": "Event", "status": False},
    "v1/namespaces": {"kind": "Namespace", "status": True, "namespaced": False},
    "kopf.dev/v1/kopfpeerings": {"kind": "KopfPeering", "status": False},
}


class KubernetesAPI(kmock.KubernetesEmulator):  # type: ignore[misc]
    """kmock's emulator with object identity, versions and 422 for failed patch tests."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._versions = itertools.count(1)

    async def _handle(self, request: Any) -> aiohttp.web.StreamResponse:
        if request.resource is not None:
            if request.action == _CREATE and isinstance(request.data, dict):
                self._stamp_new(request)
            elif request.action == _UPDATE and request.name is not None:
                self._stamp_update(request)
        return await super()._handle(request)

    def _stamp_new(self, request: Any) -> None:
        if request.resource.plural == "secrets" and request.data.get("stringData"):
            # The API server stores stringData as base64 data and never returns it.
            data = request.data.setdefault("data", {}) or {}
            for key, value in request.data.pop("stringData").items():
                data[key] = base64.b64encode(str(value).encode()).decode()
            request.data["data"] = data
        meta = request.data.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):  # Events are created this way
            meta["name"] = f"{meta['generateName']}{uuid.uuid4().hex[:5]}"
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
        meta["resourceVersion"] = str(next(self._versions))
        meta["generation"] = 1
        if request.namespace and "namespace" not in meta:
            meta["namespace"] = request.namespace

    def _stamp_update(self, request: Any) -> None:
        version = str(next(self._versions))
        key = (request.resource, request.namespace, request.name)
        current = self.objects[key] if key in self.objects else None  # noqa: SIM401 - no .get()
        generation = int((current or {}).get("metadata", {}).get("generation") or 1)
        if isinstance(request.data, dict):
            meta = request.data.get("metadata")
            if not isinstance(meta, dict):
                meta = request.data["metadata"] = {}
            # A patch naming a resourceVersion applies only to that version (optimistic locking).
            expected = meta.get("resourceVersion")
            have = (current or {}).get("metadata", {}).get("resourceVersion")
            if expected is not None and current is not None and expected != have:
                raise KubernetesObjectConflictError(reason="Conflict", message="stale")
            meta["resourceVersion"] = version
            changes_spec = "spec" in request.data and request.subresource is None
            if (
                changes_spec
                and current is not None
                and _changes(current.get("spec"), request.data["spec"])
            ):
                meta["generation"] = generation + 1
        elif isinstance(request.data, list):
            request.data.append(
                {"op": "add", "path": "/metadata/resourceVersion", "value": version}
            )

    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        # A real API server answers a failed JSON-patch "test" with 422 Unprocessable Entity.
        if isinstance(exc, jsonpatch.JsonPatchTestFailed):
            return aiohttp.web.json_response(
                {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 422,
                 "reason": "Invalid", "message": str(exc)},
                status=422,
            )  # fmt: skip
        result: aiohttp.web.StreamResponse = await super()._render_error(exc)
        return result


def _changes(spec: Any, patch: Any) -> bool:
    if not isinstance(spec, dict) or not isinstance(patch, dict):
        return bool(spec != patch)
    return any(
        key not in spec or _changes(spec[key], value) if value is not None else key in spec
        for key, value in patch.items()
    )


def declare_resources(api: Any) -> None:
    """Announce every resource in :data:`RESOURCES` (kopf discovers them before watching)."""
    for key, info in RESOURCES.items():
        api.resources[key] = kmock.ResourceInfo(
            kind=info["kind"],
            namespaced=info.get("namespaced", True),
            verbs={"list", "watch", "get", "create", "patch", "delete"},
            subresources={"status"} if info["status"] else set(),
        )


async def eventually(
    check: Callable[[], Awaitable[Any]], *, timeout: float = 10.0, interval: float = 0.1
) -> Any:
    """Wait until ``check()`` returns something truthy; return it, or fail with the last value."""
    deadline = asyncio.get_running_loop().time() + timeout
    last: Any = None
    while asyncio.get_running_loop().time() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s; last value: {last!r}")
