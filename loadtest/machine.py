"""A description of the machine a benchmark ran on (the numbers mean little without it)."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from loadtest.engine import wrk_version
from loadtest.stack import redis_version

__all__ = ["describe"]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def describe() -> dict[str, Any]:
    """CPU count and model, memory, load, and the versions of everything measured."""
    try:
        nproc = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        nproc = os.cpu_count() or 0
    return {
        "nproc": nproc,
        "cpuModel": _cpu_model(),
        "memoryGB": _memory_gb(),
        "kernel": platform.release(),
        "loadAverage": [round(value, 2) for value in os.getloadavg()],
        "python": platform.python_version(),
        "redisServer": redis_version(),
        "wrk": wrk_version(),
        "sanic": _version("sanic"),
        "nx27017": _version("nx-27017"),
        "courierGateway": _version("courier-gateway"),
    }
