"""A Kubernetes API for the operator tests: kmock's emulator, made a little more like the real one.

kmock keeps objects in memory and serves list, watch, get, create, merge/JSON patch and delete
over real HTTP. It sets no ``uid``, ``resourceVersion``, ``generation`` or
``creationTimestamp``, answers a failed JSON-patch ``test`` with 500, and treats a server-side
apply patch as a plain merge; kopf and the operator need all of these to behave as they do
against a real cluster, so :class:`KubernetesAPI` adds them: object identity and versions,
``managedFields`` for every write, and server-side apply by field manager
(:mod:`tests.support.apply`: keyed list merges, removal of fields a manager stopped applying,
conflicts and ``force``, creation by apply, ``resourceVersion`` preconditions).

Not emulated (see docs/operator.md): controllers (Deployments get no pods, Jobs never run; tests
write their status as the controllers would), admission and CRD schema validation (tests check
objects against the CRD schemas instead), garbage collection, label selectors, ownership of
fields changed by JSON patches (only kopf's finalizer bookkeeping uses them).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp.web
import attrs
import jsonpatch
import kmock
import yaml
from kmock._internal.k8s import (
    KubernetesError,
    KubernetesObjectConflictError,
    KubernetesObjectNotFoundError,
)

from tests.support.apply import ApplyConflictError, apply, manager_of, record_update

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
            applied = False
            if request.action == _UPDATE and request.name is not None and _is_apply(request):
                request = await self._server_side_apply(request)
                applied = True
            if request.action == _CREATE and isinstance(request.data, dict):
                if not applied:
                    self._record(request, None)
                self._stamp_new(request)
            elif request.action == _UPDATE and request.name is not None:
                if not applied and isinstance(request.data, dict):
                    self._record(request, self._current(request))
                self._stamp_update(request)
        return await super()._handle(request)

    async def _serve_list(self, request: Any) -> Any:
        """Lists in pages when asked (``limit``, ``continue``), as the API server serves them."""
        listed = await super()._serve_list(request)
        limit = int(request.params.get("limit") or 0)
        if not limit:
            return listed
        items = sorted(
            listed["items"],
            key=lambda item: (item["metadata"].get("namespace") or "", item["metadata"]["name"]),
        )
        start = int(request.params.get("continue") or 0)
        rest = start + limit < len(items)
        listed["items"] = items[start : start + limit]
        listed["metadata"] = {**listed["metadata"], "continue": str(start + limit) if rest else ""}
        return listed

    def _current(self, request: Any) -> dict[str, Any] | None:
        key = (request.resource, request.namespace, request.name)
        if key not in self.objects or self.objects[key].deleted:
            return None
        current: dict[str, Any] = json.loads(json.dumps(self.objects[key].raw, default=dict))
        return current

    def _record(self, request: Any, current: dict[str, Any] | None) -> None:
        """Give the fields a create or merge patch changes to the request's field manager."""
        new = request.data if current is None else _merge_patch(current, request.data)
        manager = manager_of(request.params, request.headers)
        fields = record_update(current, new, manager=manager, subresource=request.subresource)
        meta = request.data.get("metadata")
        if not isinstance(meta, dict):
            meta = request.data["metadata"] = {}
        meta["managedFields"] = fields

    async def _server_side_apply(self, request: Any) -> Any:
        """The merge patch request that gives the apply's result (kmock stores it, versions it
        and tells the watchers; its request log keeps the apply as it came). An apply that
        creates the object stores it here first, then patches nothing."""
        config = request.data if isinstance(request.data, dict) else yaml.safe_load(request.text)
        if not isinstance(config, dict) or not isinstance(config.get("metadata"), dict):
            raise KubernetesError(status=400, reason="BadRequest", message="not an object")
        current = self._current(request)
        expected = config["metadata"].get("resourceVersion")
        if expected is not None and (
            current is None or current["metadata"].get("resourceVersion") != expected
        ):
            raise KubernetesObjectConflictError(reason="Conflict", message="stale resourceVersion")
        if current is None and request.subresource:
            raise KubernetesObjectNotFoundError()
        try:
            new = apply(
                current,
                config,
                manager=manager_of(request.params, request.headers),
                force=request.params.get("force") == "true",
                subresource=request.subresource,
            )
        except ApplyConflictError as error:
            raise KubernetesError(status=409, reason="Conflict", message=str(error)) from None
        new["metadata"].pop("resourceVersion", None)
        if current is None:
            new["metadata"].setdefault("namespace", request.namespace)
            self._stamp_new(attrs.evolve(request, data=new))
            async with self._lock:
                self.objects[request.resource, request.namespace, request.name] = new
                await self._buses[request.resource].put({"type": "ADDED", "object": new})
            _replace_data(request, {})
            return request
        _replace_data(request, _merge_diff(current, new))
        return request

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


def _replace_data(request: Any, data: dict[str, Any]) -> None:
    # kmock's requests are frozen and matched to reactions by identity: replace the body in place.
    object.__setattr__(request, "data", data)


def _is_apply(request: Any) -> bool:
    headers = {name.lower(): value for name, value in request.headers.items()}
    return str(headers.get("content-type", "")).startswith("application/apply-patch")


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: what a JSON merge patch makes of ``target``."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


def _merge_diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The JSON merge patch that turns ``old`` into ``new``."""
    patch: dict[str, Any] = dict.fromkeys(old.keys() - new.keys())
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            nested = _merge_diff(before, value)
            if nested:
                patch[key] = nested
        elif key not in old or before != value:
            patch[key] = value
    return patch


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
