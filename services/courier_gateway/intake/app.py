"""Building and serving the Sanic application.

Each ingress process builds its own app from the validated settings (with several processes,
each server started by :mod:`~courier_gateway.intake.supervisor` calls :func:`create_app`).
Listeners open the Redis and store clients, start the background tasks and, on stop, turn
``/ready`` to 503 before the listener closes, so a load balancer stops routing here while
in-flight requests finish. A supervised server also watches its supervisor and stops (without
the shutdown delay: nobody routes to an orphan) as soon as it is gone.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
from types import SimpleNamespace
from typing import Any

from pymongo import AsyncMongoClient
from sanic import Request, Sanic
from sanic.config import Config
from sanic.exceptions import (
    BadRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RequestCancelled,
    RequestTimeout,
    SanicException,
)
from sanic.handlers import ErrorHandler
from sanic.response import HTTPResponse, empty

from courier_gateway.config import ConfigError, KeyRing, Settings, load_sources
from courier_gateway.config.sources import load_adapters
from courier_gateway.intake.protocol import HeadTooLargeError, IntakeProtocol
from courier_gateway.intake.responses import error_response
from courier_gateway.intake.routes import routes
from courier_gateway.intake.state import IntakeState
from courier_gateway.intake.supervisor import orphaned
from courier_gateway.observability import (
    configure_logging,
    configure_tracing,
    request_id,
    shutdown_tracing,
)
from courier_gateway.observability.metrics import INTAKE_REQUESTS, declare_build, prime_intake
from courier_gateway.process import settle_garbage_collector
from courier_gateway.queue import IntakeWriter
from courier_gateway.queue.layout import QueueLayout
from courier_gateway.queue.topology import connect

__all__ = ["create_app", "serve"]

log = logging.getLogger(__name__)
_names = itertools.count()

#: The application type: Sanic with its default config and context types.
App = Sanic[Config, SimpleNamespace]


class _JsonErrors(ErrorHandler):
    """Errors Sanic raises itself (404, 405, 408, 413, 431, malformed HTTP) in the JSON shape.

    A client that goes away mid-request is its own outcome, ``client_closed``, logged at DEBUG:
    any anonymous client can do it at will, so it must neither fill the logs nor fire alerts.
    """

    def default(self, request: Request, exception: Exception) -> HTTPResponse:
        headers = request.headers
        trace_id = request_id(headers.getall("x-request-id", [])) or os.urandom(16).hex()
        if isinstance(exception, RequestCancelled):
            INTAKE_REQUESTS.labels(_source_label(request), "client_closed").inc()
            log.debug("client closed the connection", extra={"traceId": trace_id})
            return empty(status=499)  # nobody is there to read it
        status, code, message = _describe(request, exception)
        INTAKE_REQUESTS.labels(_source_label(request), code.lower()).inc()
        if status >= 500:
            log.error(
                "unexpected error",
                exc_info=exception,
                extra={"traceId": trace_id, "path": request.path},
            )
        else:
            log.info(
                "intake request",
                extra={"traceId": trace_id, "status": status, "errorCode": code},
            )
        response = error_response(status, code, message, trace_id)
        if isinstance(exception, MethodNotAllowed) and exception.headers.get("Allow"):
            response.headers["allow"] = exception.headers["Allow"]
        return response


def _source_label(request: Request) -> str:
    """The configured source a refused request was addressed to, else ``unknown``."""
    prefix = "/v1/events/"
    state = getattr(request.app.ctx, "state", None)
    if state is not None and request.path.startswith(prefix):
        name = request.path[len(prefix) :]
        if state.keyring.get(name) is not None:
            return name
    return "unknown"


_SANIC_ERRORS: tuple[tuple[type[Exception], int, str, str], ...] = (
    (NotFound, 404, "NOT_FOUND", "no such endpoint; events go to POST /v1/events/{source}"),
    (MethodNotAllowed, 405, "METHOD_NOT_ALLOWED", "this endpoint does not accept that method"),
    (BadRequest, 400, "INVALID_REQUEST", "the HTTP request is malformed"),
)


def _describe(request: Request, exception: Exception) -> tuple[int, str, str]:
    if isinstance(exception, PayloadTooLarge):
        limit = request.app.config.REQUEST_MAX_SIZE
        return 413, "PAYLOAD_TOO_LARGE", f"the body exceeds {limit} bytes (MAX_BODY_BYTES)"
    if isinstance(exception, HeadTooLargeError):
        limit = request.app.config.REQUEST_MAX_HEADER_SIZE
        return 431, "HEADERS_TOO_LARGE", f"the request headers exceed {limit} bytes"
    if isinstance(exception, RequestTimeout):
        # Our own deadlines' messages say which part was late (protocol.py); never input.
        return 408, "REQUEST_TIMEOUT", str(exception)
    for kind, status, code, message in _SANIC_ERRORS:
        if isinstance(exception, kind):
            return status, code, message
    if isinstance(exception, SanicException) and 400 <= exception.status_code < 500:
        return exception.status_code, "INVALID_REQUEST", "the request was refused"
    return 500, "INTERNAL_ERROR", "an unexpected error occurred; it has been logged"


def _check_interval(settings: Settings) -> float:
    """How often a connection's deadlines are checked: a quarter of the shortest, within reason."""
    shortest = min(settings.request_head_timeout_seconds, settings.request_body_timeout_seconds)
    return min(1.0, max(0.05, shortest / 4))


def create_app(settings: Settings, *, name: str | None = None) -> App:
    """Build the ingress application for one process.

    Sources are loaded here (each process reads them itself); a bad sources file raises
    :class:`~courier_gateway.config.ConfigError` before anything listens.
    """
    configure_logging(settings.log_level)
    configure_tracing("courier-gateway-ingress")
    declare_build("ingress")
    adapters = load_adapters(settings)
    keyring = KeyRing(load_sources(settings, adapters), adapters)
    prime_intake(keyring.names())
    app = Sanic(
        name or f"courier-gateway-{next(_names)}",
        error_handler=_JsonErrors(),
        configure_logging=False,
    )
    app.config.update(
        REQUEST_MAX_SIZE=settings.max_body_bytes,
        REQUEST_MAX_HEADER_SIZE=settings.max_header_bytes,
        # The intake's own deadlines and connection cap (protocol.py).
        INTAKE_HEAD_TIMEOUT=settings.request_head_timeout_seconds,
        INTAKE_BODY_TIMEOUT=settings.request_body_timeout_seconds,
        INTAKE_TIMEOUT_CHECK=_check_interval(settings),
        INTAKE_MAX_CONNECTIONS=settings.max_connections,
        GRACEFUL_SHUTDOWN_TIMEOUT=settings.shutdown_grace_seconds,
        # Short keep-alive: idle connections otherwise hold a draining process open.
        KEEP_ALIVE_TIMEOUT=5,
        ACCESS_LOG=False,
        MOTD=False,
        NOISY_EXCEPTIONS=False,
        FALLBACK_ERROR_FORMAT="json",
    )
    app.blueprint(routes)

    async def open_clients(app: App) -> None:
        timeout = settings.enqueue_timeout_ms / 1000
        redis = connect(settings, timeout=timeout, health_check_interval=30)
        layout = QueueLayout.from_settings(settings)
        # The partitions and their consumer groups are prepared by the first successful probe
        # (state.probe below, or later once Redis answers).
        writer = IntakeWriter(
            redis, layout, timeout_seconds=timeout, min_replicas=settings.enqueue_min_replicas
        )
        writer.start()
        store: AsyncMongoClient[dict[str, Any]] | None = (
            AsyncMongoClient(settings.mongo_uri, serverSelectionTimeoutMS=1000, connect=False)
            if settings.mongo_uri
            else None
        )
        state = IntakeState(
            settings=settings,
            keyring=keyring,
            redis=redis,
            writer=writer,
            layout=layout,
            store=store,
        )
        await state.probe()
        state.start_background()
        app.ctx.state = state
        settle_garbage_collector()
        log.info(
            "ingress started",
            extra={
                "pid": os.getpid(),
                "sources": keyring.names(),
                "redis": state.health.redis,
                "store": state.health.store,
            },
        )

    async def start_draining(app: App) -> None:
        state: IntakeState = app.ctx.state
        state.draining = True
        delay = 0.0 if orphaned() else settings.shutdown_delay_seconds
        log.info("draining", extra={"delaySeconds": delay})
        if delay:
            await asyncio.sleep(delay)

    async def close_clients(app: App) -> None:
        state: IntakeState = app.ctx.state
        await state.stop_background()
        await state.writer.close()
        await state.redis.aclose()
        if state.store is not None:
            await state.store.close()
        shutdown_tracing()
        log.info("ingress stopped")

    app.before_server_start(open_clients)
    app.before_server_stop(start_draining)
    app.after_server_stop(close_clients)
    return app


def check_port_available(host: str, port: int) -> None:
    """Raise :class:`ConfigError` naming ``API_PORT`` when the address cannot be bound.

    Sanic would otherwise fail deep in its start-up with a long traceback.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as error:
        raise ConfigError(f"API_HOST: {host!r} cannot be resolved ({error.strerror})") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as error:
            raise ConfigError(
                f"API_PORT: port {port} on {host} is not available ({error.strerror})"
            ) from None


def serve(settings: Settings, *, listen_fd: int | None = None) -> int:
    """Run one ingress server process in the foreground until SIGTERM/SIGINT; its exit code.

    ``listen_fd``: the listening socket inherited from the supervisor (several processes);
    without it the process binds ``API_HOST:API_PORT`` itself.
    """
    settings.require_redis()
    if listen_fd is None:
        check_port_available(settings.api_host, settings.api_port)
    app = create_app(settings, name="courier-gateway")
    sock = None
    if listen_fd is not None:
        sock = socket.socket(fileno=listen_fd)
        app.after_server_start(_watch_supervisor)
        app.before_server_stop(_stop_watching_supervisor)
    app.prepare(
        host=settings.api_host,
        port=settings.api_port,
        sock=sock,
        single_process=True,
        access_log=False,
        motd=False,
        protocol=IntakeProtocol,
    )
    Sanic.serve_single(primary=app)
    return 0


async def _watch_supervisor(app: App) -> None:
    async def watch() -> None:
        # The kernel's parent-death signal covers Linux; this covers the rest, and a supervisor
        # that died before that signal was armed.
        while not orphaned():  # noqa: ASYNC110 - polling the parent pid: nothing to wait on
            await asyncio.sleep(1)
        log.warning("the ingress supervisor is gone; stopping")
        app.stop()

    app.ctx.supervisor_watch = asyncio.get_running_loop().create_task(watch())


async def _stop_watching_supervisor(app: App) -> None:
    app.ctx.supervisor_watch.cancel()
