"""``courier-gateway dev`` as a new user meets it: start, copy the printed curl, get a 202, stop.

Nothing may be left running afterwards, whether the stack is stopped with SIGTERM or killed
outright (its children are tied to it by the kernel's parent-death signal); a stopped stack
removes its ``.data/env``, and a restart on the same directory keeps the signing secret. Ctrl-C
and the whole README walk-through are in ``tests/docs/test_quick_start.py``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import psutil
from pymongo import MongoClient

from courier_gateway.devstack.processes import free_port
from tests.support.servers import wait_for


def start_dev(tmp_path: Path) -> tuple[subprocess.Popen[str], list[str]]:
    env = {"PATH": os.environ["PATH"], "API_PORT": str(free_port()), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "courier_gateway", "dev", "--data-dir", str(tmp_path / ".data")],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    lines: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.rstrip("\n"))

    threading.Thread(target=read, daemon=True).start()
    return process, lines


def wait_for_curl(process: subprocess.Popen[str], lines: list[str]) -> str:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        for line in lines:
            if line.startswith("curl "):
                return line
        if process.poll() is not None:
            break
        time.sleep(0.2)
    raise AssertionError("no curl command printed:\n" + "\n".join(lines))


def family(process: subprocess.Popen[str]) -> list[psutil.Process]:
    return psutil.Process(process.pid).children(recursive=True)


def test_printed_curl_works_and_stop_leaves_nothing(tmp_path: Path) -> None:
    process, lines = start_dev(tmp_path)
    try:
        curl = wait_for_curl(process, lines)
        assert any("signing secret:" in line for line in lines)
        children = family(process)
        names = " ".join(" ".join(child.cmdline()) for child in children)
        assert "redis-server" in names and "courier_gateway.devstack.quiet_store" in names
        assert "courier_gateway ingress" in names and "courier_gateway worker" in names

        result = subprocess.run(
            ["bash", "-c", curl + " -w '\\n%{http_code}'"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        body, _, status = result.stdout.rpartition("\n")
        assert status == "202", result.stdout + result.stderr
        answer = orjson.loads(body)
        assert answer["acknowledged"] is True
        # The worker processes it: the ledger shows it on the embedded store.
        store = next(c for c in children if "quiet_store" in " ".join(c.cmdline()))
        port = int(store.cmdline()[store.cmdline().index("-p") + 1])
        with MongoClient(f"mongodb://127.0.0.1:{port}/") as client:
            ledger = client["courier_gateway"]["processed_events"]
            key = answer["idempotencyKey"]
            assert wait_for(
                lambda: ledger.count_documents({"idempotencyKey": key, "status": "processed"}) == 1,
                timeout=30,
            )

        assert (tmp_path / ".data" / "env").exists()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        _, alive = psutil.wait_procs(children, timeout=10)
        assert alive == []
        assert not (tmp_path / ".data" / "env").exists()
    finally:
        if process.poll() is None:
            process.kill()


def test_killed_stack_takes_its_children_along(tmp_path: Path) -> None:
    process, lines = start_dev(tmp_path)
    try:
        wait_for_curl(process, lines)
        children = family(process)
        assert len(children) >= 3
        process.kill()
        process.wait(timeout=10)
        _, alive = psutil.wait_procs(children, timeout=20)
        assert alive == []
    finally:
        if process.poll() is None:
            process.kill()


def test_secret_survives_a_restart(tmp_path: Path) -> None:
    secrets_seen = []
    for _ in range(2):
        process, lines = start_dev(tmp_path)
        try:
            wait_for_curl(process, lines)
            secrets_seen += [line for line in lines if "signing secret:" in line]
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0
        finally:
            if process.poll() is None:
                process.kill()
    assert len(secrets_seen) == 2 and secrets_seen[0] == secrets_seen[1]
    assert any((tmp_path / ".data" / "store").iterdir())


def test_make_dev_installs_the_runtime_only_with_visible_progress(tmp_path: Path) -> None:
    """What ``make dev`` would run in a fresh checkout (``make -n``): no dev tools, no --quiet."""
    root = Path(__file__).resolve().parents[2]
    for name in ("Makefile", "pyproject.toml", ".ci/find-python", ".ci/ensure-tools"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, tmp_path / name)
    # As a developer's terminal runs it: without the MAKEFLAGS/MAKELEVEL of the `make test` that
    # runs this suite (they make the inner make print "Entering directory" lines).
    terminal = {
        k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MAKELEVEL", "MFLAGS"}
    }
    planned = subprocess.run(
        ["make", "-n", "dev"],
        cwd=tmp_path,
        env=terminal,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    installs = [line for line in planned.splitlines() if "pip install" in line]
    assert installs == [".venv/bin/python -m pip install --progress-bar on -e '.[embedded]'"]
    assert "installing the gateway and its embedded store" in planned
    assert planned.rstrip().endswith(".venv/bin/courier-gateway dev")
