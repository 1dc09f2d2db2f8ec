"""Running wrk with ``wrk.lua`` over a generated request file, and reading its ``WRK_JSON`` line.

Two modes: a duration (``-d``) or a count of requests. For a count, each wrk thread stops once
its share is answered and writes a marker file; wrk itself would still sleep until ``-d`` ends,
so the engine sends it SIGINT as soon as every thread's marker is there (wrk then prints its
results as usual). Throughput is taken over the script's own window, from the first request
sent to the last response received, which is right in both modes.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from courier_gateway.devstack.processes import start_child

__all__ = ["SCRIPT", "WrkError", "WrkRun", "run_wrk", "wrk_version"]

SCRIPT = Path(__file__).with_name("wrk.lua")
_MARKER = "WRK_JSON "


class WrkError(RuntimeError):
    """wrk failed or printed no result line."""


@dataclass(frozen=True)
class WrkRun:
    """One wrk run: the command, its parsed result and its raw output."""

    command: tuple[str, ...]
    result: dict[str, Any]
    output: str
    wall_s: float

    @property
    def requests(self) -> int:
        """Responses received (wrk's count)."""
        return int(self.result["requests"])

    @property
    def duration_s(self) -> float:
        """First request sent to last response received (wrk's own duration as a fallback)."""
        active = float(self.result.get("active_s") or 0)
        return active if active > 0 else float(self.result["wrk_duration_s"])

    @property
    def statuses(self) -> dict[int, int]:
        """Responses by HTTP status."""
        return {int(status): int(count) for status, count in self.result["statuses"].items()}

    @property
    def codes(self) -> dict[str, int]:
        """Non-202 responses by ``"<status> <errorCode>"``."""
        return {key: int(count) for key, count in self.result["codes"].items()}

    @property
    def accepted(self) -> int:
        """202 responses, duplicates included."""
        return self.statuses.get(202, 0)

    @property
    def duplicates(self) -> int:
        """202 responses that said ``"duplicate":true``."""
        return int(self.result["duplicates"])

    @property
    def queued(self) -> int:
        """Events the gateway put on the stream: 202 responses minus duplicates."""
        return self.accepted - self.duplicates

    @property
    def non_2xx(self) -> int:
        """Responses outside 2xx."""
        return sum(count for status, count in self.statuses.items() if not 200 <= status < 300)

    @property
    def socket_errors(self) -> int:
        """Connect, read, write errors and timeouts."""
        return int(self.result["socket_errors"])

    @property
    def latency_ms(self) -> dict[str, float]:
        """min, mean, max, stdev and p50 … p99.9 in milliseconds."""
        return {key: float(value) for key, value in self.result["latency_ms"].items()}

    @property
    def percentiles_ms(self) -> list[tuple[float, float]]:
        """(percentile, latency ms) for 1 … 99, 99.9 and 99.99."""
        return [(float(p), float(value)) for p, value in self.result["percentiles_ms"]]


def wrk_version(wrk: str = "wrk") -> str:
    """wrk's version line."""
    binary = shutil.which(wrk) or wrk
    completed = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, check=False, timeout=10
    )
    return (completed.stdout + completed.stderr).splitlines()[0].strip()


def run_wrk(
    url: str,
    requests_file: Path,
    *,
    connections: int,
    threads: int = 2,
    duration: float | None = None,
    count: int | None = None,
    rate: float | None = None,
    timeout_s: float = 10.0,
    deadline_s: float = 600.0,
    wrk: str = "wrk",
) -> WrkRun:
    """Run wrk against ``url`` with the requests of ``requests_file``; give duration or count."""
    if (duration is None) == (count is None):
        raise ValueError("give either a duration or a count")
    binary = shutil.which(wrk)
    if binary is None:
        raise WrkError(f"{wrk} not found: install it (apt-get install wrk)")
    threads = max(1, min(threads, connections, count or threads))
    workdir = Path(tempfile.mkdtemp(prefix="loadtest-wrk-"))
    markers = workdir / "markers"
    markers.mkdir()
    seconds = deadline_s if count is not None else duration
    assert seconds is not None
    command = [
        binary,
        "-t",
        str(threads),
        "-c",
        str(connections),
        "-d",
        f"{max(1, round(seconds))}s",
        "--timeout",
        f"{max(1, round(timeout_s))}s",
        "-s",
        str(SCRIPT),
        url,
        "--",
        f"file={requests_file}",
        f"threads={threads}",
        f"markers={markers}",
    ]
    if count is not None:
        command.append(f"limit={count}")
    if rate:
        command.append(f"rate={rate:g}")
    log = workdir / "wrk.out"
    started = time.monotonic()
    child = start_child("wrk", command, log_file=log)
    try:
        if count is not None:
            while child.process.poll() is None:
                if sum(1 for marker in markers.iterdir() if marker.name != "ready") >= threads:
                    child.process.send_signal(signal.SIGINT)
                    break
                if time.monotonic() - started > deadline_s + 30:
                    break
                time.sleep(0.05)
        try:
            child.process.wait(timeout=max(60.0, (seconds or 0) + 60))
        except subprocess.TimeoutExpired:
            child.stop(timeout=5)
        wall = time.monotonic() - started
        output = log.read_text(errors="replace")
    finally:
        child.stop(timeout=5)
        shutil.rmtree(workdir, ignore_errors=True)
    for line in output.splitlines():
        if line.startswith(_MARKER):
            result = json.loads(line[len(_MARKER) :])
            return WrkRun(tuple(command), result, output, wall)
    raise WrkError(f"wrk printed no result (exit {child.process.returncode}):\n{output[-2000:]}")
