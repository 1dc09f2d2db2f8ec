"""Several ingress processes on one port, supervised: a dead one is replaced, none outlives us.

With ``INGRESS_WORKERS`` > 1 the ``courier-gateway ingress`` process is a small supervisor (it
never imports Sanic) instead of Sanic's own process manager, which restarts no server that dies
(half the capacity is gone until the pod restarts), leaves its servers serving when it is itself
killed, and leaks its ``multiprocessing`` helpers (a manager process, the resource tracker) on
SIGKILL. The supervisor:

- binds the listening socket once and hands it to each server process (one accept queue shared
  by all, as with Sanic's manager; every server is a single-process Sanic on that socket);
- starts each server so that the kernel sends it SIGTERM when the supervisor dies, by whatever
  means (``PR_SET_PDEATHSIG``), and each server also watches its parent itself: a server never
  serves unsupervised. In a container the supervisor is the main process, so its death ends the
  container and Kubernetes restarts the pod;
- replaces a server that exits while it should not, at once (after a growing pause if it keeps
  dying young); a server that exits for a configuration error (exit code 2) stops everything
  instead, since a restart cannot fix that;
- on SIGTERM or SIGINT forwards SIGTERM to the servers (each drains, see ``intake.app``), closes
  its own copy of the socket so that new connections are refused once the servers have closed
  theirs, and exits 0 when they are done; a second signal kills them.

It starts no other process: nothing is left behind when it is SIGKILLed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from types import FrameType

from courier_gateway.config import ConfigError, Settings
from courier_gateway.observability import configure_logging
from courier_gateway.process import die_with_parent

__all__ = ["SUPERVISOR_PID", "Supervisor", "orphaned"]

log = logging.getLogger("courier_gateway.intake.supervisor")

#: Set in each server's environment: the pid of the supervisor that started it.
SUPERVISOR_PID = "COURIER_GATEWAY_SUPERVISOR_PID"

_BACKLOG = 1024
_POLL_SECONDS = 0.1
# A server that dies younger than this is crash-looping: wait before the next start.
_YOUNG_SECONDS = 10.0
_MAX_PAUSE_SECONDS = 30.0
_CONFIG_ERROR = 2


def orphaned() -> bool:
    """True in a supervised server whose supervisor is gone (its parent changed)."""
    expected = os.environ.get(SUPERVISOR_PID)
    return expected is not None and os.getppid() != int(expected)


@dataclass
class _Server:
    slot: int
    process: subprocess.Popen[bytes]
    started: float
    crashes: int = 0


class Supervisor:
    """Runs ``INGRESS_WORKERS`` server processes on one listening socket until stopped."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.servers: dict[int, _Server] = {}
        #: Slots whose server died young, waiting to start again: slot -> (when, crashes).
        self._restarts: dict[int, tuple[float, int]] = {}
        self._stopping = False
        self._signals = 0
        self._sock: socket.socket | None = None

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT; return the exit code."""
        self._sock = _listen(self.settings.api_host, self.settings.api_port)
        configure_logging(self.settings.log_level)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        log.info(
            "ingress supervisor started",
            extra={
                "processes": self.settings.ingress_workers,
                "pid": os.getpid(),
                "port": self.settings.api_port,
            },
        )
        for slot in range(self.settings.ingress_workers):
            self.servers[slot] = self._start(slot)
        code = 0
        try:
            while not self._stopping:
                code = self._watch()
                if code:
                    break
                time.sleep(_POLL_SECONDS)
        finally:
            stopped = self._stop()
        log.info("ingress stopped")
        return code or stopped

    def _start(self, slot: int, crashes: int = 0) -> _Server:
        assert self._sock is not None
        fd = self._sock.fileno()
        process = subprocess.Popen(
            [sys.executable, "-m", "courier_gateway", "ingress", "--listen-fd", str(fd)],
            env={**os.environ, SUPERVISOR_PID: str(os.getpid())},
            pass_fds=(fd,),
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent,  # noqa: PLW1509 - only async-signal-safe work in it
        )
        return _Server(slot, process, time.monotonic(), crashes)

    def _watch(self) -> int:
        """Replace servers that exited; return an exit code to stop with (0: keep going)."""
        for slot, server in list(self.servers.items()):
            code = server.process.poll()
            if code is None or self._stopping:
                continue
            del self.servers[slot]
            _forget_metrics(server.process.pid)
            lived = time.monotonic() - server.started
            fields = {
                "pid": server.process.pid,
                "exitCode": code if code >= 0 else None,
                "signal": signal.Signals(-code).name if code < 0 else None,
                "livedSeconds": round(lived, 1),
            }
            if code == _CONFIG_ERROR:
                log.error("ingress process exited with a configuration error", extra=fields)
                return _CONFIG_ERROR
            crashes = server.crashes + 1 if lived < _YOUNG_SECONDS else 1
            pause = 0.0 if crashes <= 1 else min(_MAX_PAUSE_SECONDS, 2.0 ** (crashes - 1))
            log.warning(
                "ingress process exited; replacing it", extra={**fields, "pauseSeconds": pause}
            )
            self._restarts[slot] = (time.monotonic() + pause, crashes)
        for slot, (due, crashes) in list(self._restarts.items()):
            if time.monotonic() >= due and not self._stopping:
                del self._restarts[slot]
                self.servers[slot] = self._start(slot, crashes)
                log.info("ingress process started", extra={"pid": self.servers[slot].process.pid})
        return 0

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1
        self._stopping = True
        if self._signals > 1:
            log.warning("second signal: killing the ingress processes")
            for server in self.servers.values():
                _send(server.process, signal.SIGKILL)

    def _stop(self) -> int:
        """Forward SIGTERM, release the socket, wait for the servers; their worst exit code."""
        self._stopping = True
        log.info("stopping ingress processes", extra={"processes": len(self.servers)})
        for server in self.servers.values():
            _send(server.process, signal.SIGTERM)
        if self._sock is not None:
            # The servers hold their own copies; once they close theirs, connections are
            # refused rather than left in a queue nobody accepts from.
            self._sock.close()
        settings = self.settings
        deadline = (
            time.monotonic() + settings.shutdown_delay_seconds + settings.shutdown_grace_seconds + 5
        )
        codes = []
        for server in self.servers.values():
            try:
                codes.append(server.process.wait(max(0.1, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                log.warning("ingress process did not stop in time; killing it")
                _send(server.process, signal.SIGKILL)
                codes.append(server.process.wait())
            _forget_metrics(server.process.pid)
        # A server signalled while still starting (no handler yet) ends by SIGTERM: a clean stop.
        return 0 if all(code in (0, -signal.SIGTERM) for code in codes) else 1


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket the servers share; :class:`ConfigError` naming what is wrong."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as error:
        raise ConfigError(f"API_HOST: {host!r} cannot be resolved ({error.strerror})") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as error:
        sock.close()
        raise ConfigError(
            f"API_PORT: port {port} on {host} is not available ({error.strerror})"
        ) from None
    sock.listen(_BACKLOG)
    return sock


def _send(process: subprocess.Popen[bytes], signum: int) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signum)


def _forget_metrics(pid: int) -> None:
    """Drop a gone process's live gauges from the shared metrics directory."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
