"""The operator's Kubernetes API client: lightkube, behind the few calls the operator makes.

kopf watches the custom resources and posts Events; everything the handlers read and write goes
through :class:`KubeClient`, a thin layer over lightkube's ``AsyncClient`` (typed resources,
server-side apply, kubeconfig and service-account credentials). The operator itself never lists:
kopf lists and watches, and handlers read single objects by name. Each call names
one of the :class:`Resource` constants below, so the resources and verbs the operator uses can be
read off the code (the chart's RBAC test does that).

Writes are server-side apply patches under the field manager :data:`FIELD_MANAGER`, forced: the
operator owns exactly the fields it sends and takes them back when someone else changed them
(drift), while fields other managers add (an HPA's replicas on something else, a mesh's sidecar,
an annotation from a policy engine) are theirs and survive. A field the operator sent before and
no longer sends is removed by the API server, which is how a retired signing key or an unset
option leaves an object.
"""

from __future__ import annotations

import asyncio
import base64
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2
import kopf
from lightkube import AsyncClient, KubeConfig
from lightkube.core.resource import NamespacedResource
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.batch_v1 import Job
from lightkube.resources.core_v1 import ConfigMap, Secret, Service
from lightkube.resources.policy_v1 import PodDisruptionBudget
from lightkube.types import CascadeType, PatchType

__all__ = [
    "CONFIGMAPS",
    "COURIER_GATEWAYS",
    "DEPLOYMENTS",
    "FIELD_MANAGER",
    "JOBS",
    "POD_DISRUPTION_BUDGETS",
    "REPLAY_REQUESTS",
    "SECRETS",
    "SERVICES",
    "USER_AGENT",
    "ApiError",
    "KubeClient",
    "Resource",
    "kubeconfig_from",
]

# The operator's field manager (managedFields) and user agent.
FIELD_MANAGER = "courier-gateway-operator"
USER_AGENT = "courier-gateway-operator"

GROUP = "gateway.courier.dev"


@dataclass(frozen=True, slots=True)
class Resource:
    """An API resource: group ('' for the core group), version, plural, kind, lightkube class."""

    group: str
    version: str
    plural: str
    kind: str
    model: type[NamespacedResource]

    @property
    def api_version(self) -> str:
        """``apiVersion`` as it appears in manifests."""
        return f"{self.group}/{self.version}" if self.group else self.version


def _custom(kind: str, plural: str) -> Resource:
    model = create_namespaced_resource(GROUP, "v1alpha1", kind, plural)
    return Resource(GROUP, "v1alpha1", plural, kind, model)


COURIER_GATEWAYS = _custom("CourierGateway", "couriergateways")
REPLAY_REQUESTS = _custom("ReplayRequest", "replayrequests")
DEPLOYMENTS = Resource("apps", "v1", "deployments", "Deployment", Deployment)
SERVICES = Resource("", "v1", "services", "Service", Service)
SECRETS = Resource("", "v1", "secrets", "Secret", Secret)
CONFIGMAPS = Resource("", "v1", "configmaps", "ConfigMap", ConfigMap)
POD_DISRUPTION_BUDGETS = Resource(
    "policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", PodDisruptionBudget
)
JOBS = Resource("batch", "v1", "jobs", "Job", Job)


class ApiError(Exception):
    """The API server refused a request; ``status`` is the HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


def _error(error: httpx2.HTTPStatusError) -> ApiError:
    response = error.response
    try:
        message = str(response.json().get("message", response.text))
    except ValueError:
        message = response.text
    return ApiError(response.status_code, message[:500])


def _data_file(folder: Path, name: str, data: str) -> str:
    path = folder / name
    path.write_bytes(base64.b64decode(data))
    return str(path)


def kubeconfig_from(info: kopf.ConnectionInfo) -> KubeConfig:
    """A lightkube configuration holding the credentials kopf logged in with.

    kopf's login (``courier_operator.login``) resolves kubeconfig exec plugins and service-account
    tokens; the operator's own client uses what kopf got, so both always hold the same
    credentials and are renewed together at each re-login.
    """
    cluster: dict[str, Any] = {"server": info.server}
    if info.insecure:
        cluster["insecure-skip-tls-verify"] = True
    if info.ca_path:
        cluster["certificate-authority"] = info.ca_path
    elif info.ca_data:
        cluster["certificate-authority-data"] = (
            info.ca_data.decode() if isinstance(info.ca_data, bytes) else info.ca_data
        )
    user: dict[str, Any] = {}
    if info.token:
        user["token"] = info.token
    if info.username and info.password:
        user["username"], user["password"] = info.username, info.password
    if info.certificate_path and info.private_key_path:
        user["client-certificate"] = info.certificate_path
        user["client-key"] = info.private_key_path
    elif info.certificate_data and info.private_key_data:
        # The ssl module loads client certificates from files only.
        folder = Path(tempfile.mkdtemp(prefix="courier-operator-"))
        user["client-certificate"] = _data_file(folder, "client.crt", str(info.certificate_data))
        user["client-key"] = _data_file(folder, "client.key", str(info.private_key_data))
    return KubeConfig.from_dict(
        {
            "clusters": [{"name": "cluster", "cluster": cluster}],
            "users": [{"name": "user", "user": user}],
            "contexts": [
                {
                    "name": "operator",
                    "context": {
                        "cluster": "cluster",
                        "user": "user",
                        "namespace": info.default_namespace or "default",
                    },
                }
            ],
            "current-context": "operator",
        }
    )


Relogin = Callable[[], Awaitable[kopf.ConnectionInfo | None]]


class KubeClient:
    """Namespaced reads, server-side applies and deletes of :class:`Resource`s.

    Credentials are renewed without waiting for anyone: before a request when they have expired
    (an exec plugin's token), and once after a 401 (a rotated service-account token), by calling
    ``relogin``; kopf's own logins hand new credentials over through :meth:`refresh` too.
    Requests already under way finish on the previous connection pool.
    """

    def __init__(
        self,
        info: kopf.ConnectionInfo,
        *,
        user_agent: str = USER_AGENT,
        field_manager: str = FIELD_MANAGER,
        timeout: float = 10.0,
        relogin: Relogin | None = None,
    ) -> None:
        self._user_agent = user_agent
        self._field_manager = field_manager
        self._timeout = timeout
        self._closing: set[asyncio.Task[None]] = set()
        self._relogin = relogin
        self._renewing = asyncio.Lock()
        self._expiration = info.expiration
        self._api = self._connect(info)

    def _connect(self, info: kopf.ConnectionInfo) -> AsyncClient:
        api = AsyncClient(
            kubeconfig_from(info),
            field_manager=self._field_manager,
            timeout=httpx2.Timeout(self._timeout),
            trust_env=False,
        )
        # lightkube has no user-agent option; the httpx2 client it wraps takes the header.
        api._client._client.headers["User-Agent"] = self._user_agent
        return api

    def refresh(self, info: kopf.ConnectionInfo) -> None:
        """Use new credentials from now on; the previous client is closed once the requests
        under way on it have had their timeout to finish."""
        retired, self._api = self._api, self._connect(info)
        self._expiration = info.expiration
        task = asyncio.get_running_loop().create_task(self._close_later(retired))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close_later(self, api: AsyncClient) -> None:
        try:
            await asyncio.sleep(self._timeout * 2)
        finally:
            await api.close()

    async def aclose(self) -> None:
        """Close every connection pool (retired ones at once)."""
        for task in list(self._closing):
            task.cancel()
        await asyncio.gather(*self._closing, return_exceptions=True)
        await self._api.close()

    def _expired(self) -> bool:
        if self._expiration is None:
            return False
        expiration = self._expiration
        if expiration.tzinfo is None:
            expiration = expiration.replace(tzinfo=UTC)
        return datetime.now(UTC) >= expiration

    async def _renew(self, stale: AsyncClient) -> None:
        async with self._renewing:
            if self._api is not stale or self._relogin is None:
                return  # renewed meanwhile, or nothing to renew with
            info = await self._relogin()
            if info is not None:
                self.refresh(info)

    async def _retrying(self, call: Callable[[], Awaitable[Any]]) -> Any:
        """Run a read, apply or delete (which may safely repeat) with fresh credentials.

        A pooled connection the API server closed while idle fails on reuse: one more try, on a
        fresh connection. A 401 means the credentials were revoked or rotated: one more try
        after logging in again.
        """
        if self._expired():
            await self._renew(self._api)
        api = self._api
        try:
            return await call()
        except httpx2.TransportError:
            return await call()
        except httpx2.HTTPStatusError as error:
            if error.response.status_code != 401 or self._relogin is None:
                raise
            await self._renew(api)
            return await call()

    async def get(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        """The object as a plain manifest, or None when it does not exist."""
        try:
            found = await self._retrying(
                lambda: self._api.get(resource.model, name, namespace=namespace)
            )
        except httpx2.HTTPStatusError as error:
            if error.response.status_code == 404:
                return None
            raise _error(error) from None
        return _as_dict(found)

    async def apply(
        self, resource: Resource, manifest: dict[str, Any], *, subresource: str | None = None
    ) -> dict[str, Any]:
        """Server-side apply ``manifest`` (or its ``status``), forced, as :data:`FIELD_MANAGER`.

        The API server creates the object when it does not exist. A ``metadata.resourceVersion``
        in the manifest makes the apply conditional (409 when the object changed meanwhile).
        """
        meta = manifest["metadata"]
        model = resource.model.Status if subresource == "status" else resource.model  # type: ignore[attr-defined]
        body = {"apiVersion": resource.api_version, "kind": resource.kind, **manifest}
        try:
            applied = await self._retrying(
                lambda: self._api.patch(
                    model,
                    meta["name"],
                    body,
                    namespace=meta["namespace"],
                    patch_type=PatchType.APPLY,
                    force=True,
                )
            )
        except httpx2.HTTPStatusError as error:
            raise _error(error) from None
        return _as_dict(applied)

    async def create(
        self, resource: Resource, namespace: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        """Create the object (as a user would); :class:`ApiError` 409 when it exists already."""
        meta = {**body.get("metadata", {}), "namespace": namespace}
        manifest = {
            "apiVersion": resource.api_version,
            "kind": resource.kind,
            **body,
            "metadata": meta,
        }
        obj: Any = resource.model.from_dict(manifest)  # type: ignore[attr-defined]
        try:
            created = await self._api.create(obj)
        except httpx2.HTTPStatusError as error:
            raise _error(error) from None
        return _as_dict(created)

    async def merge_patch(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        patch: dict[str, Any],
        *,
        subresource: str | None = None,
    ) -> dict[str, Any] | None:
        """A JSON merge patch (as ``kubectl patch`` makes); None when the object does not exist."""
        model = resource.model.Status if subresource == "status" else resource.model  # type: ignore[attr-defined]
        try:
            patched = await self._api.patch(
                model, name, patch, namespace=namespace, patch_type=PatchType.MERGE
            )
        except httpx2.HTTPStatusError as error:
            if error.response.status_code == 404:
                return None
            raise _error(error) from None
        return _as_dict(patched)

    async def delete(self, resource: Resource, namespace: str, name: str) -> bool:
        """Delete the object and what it owns; False when it was already gone."""
        try:
            await self._retrying(
                lambda: self._api.delete(
                    resource.model, name, namespace=namespace, cascade=CascadeType.BACKGROUND
                )
            )
        except httpx2.HTTPStatusError as error:
            if error.response.status_code == 404:
                return False
            raise _error(error) from None
        return True


def _as_dict(obj: Any) -> dict[str, Any]:
    if isinstance(obj, dict):
        return dict(obj)
    result: dict[str, Any] = obj.to_dict()
    return result
