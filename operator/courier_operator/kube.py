"""A small Kubernetes API client for the objects the operator owns.

kopf watches the custom resources and posts Events; everything the handlers read and write goes
through :class:`KubeClient`. Each call names one of the :class:`Resource` constants below, so the
resources and verbs the operator uses can be read off the code (the chart's RBAC test does that).

Writes are JSON merge patches (RFC 7386): they are understood by every API server and by the
test emulator, lists are replaced whole (so a container list or an env list comes out exactly as
desired) and a ``null`` removes a key (how a retired signing key leaves its Secret).
"""

from __future__ import annotations

import base64
import ssl
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import kopf

__all__ = [
    "CONFIGMAPS",
    "COURIER_GATEWAYS",
    "DEPLOYMENTS",
    "JOBS",
    "POD_DISRUPTION_BUDGETS",
    "REPLAY_REQUESTS",
    "SECRETS",
    "SERVICES",
    "ApiError",
    "KubeClient",
    "Resource",
]

_SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


@dataclass(frozen=True, slots=True)
class Resource:
    """An API resource: group ('' for the core group), version and plural name."""

    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        """``apiVersion`` as it appears in manifests."""
        return f"{self.group}/{self.version}" if self.group else self.version

    def path_all(self) -> str:
        """The URL path of the collection across every namespace."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        return f"{base}/{self.plural}"

    def path(self, namespace: str, name: str | None = None, subresource: str | None = None) -> str:
        """The URL path of the collection, of one object, or of its subresource."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        path = f"{base}/namespaces/{namespace}/{self.plural}"
        if name is not None:
            path += f"/{name}"
        if subresource is not None:
            path += f"/{subresource}"
        return path


GROUP = "gateway.courier.dev"
COURIER_GATEWAYS = Resource(GROUP, "v1alpha1", "couriergateways", "CourierGateway")
REPLAY_REQUESTS = Resource(GROUP, "v1alpha1", "replayrequests", "ReplayRequest")
DEPLOYMENTS = Resource("apps", "v1", "deployments", "Deployment")
SERVICES = Resource("", "v1", "services", "Service")
SECRETS = Resource("", "v1", "secrets", "Secret")
CONFIGMAPS = Resource("", "v1", "configmaps", "ConfigMap")
POD_DISRUPTION_BUDGETS = Resource("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget")
JOBS = Resource("batch", "v1", "jobs", "Job")


class ApiError(Exception):
    """The API server refused a request; ``status`` is the HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


def _ssl_context(info: kopf.ConnectionInfo) -> ssl.SSLContext | bool:
    if info.insecure:
        return False
    context = ssl.create_default_context(cafile=info.ca_path)
    if info.ca_data:
        context.load_verify_locations(cadata=base64.b64decode(info.ca_data).decode())
    certificate, key = info.certificate_path, info.private_key_path
    if info.certificate_data and info.private_key_data:
        # ssl can only load a client certificate from files.
        folder = Path(tempfile.mkdtemp(prefix="courier-operator-"))
        certificate, key = str(folder / "client.crt"), str(folder / "client.key")
        Path(certificate).write_bytes(base64.b64decode(info.certificate_data))
        Path(key).write_bytes(base64.b64decode(info.private_key_data))
    if certificate:
        context.load_cert_chain(certificate, key)
    return context


class KubeClient:
    """Namespaced CRUD on :class:`Resource` objects over one HTTP connection pool."""

    def __init__(
        self,
        info: kopf.ConnectionInfo,
        *,
        timeout: float = 10.0,
        user_agent: str = "courier-gateway-operator",
    ) -> None:
        self._info = info
        self._token_read_at = 0.0
        self._token = info.token
        auth = {}
        if info.username and info.password:
            auth["auth"] = httpx.BasicAuth(info.username, info.password)
        self._http = httpx.AsyncClient(
            base_url=info.server,
            verify=_ssl_context(info),
            timeout=timeout,
            headers={"user-agent": user_agent},
            **auth,  # type: ignore[arg-type]
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        # In a pod, the service account token is short-lived and renewed by the kubelet in place.
        now = time.monotonic()
        if now - self._token_read_at > 60 and _SERVICE_ACCOUNT_TOKEN.exists():
            self._token = _SERVICE_ACCOUNT_TOKEN.read_text().strip()
            self._token_read_at = now
        headers = {"accept": "application/json"}
        if self._token:
            headers["authorization"] = f"{self._info.scheme or 'Bearer'} {self._token}"
        if content_type:
            headers["content-type"] = content_type
        return headers

    async def _send(
        self, method: str, path: str, *, body: Any = None, content_type: str | None = None
    ) -> dict[str, Any] | None:
        try:
            response = await self._http.request(
                method, path, json=body, headers=self._headers(content_type)
            )
        except httpx.TransportError:
            # A pooled connection the server closed while idle fails on reuse; one retry on a
            # fresh connection. Creates that did land come back as 409, which callers handle.
            response = await self._http.request(
                method, path, json=body, headers=self._headers(content_type)
            )
        if response.status_code == 404:
            return None
        if response.status_code >= 400:
            try:
                message = str(response.json().get("message", response.text))
            except ValueError:
                message = response.text
            raise ApiError(response.status_code, message[:500])
        result: dict[str, Any] = response.json()
        return result

    async def get(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        return await self._send("GET", resource.path(namespace, name))

    async def create(
        self, resource: Resource, namespace: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        """Create the object; :class:`ApiError` 409 when it exists already."""
        created = await self._send("POST", resource.path(namespace), body=body)
        if created is None:
            raise ApiError(404, f"namespace {namespace} or resource {resource.plural} not found")
        return created

    async def patch(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        patch: dict[str, Any],
        *,
        subresource: str | None = None,
    ) -> dict[str, Any] | None:
        """Merge-patch the object (or its ``status``); None when it does not exist."""
        return await self._send(
            "PATCH",
            resource.path(namespace, name, subresource),
            body=patch,
            content_type="application/merge-patch+json",
        )

    async def list_names(self, resource: Resource, namespaces: list[str]) -> list[tuple[str, str]]:
        """(namespace, name) of every object in ``namespaces``, or in all when empty."""
        paths = [resource.path(ns) for ns in namespaces] or [resource.path_all()]
        found: list[tuple[str, str]] = []
        for path in paths:
            listed = await self._send("GET", path) or {}
            found += [
                (item["metadata"]["namespace"], item["metadata"]["name"])
                for item in listed.get("items") or []
            ]
        return found

    async def delete(self, resource: Resource, namespace: str, name: str) -> bool:
        """Delete the object and what it owns; False when it was already gone."""
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        return await self._send("DELETE", resource.path(namespace, name), body=body) is not None
