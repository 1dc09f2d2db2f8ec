"""The kopf handlers, registered on a registry built per operator run.

Building the registry in a function (rather than decorating at import time) lets the settings
choose the timer interval, and lets tests run an operator with a short one.

Which handler does what:

- CourierGateway created, changed or found at start-up: :func:`reconcile` (objects and status);
- every ``OPERATOR_INTERVAL_SECONDS``: the same plus queue lag, scaling and key rotation;
- an owned Deployment changed (by hand, or its pods became ready): reconcile its gateway, which
  reverts drift and refreshes the ready counts;
- ReplayRequest created or found at start-up, its Job changed, or the interval passed while it
  runs: :func:`sync_replay`; deleted: its Job is deleted.

kopf puts its finalizer (:data:`FINALIZER`) on both kinds: on requests for the Job's deletion, on
gateways because their timer needs one. Only a running operator removes it (docs/operator.md).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, cast

import kopf

from courier_gateway.config import Settings
from courier_operator.context import OperatorContext
from courier_operator.gateway.reconcile import reconcile
from courier_operator.kube import COURIER_GATEWAYS, GROUP, REPLAY_REQUESTS, KubeClient
from courier_operator.objects import MANAGED_BY
from courier_operator.replay.job import REQUEST_LABEL
from courier_operator.replay.sync import delete_replay_job, sync_replay

__all__ = ["FINALIZER", "Login", "OperatorState", "build_registry", "default_login"]

FINALIZER = f"{GROUP}/operator"
# Objects per page when kopf lists a resource before watching it.
LIST_CHUNK_SIZE = 500
_OWNED = {"app.kubernetes.io/managed-by": MANAGED_BY}

Login = Callable[..., kopf.ConnectionInfo | Awaitable[kopf.ConnectionInfo | None] | None]


def _post_event(body: dict[str, Any], type_: str, reason: str, message: str) -> None:
    kopf.event(cast(kopf.Body, body), type=type_, reason=reason, message=message[:1024])


def _ns(namespace: str | None) -> str:
    # Both resources are namespaced (the CRDs say so); kopf types it optional for cluster ones.
    if namespace is None:
        raise kopf.PermanentError("a namespaced resource arrived without a namespace")
    return namespace


class OperatorState:
    """The shared context, made once the operator has logged in."""

    def __init__(self, default_image: str | None = None, login: Login | None = None) -> None:
        self._context: OperatorContext | None = None
        self._default_image = default_image
        self._login = login or default_login

    def start(self, info: kopf.ConnectionInfo) -> None:
        """Create the context from the credentials kopf logged in with; at every later login
        (expired or refused credentials), give the API client the new ones."""
        if self._context is None:
            self._context = OperatorContext(
                client=KubeClient(info, relogin=self.log_in),
                post_event=_post_event,
                default_image=self._default_image,
            )
        else:
            self._context.client.refresh(info)

    async def log_in(self) -> kopf.ConnectionInfo | None:
        """Credentials from the login function (also when the API client finds them expired)."""
        info = self._login()
        if inspect.isawaitable(info):
            info = await info
        return info

    @property
    def context(self) -> OperatorContext:
        """The context (only after login)."""
        if self._context is None:
            raise kopf.TemporaryError("not logged in yet", delay=1)
        return self._context

    async def stop(self) -> None:
        """Close connections."""
        if self._context is not None:
            await self._context.aclose()
            self._context = None


async def default_login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In a pod: the service account; elsewhere: the kubeconfig, exec plugins included."""
    from courier_operator.login import login

    return await login(**kwargs)


def build_registry(settings: Settings, state: OperatorState) -> kopf.OperatorRegistry:
    """A registry with every handler of the operator, using ``settings``' interval."""
    registry = kopf.OperatorRegistry()
    interval = settings.operator_interval_seconds
    # After a failure (API or Redis unreachable), try again after one interval, not kopf's 60 s.
    backoff = max(1.0, interval)
    gateways = (COURIER_GATEWAYS.group, COURIER_GATEWAYS.version, COURIER_GATEWAYS.plural)
    replays = (REPLAY_REQUESTS.group, REPLAY_REQUESTS.version, REPLAY_REQUESTS.plural)

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        # Progress and the last-handled spec go to annotations: kopf writes nothing into our
        # status, so the status holds only the fields the CRDs declare.
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=GROUP, key="last-handled-configuration"
        )
        settings.persistence.finalizer = FINALIZER
        # The CRDs are installed before the operator (with the chart): no need to watch for new
        # ones, nor the permission to.
        settings.scanning.disabled = True
        settings.posting.level = 20  # INFO and up become Events
        settings.watching.server_timeout = 300
        # Lists (before each watch) come in pages: cluster-wide, "every Deployment" is large.
        settings.watching.chunk_size = LIST_CHUNK_SIZE
        settings.execution.max_workers = 8

    @kopf.on.login(registry=registry)
    async def log_in(**_: Any) -> kopf.ConnectionInfo | None:
        info = await state.log_in()
        if info is not None:
            state.start(info)
        return info

    @kopf.on.cleanup(registry=registry)
    async def close(**_: Any) -> None:
        await state.stop()

    @kopf.on.create(*gateways, backoff=backoff, registry=registry)
    @kopf.on.update(*gateways, backoff=backoff, registry=registry)
    @kopf.on.resume(*gateways, backoff=backoff, registry=registry)
    async def gateway_changed(namespace: str | None, name: str, **_: Any) -> None:
        await reconcile(state.context, _ns(namespace), name, observe_queue=False)

    @kopf.timer(*gateways, interval=interval, initial_delay=0, backoff=backoff, registry=registry)
    async def gateway_maintenance(namespace: str | None, name: str, **_: Any) -> None:
        await reconcile(state.context, _ns(namespace), name, observe_queue=True)

    @kopf.on.event("apps", "v1", "deployments", labels=_OWNED, registry=registry)
    async def owned_deployment_changed(body: kopf.Body, namespace: str | None, **_: Any) -> None:
        for owner in body.metadata.get("ownerReferences") or []:
            if owner.get("kind") == COURIER_GATEWAYS.kind:
                await reconcile(state.context, _ns(namespace), owner["name"], observe_queue=False)

    @kopf.on.create(*replays, backoff=backoff, registry=registry)
    @kopf.on.resume(*replays, backoff=backoff, registry=registry)
    async def replay_requested(namespace: str | None, name: str, **_: Any) -> None:
        await sync_replay(state.context, _ns(namespace), name)

    @kopf.timer(
        *replays,
        interval=interval,
        backoff=backoff,
        when=lambda status, **_: status.get("phase") not in ("Succeeded", "Failed"),
        registry=registry,
    )
    async def replay_progress(namespace: str | None, name: str, **_: Any) -> None:
        await sync_replay(state.context, _ns(namespace), name)

    @kopf.on.event(
        "batch",
        "v1",
        "jobs",
        labels={REQUEST_LABEL: kopf.PRESENT},
        registry=registry,
    )
    async def replay_job_changed(body: kopf.Body, namespace: str | None, **_: Any) -> None:
        # The owner reference names the request (the label holds the Job's name).
        for owner in body.metadata.get("ownerReferences") or []:
            if owner.get("kind") == REPLAY_REQUESTS.kind:
                await sync_replay(state.context, _ns(namespace), owner["name"])

    @kopf.on.delete(*replays, backoff=backoff, registry=registry)
    async def replay_deleted(body: kopf.Body, **_: Any) -> None:
        await delete_replay_job(state.context, dict(body))

    return registry
