"""An ingress of several processes supervises itself, with real processes and real signals.

- A server process SIGKILLed is replaced within 5 s by a new one that serves, and the port keeps
  answering meanwhile (the other process takes the connections).
- The supervisor SIGKILLed: every server process exits within 5 s (parent-death signal), the
  port is closed, and no process of the ingress is left (it starts nothing but its servers).

Graceful stop of several processes (SIGTERM to the supervisor) is in ``test_graceful_stop.py``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import psutil
import pytest

from tests.conftest import StartGateway, base_env
from tests.support.servers import GatewayProcess, RedisServer, wait_for

# Measures timing (latency under attack, restart windows): run alone by make test.
pytestmark = pytest.mark.serial

SECRET = "supervision-secret-01"


@pytest.fixture
def ingress(start: StartGateway, redis_server: RedisServer) -> GatewayProcess:
    return start("ingress", base_env(redis_server.url, SIGNING_SECRET=SECRET, INGRESS_WORKERS="2"))


def servers(ingress: GatewayProcess) -> set[int]:
    """Pids of the supervisor's server processes (every process it started)."""
    try:
        return {p.pid for p in psutil.Process(ingress.child.process.pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


def alive(pids: set[int]) -> set[int]:
    return {
        pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"
    }


class Prober:
    """GET /health on a fresh connection every 50 ms; records (time, status or 0)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.seen: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                status = httpx.get(f"{self.url}/health", timeout=2).status_code
            except httpx.HTTPError:
                status = 0
            self.seen.append((time.monotonic(), status))
            self._stop.wait(0.05)


@pytest.fixture
def started_servers(ingress: GatewayProcess) -> set[int]:
    assert wait_for(lambda: len(servers(ingress)) == 2, timeout=10)
    return servers(ingress)


def test_a_killed_server_process_is_replaced_and_the_port_keeps_answering(
    ingress: GatewayProcess, started_servers: set[int]
) -> None:
    victim = min(started_servers)
    with Prober(ingress.url) as prober:
        time.sleep(0.5)
        killed = time.monotonic()
        psutil.Process(victim).send_signal(signal.SIGKILL)
        assert wait_for(
            lambda: len(servers(ingress) - started_servers) == 1 and len(servers(ingress)) == 2,
            timeout=10,
            interval=0.05,
        )
        replaced_after = time.monotonic() - killed
        [replacement] = servers(ingress) - started_servers
        # The new process serves: it logs its start once its listener is open.
        assert wait_for(
            lambda: f'"ingress started","pid":{replacement}' in ingress.logs(), timeout=60
        ), ingress.logs()[-3000:]
        # Keep probing for a while after the kill, however fast the replacement came.
        time.sleep(max(0.5, killed + 3 - time.monotonic()))
    assert replaced_after <= 5, replaced_after
    answers = [status for at, status in prober.seen if at >= killed]
    # At most the one connection the victim had accepted when it died goes unanswered.
    assert len(answers) >= 10, prober.seen
    assert answers.count(200) >= len(answers) - 1, answers
    assert "ingress process exited; replacing it" in ingress.logs()
    assert ingress.child.process.poll() is None


def test_no_server_outlives_a_killed_supervisor(
    ingress: GatewayProcess, started_servers: set[int]
) -> None:
    # The supervisor started its two servers and nothing else (no multiprocessing helpers).
    commands = [psutil.Process(pid).cmdline() for pid in started_servers]
    assert len(commands) == 2 and all("--listen-fd" in command for command in commands), commands
    assert httpx.get(f"{ingress.url}/health", timeout=2).status_code == 200
    ingress.child.process.send_signal(signal.SIGKILL)
    ingress.child.process.wait(timeout=5)
    killed = time.monotonic()
    assert wait_for(lambda: not alive(started_servers), timeout=10, interval=0.05), alive(
        started_servers
    )
    assert time.monotonic() - killed <= 5
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{ingress.url}/health", timeout=2)


def test_a_port_in_use_stops_the_supervisor_with_one_line(redis_server: RedisServer) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = base_env(
            redis_server.url, SIGNING_SECRET=SECRET, INGRESS_WORKERS="2", API_PORT=str(port)
        )
        result = subprocess.run(
            [sys.executable, "-m", "courier_gateway", "ingress"],
            env={"PATH": os.environ["PATH"], **env},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"courier-gateway: configuration error: API_PORT: port {port} on 127.0.0.1 is not"
        " available (Address already in use)"
    ]
