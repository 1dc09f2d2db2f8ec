"""The HTTP/1.1 connection handling the intake needs beyond Sanic's defaults.

Sanic measures its request timeout from the last byte received, so a client that sends one
header line every few seconds (slowloris), or a body shorter than its ``content-length``, holds a
connection open for as long as it likes. Here every phase has a total deadline instead:

- the request head (request line and headers) must arrive within
  ``REQUEST_HEAD_TIMEOUT_SECONDS`` of its first byte;
- the body within ``REQUEST_BODY_TIMEOUT_SECONDS`` of the end of the head;

either way the client gets 408 and the connection is closed. Each process also holds at most
``MAX_CONNECTIONS`` connections; one more is answered 503 at once and closed, before any of its
bytes are read. An oversized head is 431 (Sanic says 413, which is about bodies), and a request
line whose URL cannot be parsed (a NUL byte, say) gets a 400 instead of a dropped connection.
"""

from __future__ import annotations

import os
from time import monotonic
from typing import Any

import orjson
from sanic.exceptions import BadRequest, PayloadTooLarge, RequestTimeout, SanicException
from sanic.http import Http, Stage
from sanic.server.protocols.http_protocol import HttpProtocol

__all__ = ["HeadTooLargeError", "IntakeProtocol"]


def _overloaded() -> bytes:
    """The whole 503 answer to a connection over the cap (written before any byte is read)."""
    trace_id = os.urandom(16).hex()
    body = orjson.dumps(
        {
            "acknowledged": False,
            "errorCode": "INTAKE_UNAVAILABLE",
            "message": "this ingress process holds as many connections as it may (MAX_CONNECTIONS)",
            "traceId": trace_id,
        }
    )
    head = (
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
        f"retry-after: 1\r\nx-request-id: {trace_id}\r\nconnection: close\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class HeadTooLargeError(SanicException):
    """The request line and headers exceed ``MAX_HEADER_BYTES`` (431)."""

    status_code = 431
    quiet = True


class IntakeHttp(Http):
    """Sanic's HTTP/1.1 state machine with a 431 for big heads and a request for bad URLs."""

    __slots__ = ()

    async def http1_request_header(self) -> None:
        """Read the request head; an oversized one is a 431, not Sanic's 413.

        The head is complete when this returns: the body's deadline starts here, and the next
        request's head deadline will start at its own first byte.
        """
        try:
            await super().http1_request_header()  # type: ignore[no-untyped-call]
        except PayloadTooLarge:
            raise HeadTooLargeError("the request headers are too large") from None
        if isinstance(self.protocol, IntakeProtocol):
            self.protocol.head_received()

    def create_empty_request(self) -> None:
        """The placeholder request an early error is answered with, even for an unparsable URL.

        Sanic builds it from the URL received; when that URL is what failed to parse (a NUL
        byte), building it fails again and the connection was dropped with no answer.
        """
        try:
            super().create_empty_request()
        except BadRequest:
            self.url = None
            super().create_empty_request()


class IntakeProtocol(HttpProtocol):
    """A connection with total deadlines for the request head and body, under a process cap."""

    HTTP_CLASS = IntakeHttp
    __slots__ = ("_body_started", "_head_started", "_rejected")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_started: float | None = None
        self._body_started: float | None = None
        self._rejected = False

    def connection_made(self, transport: Any) -> None:
        """Accept the connection, unless this process already holds as many as it may."""
        if len(self.connections) >= self.app.config.INTAKE_MAX_CONNECTIONS:
            self._rejected = True
            transport.write(_overloaded())
            # Half-close and read (discarding) until the client goes: closing outright with
            # its request still unread would make the kernel reset the connection, and the
            # client would see a reset instead of the 503. A second at most.
            if transport.can_write_eof():
                transport.write_eof()
            self.loop.call_later(1.0, transport.close)
            return
        super().connection_made(transport)  # type: ignore[no-untyped-call]

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the connection (a refused one never got Sanic's connection state)."""
        if not self._rejected:
            super().connection_lost(exc)  # type: ignore[no-untyped-call]

    def data_received(self, data: bytes) -> None:
        """Note when a request's first byte arrives: its head deadline counts from there."""
        if self._rejected:
            return
        if self._head_started is None:
            http = self.http
            if http is None or http.stage is Stage.IDLE:
                self._head_started = monotonic()
        super().data_received(data)

    def head_received(self) -> None:
        """The request head is complete: start the body's deadline."""
        self._head_started = None
        self._body_started = monotonic()

    def check_timeouts(self) -> None:
        """Enforce the deadlines; runs itself again until the connection ends."""
        if not self._task or self.http is None:
            return
        config = self.app.config
        now = monotonic()
        http = self.http
        stage = http.stage
        expired: Exception | None = None
        if stage is Stage.IDLE and self._head_started is None:
            if now - self._time > self.keep_alive_timeout:
                self._task.cancel()  # an idle keep-alive connection: close quietly
                return
        elif stage in (Stage.IDLE, Stage.REQUEST):
            # A request has begun (its first bytes may not even be parsed yet): head deadline.
            started = self._head_started if self._head_started is not None else self._time
            if now - started > config.INTAKE_HEAD_TIMEOUT:
                expired = RequestTimeout("the request headers were not received in time")
        elif stage is Stage.HANDLER and http.request_body and self._body_started is not None:
            if now - self._body_started > config.INTAKE_BODY_TIMEOUT:
                expired = RequestTimeout("the request body was not received in time")
        elif now - self._time > self.response_timeout:
            expired = RequestTimeout("the request was not completed in time")
        if expired is not None:
            http.exception = expired
            # Close after the 408 instead of draining a body that is not coming.
            http.request_body = None
            http.keep_alive = False
            self._task.cancel()
            return
        self._callback_check_timeouts = self.loop.call_later(
            config.INTAKE_TIMEOUT_CHECK, self.check_timeouts
        )
