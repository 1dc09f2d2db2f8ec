"""Real servers for the tests: private Redis, the nx-27017 store, and gateway processes.

Every process is started through the gateway's own child-process helper, so it dies with the
test run even when pytest itself is killed, and every fixture stops what it started in
``finally``. ``MONGO_TEST_URI`` points the store fixture at a real MongoDB instead of nx-27017.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import redis

from courier_gateway.devstack.processes import (
    Child,
    free_port,
    redis_command,
    start_child,
    store_command,
    tcp_open,
    wait_until,
)

__all__ = [
    "GatewayProcess",
    "QuietHandler",
    "RedisServer",
    "StoreServer",
    "serve_http",
    "start_gateway",
    "stop_http",
]


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that keeps the test output clean (no access log lines)."""

    def log_message(self, *args: object) -> None:
        return


def serve_http(handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    """A threaded HTTP server on a free loopback port, serving in the background."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def stop_http(server: ThreadingHTTPServer | None) -> None:
    """Stop a server from :func:`serve_http` (nothing when it never started)."""
    if server is not None:
        server.shutdown()
        server.server_close()


@dataclass
class RedisServer:
    """A private ``redis-server`` that a test can stop and start again on the same port."""

    directory: Path
    port: int = field(default_factory=free_port)
    child: Child | None = None
    #: AOF persistence: None (off, the default), or its fsync policy ("always", "everysec").
    append_only: str | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed (make test installs it)"
        self.child = start_child(
            "redis",
            redis_command(
                binary,
                self.port,
                self.directory,
                append_only=self.append_only is not None,
                fsync=self.append_only or "everysec",
            ),
            log_file=self.directory / "redis.log",
        )
        assert wait_until(lambda: tcp_open(self.port), timeout=10, child=self.child)

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop(timeout=10)
            self.child = None

    def kill(self) -> None:
        """SIGKILL, as a crash would: nothing is flushed beyond what the AOF already has."""
        if self.child is not None:
            self.child.process.kill()
            self.child.process.wait(timeout=10)
            self.child = None


@dataclass
class StoreServer:
    """nx-27017 on a free port (or the MongoDB named by ``MONGO_TEST_URI``)."""

    directory: Path
    port: int = field(default_factory=free_port)
    child: Child | None = None
    external: str | None = field(default_factory=lambda: os.environ.get("MONGO_TEST_URI"))

    @property
    def uri(self) -> str:
        return self.external or f"mongodb://127.0.0.1:{self.port}/"

    def start(self) -> None:
        if self.external:
            return
        # Each test uses its own database: one SQLite file each (see store_command).
        (self.directory / "data").mkdir(exist_ok=True)
        self.child = start_child(
            "store",
            store_command(
                self.port, self.directory / "data", pid_file=self.directory / "store.pid"
            ),
            log_file=self.directory / "store.log",
        )
        assert wait_until(lambda: tcp_open(self.port), timeout=30, child=self.child)

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop(timeout=10)
            self.child = None


@dataclass
class GatewayProcess:
    """A running ``courier-gateway`` role with its environment and captured output."""

    child: Child
    env: dict[str, str]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.env['API_PORT']}"

    @property
    def stream(self) -> str:
        return self.env["QUEUE_STREAM"]

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 20) -> int:
        return self.child.stop(timeout)


def start_gateway(
    role: str,
    env: Mapping[str, str],
    *,
    log_path: Path,
    wait_ready: bool = True,
    timeout: float = 30,
) -> GatewayProcess:
    """Start ``courier-gateway <role>`` with exactly ``env`` (plus PATH) and wait for /ready."""
    full_env = {"PATH": os.environ["PATH"], "PYTHONUNBUFFERED": "1", **env}
    child = start_child(
        role, [sys.executable, "-m", "courier_gateway", role], env=full_env, log_file=log_path
    )
    process = GatewayProcess(child, dict(full_env), log_path)
    if wait_ready:

        def ready() -> bool:
            try:
                return httpx.get(f"{process.url}/ready", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        if not wait_until(ready, timeout=timeout, child=child):
            child.stop(5)
            raise AssertionError(f"{role} did not become ready:\n{process.logs()[-4000:]}")
    return process


def wait_for(check: object, timeout: float = 10.0, interval: float = 0.05) -> bool:
    """Poll a zero-argument callable until it returns truthy or ``timeout`` passes."""
    assert callable(check)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return bool(check())
