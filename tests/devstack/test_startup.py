"""``courier-gateway dev`` at every stage of its start-up: Ctrl-C and failures end it at once.

Proved here with the real command and real signals:

- Ctrl-C while its modules are still loading ends it without a traceback;
- Ctrl-C while its servers start stops every child and says so in one line (exit 130), with no
  banner and no ``.data/env`` left;
- a dependency given by the environment that does not answer (``REDIS_URL``, ``MONGO_URI``)
  stops it within seconds with one line naming the variable, before anything is started;
- a role that exits while the stack starts (the worker cannot bind its metrics port) stops the
  whole stack at once with the reason, not after a start-up timeout.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from courier_gateway.devstack.processes import free_port
from tests.support.servers import wait_for

DEV = [sys.executable, "-m", "courier_gateway", "dev"]


def start_dev(tmp_path: Path, **env: str) -> subprocess.Popen[str]:
    """``courier-gateway dev`` in ``tmp_path`` with only PATH, a free API port and ``env``."""
    return subprocess.Popen(
        DEV,
        env={"PATH": os.environ["PATH"], "API_PORT": str(free_port()), **env},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def descendants(process: subprocess.Popen[str]) -> list[psutil.Process]:
    try:
        return psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


@pytest.fixture
def stopped_at_end() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test started; killed (with their children) if the test left them running."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            for child in descendants(process):
                child.kill()
            process.kill()
            process.wait(timeout=10)


def test_ctrl_c_while_modules_load_ends_quietly(
    tmp_path: Path, stopped_at_end: list[subprocess.Popen[str]]
) -> None:
    # -X importtime reports each module as it finishes loading: once the data directory's lock
    # module is in, the stack's modules (pydantic's among them) are loading, the moment a
    # user's Ctrl-C used to print a traceback.
    process = subprocess.Popen(
        [sys.executable, "-X", "importtime", *DEV[1:]],
        env={"PATH": os.environ["PATH"], "API_PORT": str(free_port())},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stopped_at_end.append(process)
    assert process.stderr is not None
    seen = []
    for line in process.stderr:
        seen.append(line)
        if line.rstrip().endswith("courier_gateway.devstack.lock"):
            process.send_signal(signal.SIGINT)
            break
    _, rest = process.communicate(timeout=30)
    stderr = "".join(seen) + rest
    assert "courier_gateway.devstack.stack" not in stderr  # interrupted before it loaded
    assert "Traceback" not in stderr, stderr
    assert "KeyboardInterrupt" not in stderr, stderr
    assert process.returncode == 130, (process.returncode, stderr[-2000:])


def test_ctrl_c_during_start_up_stops_every_child(
    tmp_path: Path, stopped_at_end: list[subprocess.Popen[str]]
) -> None:
    process = start_dev(tmp_path)
    stopped_at_end.append(process)

    def roles_started() -> bool:
        names = " ".join(" ".join(child.cmdline()) for child in descendants(process))
        return "courier_gateway ingress" in names

    assert wait_for(roles_started, timeout=60, interval=0.05)
    children = descendants(process)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert "interrupted during start-up; stopped" in stderr
    assert "Traceback" not in stderr, stderr
    assert "is running" not in stdout
    _, alive = psutil.wait_procs(children, timeout=10)
    assert alive == []
    assert not (tmp_path / ".data" / "env").exists()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("REDIS_URL", "redis://127.0.0.1:{port}/0"),
        ("MONGO_URI", "mongodb://127.0.0.1:{port}/"),
    ],
)
def test_an_unreachable_dependency_stops_it_at_once(
    tmp_path: Path, stopped_at_end: list[subprocess.Popen[str]], variable: str, value: str
) -> None:
    url = value.format(port=free_port())  # nothing listens there
    started = time.monotonic()
    process = start_dev(tmp_path, **{variable: url})
    stopped_at_end.append(process)
    stdout, stderr = process.communicate(timeout=30)
    elapsed = time.monotonic() - started
    assert process.returncode == 1, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"courier-gateway dev: {variable} {url} is not reachable"), lines
    assert elapsed < 20, elapsed  # a probe of a few seconds, not a start-up timeout
    assert stdout == ""


def test_a_role_that_exits_during_start_up_stops_the_stack_with_its_reason(
    tmp_path: Path, stopped_at_end: list[subprocess.Popen[str]]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = start_dev(tmp_path, WORKER_METRICS_PORT=str(port))
        stopped_at_end.append(process)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 1, stderr
    # The worker's own one-line reason, then the stack's, naming the worker.
    assert f"WORKER_METRICS_PORT: cannot listen on port {port}" in stderr
    assert "courier-gateway dev: worker exited with code 2" in stderr
    assert "Traceback" not in stderr, stderr
