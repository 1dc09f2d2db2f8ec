"""Child processes of the local stack: started so that none can outlive the stack.

Each child runs in its own session (a terminal's Ctrl-C reaches only the stack, which then stops
the children in order) and, on Linux, asks the kernel to send it SIGTERM if the stack itself dies,
even by SIGKILL, so a crashed ``make dev`` leaves nothing running.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from courier_gateway.process import die_with_parent

__all__ = [
    "Child",
    "free_port",
    "port_is_free",
    "redis_command",
    "start_child",
    "store_command",
    "tcp_open",
    "wait_until",
]

log = logging.getLogger(__name__)


@dataclass
class Child:
    """A running child process with a display name."""

    name: str
    process: subprocess.Popen[bytes]

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, wait up to ``timeout``, then SIGKILL; return the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("child did not stop in time; killing it", extra={"child": self.name})
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_child(
    name: str,
    command: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    log_file: Path | None = None,
    pass_fds: Collection[int] = (),
) -> Child:
    """Start ``command``; its output goes to ``log_file`` when given, else to our stderr.

    ``pass_fds`` are inherited by the child (the data directory's lock, see ``lock.py``).
    """
    output: IO[bytes] | int | None = None
    if log_file is not None:
        output = log_file.open("ab")
    try:
        process = subprocess.Popen(
            list(command),
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=output if output is not None else sys.stderr,
            stderr=output if output is not None else sys.stderr,
            start_new_session=True,
            pass_fds=tuple(pass_fds),
            preexec_fn=die_with_parent,  # noqa: PLW1509 - only async-signal-safe work in it
        )
    finally:
        if output is not None and not isinstance(output, int):
            output.close()
    return Child(name, process)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def port_is_free(host: str, port: int) -> bool:
    """Whether ``host:port`` can be bound now."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
        return True


def wait_until(
    check: Callable[[], bool],
    *,
    timeout: float,
    child: Child | None = None,
    stop: threading.Event | None = None,
) -> bool:
    """Poll ``check`` until it is true or ``timeout`` passes.

    Give up early when ``child`` exited or ``stop`` is set (Ctrl-C while waiting).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        if child is not None and child.process.poll() is not None:
            return False
        if stop is not None:
            if stop.wait(0.1):
                return False
        else:
            time.sleep(0.1)
    return False


def tcp_open(port: int) -> bool:
    """Whether something accepts connections on ``127.0.0.1:port``."""
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def redis_command(
    binary: str, port: int, directory: Path, *, append_only: bool, fsync: str = "everysec"
) -> list[str]:
    """A private ``redis-server`` on loopback: no snapshots; AOF (fsync ``fsync``) or none."""
    persistence = ["--appendonly", "yes", "--appendfsync", fsync]
    return [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(directory),
        *(persistence if append_only else ["--appendonly", "no"]),
        "--save",
        "",
    ]


def store_command(port: int, data_dir: Path, *, pid_file: Path) -> list[str]:
    """nx-27017 with one SQLite file per database (a single ``--db`` file would share
    collections across database names) and its own pid file (the default is a shared path in
    /tmp), without its per-command log lines (see ``quiet_store.py``).

    Its log goes to its standard error only (start it with a ``log_file``): its own log file
    would repeat every line.
    """
    return [
        sys.executable,
        "-m",
        "courier_gateway.devstack.quiet_store",
        "--data-dir",
        str(data_dir),
        "-p",
        str(port),
        "--log-file",
        os.devnull,
        "--pid-file",
        str(pid_file),
    ]
