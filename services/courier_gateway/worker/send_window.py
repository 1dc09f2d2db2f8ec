"""A deadline for putting a downstream request on the wire: the last guard of the lease fence.

The fence (:mod:`~courier_gateway.worker.leases`) proves the job holds its event's key and
extends the lease; the request goes out a few event-loop turns later, after the connection is
taken from the pool and the request is encoded. A process paused in between (SIGSTOP, a frozen
VM, a long GC) would send it after another worker took over and finished the event. So every
write of the request's bytes checks the wall clock against the deadline the fence set, in the
same synchronous stretch as the socket write (anyio writes to the transport without yielding
first): a paused process raises :class:`SendWindowClosedError` instead of sending, and the
downstream never sees a partial request as a request.

httpx does not expose httpcore's network backend, so :class:`SendWindowTransport` is httpx's own
transport with its connection pool rebuilt on a wrapping backend; the request and response
handling stay httpx's.
"""

# The stream and backend methods implement httpcore's interface, timeout parameters included.
# ruff: noqa: ASYNC109

from __future__ import annotations

import ssl
import time
from collections.abc import Iterable
from contextvars import ContextVar, Token
from typing import Any

import httpcore
import httpx

__all__ = ["SendWindowClosedError", "SendWindowTransport", "reset_send_window", "send_before"]

#: Epoch seconds after which this task may no longer write a downstream request (None: no limit).
_DEADLINE: ContextVar[float | None] = ContextVar("downstream_send_deadline", default=None)


# httpx's own defaults for a client.
_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=5.0)


class SendWindowClosedError(Exception):
    """The deadline passed before the request was (fully) written: it was not sent."""


def send_before(deadline: float | None) -> Token[float | None]:
    """Limit this task's downstream writes to before ``deadline`` (epoch seconds)."""
    return _DEADLINE.set(deadline)


def reset_send_window(token: Token[float | None]) -> None:
    """Undo :func:`send_before`."""
    _DEADLINE.reset(token)


class _Stream(httpcore.AsyncNetworkStream):
    def __init__(self, stream: httpcore.AsyncNetworkStream) -> None:
        self._stream = stream

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._stream.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        deadline = _DEADLINE.get()
        if deadline is not None and time.time() >= deadline:
            raise SendWindowClosedError("the lease ran out before the request was written")
        await self._stream.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return _Stream(await self._stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _Backend(httpcore.AsyncNetworkBackend):
    def __init__(self) -> None:
        self._backend = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._backend.connect_tcp(
            host, port, timeout=timeout, local_address=local_address, socket_options=socket_options
        )
        return _Stream(stream)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._backend.connect_unix_socket(
            path, timeout=timeout, socket_options=socket_options
        )
        return _Stream(stream)

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


class SendWindowTransport(httpx.AsyncHTTPTransport):
    """httpx's transport whose connections refuse to write once the send deadline passed."""

    def __init__(self, *, limits: httpx.Limits = _LIMITS) -> None:
        super().__init__(limits=limits)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_Backend(),
        )
