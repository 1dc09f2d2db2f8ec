"""A real HTTP downstream for the worker tests, scriptable per idempotency key.

It records every request (headers and body) and answers with a programmable behaviour: a fixed
status, a sequence of statuses per key (fail twice then succeed), or a delay.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any

from tests.support.servers import QuietHandler, serve_http, stop_http

__all__ = ["SIGNING_SECRET", "Downstream", "Received"]

SIGNING_SECRET = "downstream-secret-1"


@dataclass
class Received:
    at: float  # time.monotonic() on arrival
    headers: dict[str, str]
    body: dict[str, Any]
    wall: float = field(default_factory=time.time)  # the same moment, epoch seconds


@dataclass
class Downstream:
    """Start with :meth:`start`; set ``respond`` to choose each answer ``(status, headers)``."""

    respond: Callable[[Received, int], tuple[int, dict[str, str]]] = lambda request, count: (
        200,
        {},
    )
    delay: float = 0.0
    requests: list[Received] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/updates"

    def start(self) -> Downstream:
        owner = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("content-length", "0"))
                body = json.loads(self.rfile.read(length))
                received = Received(
                    time.monotonic(), {k.lower(): v for k, v in self.headers.items()}, body
                )
                with owner.lock:
                    owner.requests.append(received)
                    key = received.headers.get("idempotency-key", "")
                    owner.counts[key] += 1
                    count = owner.counts[key]
                if owner.delay:
                    time.sleep(owner.delay)
                status, headers = owner.respond(received, count)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", "0")
                self.end_headers()

        self.server = serve_http(Handler)
        return self

    def env(self) -> dict[str, str]:
        """The worker settings that deliver to this downstream."""
        return {"DOWNSTREAM_URL": self.url, "DOWNSTREAM_SIGNING_SECRET": SIGNING_SECRET}

    def stop(self) -> None:
        stop_http(self.server)

    def keys(self) -> dict[str, int]:
        with self.lock:
            return dict(self.counts)
