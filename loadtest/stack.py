"""A fresh local stack per measurement, and a sampler of each process's memory and CPU.

:class:`LocalStack` starts, in its own temporary directory: ``redis-server`` with AOF
(``appendfsync everysec``, as ``make dev`` runs it), the nx-27017 store with ``--data-dir``, the
ingress with ``INGRESS_WORKERS`` processes (2) and ``LOG_LEVEL=INFO`` logging to a file, and
optionally the worker, all with a known signing secret. Children are started with the gateway's
own helper (own session, killed with us by the kernel); :meth:`LocalStack.stop` runs in
``finally`` and also kills any process the sampler saw that outlived its parent, so nothing is
left behind, Ctrl-C included.

:class:`ResourceSampler` polls every 0.1 s with psutil and keeps, per process, the peak RSS and
the last CPU time seen: each Sanic worker process separately (told apart from Sanic's manager
process by the listening socket they serve on), the ingress's main process, and the worker.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml

from courier_gateway.config.sources import DEFAULT_SOURCE, Scheme
from courier_gateway.devstack.processes import (
    Child,
    free_port,
    redis_command,
    start_child,
    store_command,
    tcp_open,
    wait_until,
)
from loadtest.bare_app import command as bare_command
from loadtest.requests import SourceSpec

__all__ = [
    "DEFAULT_SECRET",
    "LocalStack",
    "ProcessUsage",
    "ResourceSampler",
    "StackError",
    "bare_server",
    "redis_version",
]

DEFAULT_SECRET = "loadtest-signing-secret-0001"
MONGO_DB = "courier_gateway_loadtest"
_START_TIMEOUT = 60.0
_LISTEN_CHECK_SECONDS = 5.0
_MB = 1024 * 1024
_ENV_KEEP = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV")


class StackError(RuntimeError):
    """A part of the stack did not start; the message names it and its log."""


def _http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def _post_ok(url: str) -> bool:
    try:
        return httpx.post(url, content=b"{}", timeout=1.0).status_code == 202
    except httpx.HTTPError:
        return False


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def redis_version() -> str:
    """``redis-server --version``, shortened to the version."""
    binary = shutil.which("redis-server")
    if binary is None:
        return "not installed"
    text = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, check=False, timeout=10
    ).stdout
    for part in text.split():
        if part.startswith("v="):
            return part[2:]
    return text.strip()


@dataclass
class ProcessUsage:
    """What the sampler saw of one process."""

    label: str
    pid: int
    peak_rss: int = 0
    cpu_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, RSS in MB."""
        return {
            "label": self.label,
            "pid": self.pid,
            "peakRssMB": round(self.peak_rss / _MB, 1),
            "cpuSeconds": round(self.cpu_seconds, 3),
        }


@dataclass
class _Tracked:
    role: str
    process: psutil.Process
    root: bool
    first_seen: float
    kind: str = "child"  # main, worker (listening), tracker, child
    usage: ProcessUsage = field(default_factory=lambda: ProcessUsage("", 0))


class ResourceSampler:
    """Samples the RSS and CPU time of process trees in a background thread."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self._roots: dict[str, psutil.Process] = {}
        self._tracked: dict[int, _Tracked] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._cpu_base: dict[int, float] = {}
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def start(self) -> None:
        """Start sampling."""
        self._thread.start()

    def stop(self) -> None:
        """Take a last sample and stop."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def watch(self, role: str, pid: int) -> None:
        """Sample the process ``pid`` and its descendants under ``role`` (ingress, worker, …)."""
        with self._lock, suppress(psutil.Error):
            process = psutil.Process(pid)
            self._roots[role] = process
            self._track(role, process, root=True)

    def reset(self, role: str | None = None) -> None:
        """Forget peaks and CPU so far (of one role, or all), keeping the processes watched."""
        with self._lock:
            for tracked in self._tracked.values():
                if role is None or tracked.role == role:
                    tracked.usage.peak_rss = 0
                    tracked.usage.cpu_seconds = 0.0
            self._cpu_base = {
                pid: self._cpu(tracked.process) for pid, tracked in self._tracked.items()
            }

    def seen_processes(self) -> list[psutil.Process]:
        """Every process ever sampled (to kill any left behind)."""
        with self._lock:
            return [tracked.process for tracked in self._tracked.values()]

    def cpu_seconds(self, role: str) -> float:
        """CPU time (user + system) used by a role's processes since the last reset."""
        self.sample()
        with self._lock:
            return sum(t.usage.cpu_seconds for t in self._tracked.values() if t.role == role)

    def usage(self) -> list[ProcessUsage]:
        """Per process: role label, peak RSS and CPU time, in a stable order."""
        self.sample()
        with self._lock:
            by_role: dict[str, list[_Tracked]] = {}
            for tracked in self._tracked.values():
                by_role.setdefault(tracked.role, []).append(tracked)
            result: list[ProcessUsage] = []
            for role, members in by_role.items():
                members.sort(key=lambda t: (not t.root, t.first_seen, t.process.pid))
                numbers: dict[str, int] = {}
                for tracked in members:
                    number = numbers[tracked.kind] = numbers.get(tracked.kind, 0) + 1
                    if tracked.root:
                        label = role if len(members) == 1 else f"{role} main"
                    elif tracked.kind == "worker":
                        label = f"{role} worker process {number}"
                    elif tracked.kind == "tracker":
                        label = f"{role} resource tracker"
                    else:
                        label = f"{role} helper {number}"
                    tracked.usage.label = label
                    tracked.usage.pid = tracked.process.pid
                    result.append(tracked.usage)
            return result

    def peak_rss_mb(self, role: str, kind: str | None = None) -> float:
        """The largest peak RSS among a role's processes (of one kind: main, worker, …)."""
        self.usage()
        with self._lock:
            peaks = [
                t.usage.peak_rss
                for t in self._tracked.values()
                if t.role == role and (kind is None or t.kind == kind)
            ]
        return round(max(peaks, default=0) / _MB, 1)

    @staticmethod
    def _cpu(process: psutil.Process) -> float:
        try:
            times = process.cpu_times()
        except psutil.Error:
            return 0.0
        return float(times.user + times.system)

    def _track(self, role: str, process: psutil.Process, *, root: bool) -> _Tracked:
        tracked = self._tracked.get(process.pid)
        if tracked is None:
            tracked = _Tracked(role, process, root, time.monotonic(), "main" if root else "child")
            with suppress(psutil.Error):
                if "resource_tracker" in " ".join(process.cmdline()):
                    tracked.kind = "tracker"
            self._tracked[process.pid] = tracked
        return tracked

    def sample(self) -> None:
        """Take one sample of every watched tree."""
        with self._lock:
            for role, root in list(self._roots.items()):
                try:
                    members = [root, *root.children(recursive=True)]
                except psutil.Error:
                    members = [root]
                for process in members:
                    tracked = self._track(role, process, root=process.pid == root.pid)
                    self._measure(tracked)

    def _measure(self, tracked: _Tracked) -> None:
        process = tracked.process
        try:
            with process.oneshot():
                rss = process.memory_info().rss
                cpu = self._cpu(process)
            young = time.monotonic() - tracked.first_seen < _LISTEN_CHECK_SECONDS
            if tracked.kind == "child" and young and _listens(process):
                tracked.kind = "worker"
        except psutil.Error:
            return
        tracked.usage.peak_rss = max(tracked.usage.peak_rss, rss)
        tracked.usage.cpu_seconds = max(0.0, cpu - self._cpu_base.get(process.pid, 0.0))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()
        self.sample()


def _listens(process: psutil.Process) -> bool:
    """Whether the process holds a listening TCP socket (a Sanic worker does)."""
    return any(c.status == psutil.CONN_LISTEN for c in process.net_connections("tcp"))


def _clean_env(extra: dict[str, str]) -> dict[str, str]:
    env = {name: os.environ[name] for name in _ENV_KEEP if name in os.environ}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def _kill_leftovers(processes: Sequence[psutil.Process]) -> list[int]:
    left = []
    for process in processes:
        with suppress(psutil.Error):
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                process.kill()
                left.append(process.pid)
    psutil.wait_procs([p for p in processes if p.pid in left], timeout=5)
    return left


class LocalStack:
    """Redis, the store, the ingress and (optionally) the worker, fresh in a temporary directory.

    With ``redis_url`` no Redis is started: the gateway uses that one (a Redis Cluster seed node
    with ``REDIS_MODE=cluster`` in ``env``), which the stack neither watches nor stops.

    Use as a context manager, or call :meth:`stop` in ``finally``.
    """

    def __init__(
        self,
        *,
        sources: Sequence[SourceSpec] = (),
        secret: str = DEFAULT_SECRET,
        ingress_workers: int = 2,
        env: dict[str, str] | None = None,
        keep: bool = False,
        redis_url: str | None = None,
    ) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="loadtest-stack-"))
        self.secret = secret
        self.ingress_workers = ingress_workers
        self.sources = tuple(sources) or (SourceSpec(DEFAULT_SOURCE, Scheme.V1, secret),)
        self.keep = keep
        self.sampler = ResourceSampler()
        self.children: dict[str, Child] = {}
        self.api_port = free_port()
        self.metrics_port = free_port()
        self.redis_port = free_port()
        self.store_port = free_port()
        self.stream = "courier-events"
        self.leftovers: list[int] = []
        self._extra_env = dict(env or {})
        #: An existing Redis (standalone node or cluster seed) to use instead of starting one.
        self.external_redis = redis_url

    # Addresses.
    @property
    def url(self) -> str:
        """The ingress's base URL."""
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def redis_url(self) -> str:
        """The private Redis, or the external one given as ``redis_url``."""
        if self.external_redis is not None:
            return self.external_redis
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def mongo_uri(self) -> str:
        """The private store."""
        return f"mongodb://127.0.0.1:{self.store_port}/"

    @property
    def mongo_db(self) -> str:
        """The database the worker writes."""
        return MONGO_DB

    @property
    def worker_metrics_url(self) -> str:
        """The worker's ``/metrics``."""
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def log(self, name: str) -> Path:
        """A child's log file."""
        return self.directory / f"{name}.log"

    # Life cycle.
    def __enter__(self) -> LocalStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def env(self) -> dict[str, str]:
        """The gateway's environment."""
        values = {
            "REDIS_URL": self.redis_url,
            "MONGO_URI": self.mongo_uri,
            "MONGO_DB": self.mongo_db,
            "API_HOST": "127.0.0.1",
            "API_PORT": str(self.api_port),
            "QUEUE_STREAM": self.stream,
            "INGRESS_WORKERS": str(self.ingress_workers),
            "LOG_LEVEL": "INFO",
            "WORKER_METRICS_PORT": str(self.metrics_port),
        }
        file_sources = [s for s in self.sources if s.name != DEFAULT_SOURCE]
        for spec in self.sources:
            if spec.name == DEFAULT_SOURCE:
                if spec.scheme is not Scheme.V1:
                    raise ValueError("the default source 'courier' uses scheme v1")
                values["SIGNING_SECRET"] = spec.secret
        if file_sources:
            path = self.directory / "sources.yaml"
            document = {
                "sources": {
                    spec.name: {
                        "scheme": spec.scheme.value,
                        "secrets": [{"id": "loadtest", "value": spec.secret}],
                    }
                    for spec in file_sources
                }
            }
            path.write_text(yaml.safe_dump(document))
            values["SOURCES_FILE"] = str(path)
        values.update(self._extra_env)
        return _clean_env(values)

    def start(self, *, worker: bool = True) -> LocalStack:
        """Start Redis, the store, the ingress and (``worker``) the worker; wait until ready."""
        self.sampler.start()
        if self.external_redis is None:
            self._start_redis()
        self._start_store()
        self._start_ingress()
        if worker:
            self.start_worker()
        return self

    def _start(self, name: str, command: Sequence[str], env: dict[str, str] | None = None) -> Child:
        child = start_child(name, command, env=env, log_file=self.log(name))
        self.children[name] = child
        self.sampler.watch(name, child.process.pid)
        return child

    def _start_redis(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise StackError("redis-server not found: apt-get install redis-server")
        data = self.directory / "redis"
        data.mkdir()
        child = self._start("redis", redis_command(binary, self.redis_port, data, append_only=True))
        if not wait_until(lambda: tcp_open(self.redis_port), timeout=_START_TIMEOUT, child=child):
            raise StackError(f"redis-server did not start:\n{_tail(self.log('redis'))}")

    def _start_store(self) -> None:
        if importlib.util.find_spec("nx_27017") is None:
            raise StackError("nx-27017 not found: pip install -e '.[dev]'")
        data = self.directory / "store"
        data.mkdir()
        child = self._start(
            "store",
            store_command(self.store_port, data, pid_file=self.directory / "store.pid"),
        )
        if not wait_until(lambda: tcp_open(self.store_port), timeout=_START_TIMEOUT, child=child):
            raise StackError(f"nx-27017 did not start:\n{_tail(self.log('store'))}")

    def _start_ingress(self) -> None:
        child = self._start(
            "ingress", [sys.executable, "-m", "courier_gateway", "ingress"], env=self.env()
        )
        if not wait_until(
            lambda: _http_ok(f"{self.url}/ready"), timeout=_START_TIMEOUT, child=child
        ):
            raise StackError(f"the ingress did not become ready:\n{_tail(self.log('ingress'))}")
        # Let the sampler see the Sanic worker processes listening before load starts.
        wait_until(
            lambda: (
                sum(1 for u in self.sampler.usage() if "worker process" in u.label)
                >= self.ingress_workers
            ),
            timeout=10,
        )

    def start_worker(self) -> None:
        """Start the worker and wait until it consumes (its ``/ready``)."""
        child = self._start(
            "worker", [sys.executable, "-m", "courier_gateway", "worker"], env=self.env()
        )
        ready = f"http://127.0.0.1:{self.metrics_port}/ready"
        if not wait_until(lambda: _http_ok(ready), timeout=_START_TIMEOUT, child=child):
            raise StackError(f"the worker did not become ready:\n{_tail(self.log('worker'))}")

    @property
    def worker_running(self) -> bool:
        """Whether the worker was started and still runs."""
        child = self.children.get("worker")
        return child is not None and child.process.poll() is None

    def stop(self) -> None:
        """Stop every child (worker, ingress, store, Redis) and kill anything left over."""
        try:
            for name in ("worker", "ingress", "store", "redis"):
                child = self.children.get(name)
                if child is not None:
                    with suppress(Exception):
                        child.stop(timeout=20)
        finally:
            self.sampler.stop()
            self.leftovers = _kill_leftovers(self.sampler.seen_processes())
            if not self.keep:
                shutil.rmtree(self.directory, ignore_errors=True)


@contextmanager
def bare_server(workers: int = 2) -> Iterator[tuple[str, ResourceSampler]]:
    """Run the bare Sanic endpoint (``loadtest/bare_app.py``); yield its URL and a sampler."""
    port = free_port()
    directory = Path(tempfile.mkdtemp(prefix="loadtest-bare-"))
    root = Path(__file__).resolve().parents[1]
    env = _clean_env({"PYTHONPATH": str(root)})
    sampler = ResourceSampler()
    sampler.start()
    child = start_child(
        "bare",
        bare_command(sys.executable, port=port, workers=workers),
        env=env,
        log_file=directory / "bare.log",
    )
    sampler.watch("bare", child.process.pid)
    try:
        url = f"http://127.0.0.1:{port}"
        probe = f"{url}/v1/events/{DEFAULT_SOURCE}"
        if not wait_until(lambda: _post_ok(probe), timeout=_START_TIMEOUT, child=child):
            raise StackError(f"the bare app did not start:\n{_tail(directory / 'bare.log')}")
        wait_until(
            lambda: sum(1 for u in sampler.usage() if "worker process" in u.label) >= workers,
            timeout=10,
        )
        yield url, sampler
    finally:
        try:
            child.stop(timeout=20)
        finally:
            sampler.stop()
            _kill_leftovers(sampler.seen_processes())
            shutil.rmtree(directory, ignore_errors=True)
