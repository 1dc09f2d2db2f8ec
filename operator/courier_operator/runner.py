"""Running the operator: JSON logs, peering, the health endpoint, and kopf's main loop."""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading

import kopf

from courier_gateway.config import ConfigError, Settings
from courier_gateway.observability.logs import configure_logging
from courier_operator.handlers import Login, OperatorState, build_registry

__all__ = ["CLEANUP_AGENT", "STANDALONE", "cleanup", "quiet_http_logs", "run_operator"]

log = logging.getLogger(__name__)

# What kopf accepts as a stop or ready signal (a thread's event when it runs in a thread).
Flag = asyncio.Event | threading.Event

# The cleanup command's user agent (it runs under its own service account and RBAC).
CLEANUP_AGENT = "courier-gateway-cleanup"

# OPERATOR_PEERING=standalone runs without peering (one replica, or a local run).
STANDALONE = "standalone"


def quiet_http_logs() -> None:
    """The HTTP clients log every request at INFO: the operator's own lines say what matters."""
    for name in ("httpx", "httpx2", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


async def run_operator(
    settings: Settings,
    *,
    login: Login | None = None,
    stop_flag: Flag | None = None,
    ready_flag: Flag | None = None,
    configure_logs: bool = True,
) -> None:
    """Run until ``stop_flag`` is set or a signal arrives."""
    if configure_logs:
        configure_logging(settings.log_level)
        quiet_http_logs()
    state = OperatorState(default_image=settings.operator_image, login=login)
    registry = build_registry(settings, state)
    namespaces = [item for item in settings.operator_namespaces.split(",") if item]
    standalone = settings.operator_peering == STANDALONE
    port = settings.operator_health_port
    # Peers with equal priorities all pause; a random one makes the newest replica of a rollout
    # (or any survivor) take over from the others.
    priority = secrets.randbelow(2**31)
    log.info(
        "operator starting",
        extra={
            "namespaces": namespaces or "all",
            "peering": None if standalone else settings.operator_peering,
        },
    )
    try:
        await kopf.operator(
            registry=registry,
            standalone=standalone,
            peering_name=None if standalone else settings.operator_peering,
            priority=priority,
            namespaces=namespaces,
            clusterwide=not namespaces,
            liveness_endpoint=f"http://0.0.0.0:{port}/healthz" if port else None,
            stop_flag=stop_flag,
            ready_flag=ready_flag,
        )
    finally:
        await state.stop()


async def cleanup(
    settings: Settings, *, namespace: str, gateways: list[str], wait_seconds: float
) -> int:
    """``courier-gateway cleanup``: delete the named gateways; exit code 0 when they are gone,
    1 otherwise."""
    from courier_operator.cleanup import delete_gateways
    from courier_operator.kube import KubeClient
    from courier_operator.login import login

    configure_logging(settings.log_level)
    quiet_http_logs()
    try:
        info = await login()
    except kopf.LoginError as error:
        raise ConfigError(f"cleanup: {error}") from None
    client = KubeClient(info, user_agent=CLEANUP_AGENT, field_manager=CLEANUP_AGENT)
    try:
        left = await delete_gateways(client, namespace, gateways, wait_seconds=wait_seconds)
    finally:
        await client.aclose()
    return 1 if left else 0
