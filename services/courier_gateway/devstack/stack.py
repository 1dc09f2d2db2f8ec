"""Starting, announcing and stopping the local stack (see the package docstring).

Every wait of the start-up gives way at once to Ctrl-C (or SIGTERM) and to a child that exits:
the stack then stops what it started and says why in one line, instead of waiting out a
timeout. Dependencies given by the environment are probed before anything is started.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import httpx
import orjson

from courier_gateway.cli.sign import build_request, curl_command, sample_event
from courier_gateway.config import ConfigError, Settings, load_sources
from courier_gateway.config.sources import DEFAULT_SOURCE
from courier_gateway.devstack.envfile import (
    ENV_FILE,
    SECRET_FILE,
    remove_env_file,
    write_env_file,
)
from courier_gateway.devstack.lock import DataDirLock
from courier_gateway.devstack.processes import (
    Child,
    free_port,
    port_is_free,
    redis_command,
    start_child,
    store_command,
    tcp_open,
)

__all__ = ["StackError", "run"]

_START_TIMEOUT = 60.0
_PROBE_TIMEOUT = 3.0
#: Exit code of a stack stopped by Ctrl-C before it was running (the shell's 128 + SIGINT).
INTERRUPTED = 130


class StackError(Exception):
    """The stack cannot start or keep running; the message says why, in one line."""


class _InterruptedError(Exception):
    """Ctrl-C or SIGTERM arrived while the stack was starting."""


def _dev_secret(data_dir: Path) -> str:
    """The dev signing secret: kept in ``.data/`` so it survives restarts of the stack."""
    path = data_dir / SECRET_FILE
    if path.exists():
        return path.read_text().strip()
    secret = secrets.token_urlsafe(24)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as output:
        output.write(secret + "\n")
    return secret


def _last_line(path: Path) -> str:
    """The last non-empty line of a log file (the reason a server stopped), or ''."""
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1].strip()[:300] if lines else ""


def _redis_reachable(url: str) -> str | None:
    """``None`` when Redis answers PING at ``url``, else what went wrong."""
    from redis import Redis
    from redis.exceptions import RedisError

    client = Redis.from_url(
        url, socket_timeout=_PROBE_TIMEOUT, socket_connect_timeout=_PROBE_TIMEOUT
    )
    try:
        client.ping()
    except (RedisError, OSError) as error:
        return f"{type(error).__name__}: {error}"
    finally:
        client.close()
    return None


def _store_reachable(uri: str) -> str | None:
    """``None`` when the MongoDB-compatible store at ``uri`` answers ``ping``, else why not."""
    from pymongo import MongoClient
    from pymongo.errors import PyMongoError

    timeout = int(_PROBE_TIMEOUT * 1000)
    client: MongoClient[dict[str, object]] = MongoClient(
        uri, serverSelectionTimeoutMS=timeout, connectTimeoutMS=timeout
    )
    try:
        client.admin.command("ping")
    except PyMongoError as error:
        return type(error).__name__
    finally:
        client.close()
    return None


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/ready", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def _bin_dir() -> Path | None:
    """Where ``courier-gateway`` is installed (for ``PATH`` in ``.data/env``)."""
    beside = Path(sys.executable).parent
    if (beside / "courier-gateway").exists():
        return beside
    found = shutil.which("courier-gateway")
    return Path(found).parent if found else None


class Stack:
    """The processes of one local stack, started in order and stopped in reverse."""

    def __init__(self, lock: DataDirLock, stop: threading.Event) -> None:
        self.lock = lock
        self.directory = lock.directory
        self.stop = stop
        self.children: list[Child] = []
        self.logs: dict[str, Path] = {}

    def wait(self, check: Callable[[], bool], what: str, timeout: float = _START_TIMEOUT) -> None:
        """Poll ``check`` until true; give way at once to Ctrl-C and to any child exiting."""
        deadline = time.monotonic() + timeout
        while not check():
            self.check_children(during="start-up")
            if time.monotonic() >= deadline:
                raise StackError(f"{what} within {timeout:.0f} s")
            if self.stop.wait(0.1):
                raise _InterruptedError

    def check_children(self, *, during: str) -> None:
        """Raise :class:`StackError` naming the first child that exited, and its reason."""
        for child in self.children:
            code = child.process.poll()
            if code is None:
                continue
            log = self.logs.get(child.name)
            reason = f": {_last_line(log)}" if log else " (its output is above)"
            raise StackError(f"{child.name} exited with code {code} during {during}{reason}")

    def start(
        self,
        name: str,
        command: list[str],
        *,
        env: dict[str, str] | None = None,
        log_file: Path | None = None,
        holds_data: bool = False,
    ) -> Child:
        """Start a child and keep it for the ordered stop.

        A child that ``holds_data`` (Redis, the store) inherits the data directory's lock, so
        the next stack cannot start while it is still writing its files.
        """
        passed = (self.lock.descriptor,) if holds_data else ()
        child = start_child(name, command, env=env, log_file=log_file, pass_fds=passed)
        self.children.append(child)
        return child

    def start_redis(self) -> str:
        """A private ``redis-server`` (AOF on) on a free port; return its URL."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise StackError(
                "redis-server not found: install it (apt-get install redis-server) or set REDIS_URL"
            )
        port = free_port()
        redis_dir = self.directory / "redis"
        redis_dir.mkdir(exist_ok=True)
        log = self.logs["redis"] = self.directory / "redis.log"
        self.start(
            "redis",
            redis_command(binary, port, redis_dir, append_only=True),
            log_file=log,
            holds_data=True,
        )
        self.wait(lambda: tcp_open(port), "redis-server did not start")
        return f"redis://127.0.0.1:{port}/0"

    def start_store(self) -> str:
        """The embedded nx-27017 store on a free port; return its URI."""
        import importlib.util

        if importlib.util.find_spec("nx_27017") is None:
            raise StackError(
                "the embedded store (nx-27017) is not installed: run make dev, or"
                " pip install 'courier-gateway[embedded]', or set MONGO_URI"
            )
        port = free_port()
        store_dir = self.directory / "store"
        store_dir.mkdir(exist_ok=True)
        log = self.logs["store"] = self.directory / "store.log"
        pid_file = self.directory / "store.pid"
        # We hold the lock, so a pid file here is a killed stack's: nx-27017 would refuse to
        # start if the process id had been reused since.
        pid_file.unlink(missing_ok=True)
        self.start(
            "store",
            store_command(port, store_dir, pid_file=pid_file),
            log_file=log,
            holds_data=True,
        )
        self.wait(lambda: tcp_open(port), "the embedded store did not start")
        return f"mongodb://127.0.0.1:{port}/"

    def stop_all(self) -> None:
        """Stop every child, last started first."""
        for child in reversed(self.children):
            child.stop()


def _environment(settings: Settings, stack: Stack) -> tuple[dict[str, str], str | None]:
    """The roles' environment with the private servers filled in, and the dev secret."""
    env = dict(os.environ)
    secret: str | None = None
    if settings.signing_secret is None and settings.sources_file is None:
        secret = _dev_secret(stack.directory)
        env["SIGNING_SECRET"] = secret
    elif settings.signing_secret is not None:
        secret = settings.signing_secret.get_secret_value()
    if settings.redis_url:
        problem = _redis_reachable(settings.redis_url)
        if problem:
            raise StackError(f"REDIS_URL {settings.redis_url} is not reachable ({problem})")
    else:
        env["REDIS_URL"] = stack.start_redis()
    if settings.mongo_uri:
        problem = _store_reachable(settings.mongo_uri)
        if problem:
            raise StackError(f"MONGO_URI {settings.mongo_uri} is not reachable ({problem})")
    else:
        env["MONGO_URI"] = stack.start_store()
    if not env.get("WORKER_METRICS_PORT"):
        env["WORKER_METRICS_PORT"] = str(free_port())
    return env, secret


def _exported(env: dict[str, str], settings: Settings) -> dict[str, str]:
    """What ``.data/env`` holds: every variable a command needs to reach this stack."""
    names = [
        "API_HOST",
        "API_PORT",
        "REDIS_URL",
        "MONGO_URI",
        "MONGO_DB",
        "QUEUE_STREAM",
        "SIGNING_SECRET",
        "SOURCES_FILE",
        "WORKER_METRICS_PORT",
    ]
    values = {
        "API_HOST": settings.api_host,
        "API_PORT": str(settings.api_port),
        "MONGO_DB": settings.mongo_db,
        "QUEUE_STREAM": settings.queue_stream,
        **{name: env[name] for name in names if env.get(name)},
    }
    if values.get("SOURCES_FILE"):
        values["SOURCES_FILE"] = str(Path(values["SOURCES_FILE"]).resolve())
    return {name: values[name] for name in names if values.get(name)}


def _announce(url: str, secret: str | None, env: dict[str, str], directory: Path) -> None:
    effective = Settings.from_env(env)
    sources = load_sources(effective)
    source = sources.get(DEFAULT_SOURCE) or next(iter(sources.values()))
    body = orjson.dumps(sample_event(source.name))
    headers = build_request(body, scheme=source.scheme, secret=source.keys[0].secret)
    data = _shown(directory)
    lines = [
        "",
        f"Courier Gateway is running at {url}",
        f"  sources:        {', '.join(sorted(sources))}",
    ]
    if secret is not None:
        lines.append(
            f"  signing secret: {secret}   (source '{DEFAULT_SOURCE}', scheme v1;"
            f" kept in {data}/{SECRET_FILE})"
        )
    lines += [
        f"  redis:          {env['REDIS_URL']}",
        f"  store:          {env['MONGO_URI']} (database {effective.mongo_db})",
        f"  metrics:        {url}/metrics (ingress),"
        f" http://{effective.api_host}:{env['WORKER_METRICS_PORT']}/metrics (worker)",
        "",
        "In another terminal, in this directory:",
        "",
        f"  source {data}/{ENV_FILE}                       # these settings, and courier-gateway",
        "  courier-gateway sign --send            # post a fresh signed event",
        "  courier-gateway events list            # what happened to each event",
        "  courier-gateway deadletters stats      # what could not be processed, and why",
        "",
        "Or send this signed event (valid for 5 minutes):",
        "",
        curl_command(f"{url}/v1/events/{source.name}", headers, body),
        "",
        "Press Ctrl-C to stop.",
        "",
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()


def _shown(directory: Path) -> str:
    try:
        return str(directory.relative_to(Path.cwd()))
    except ValueError:
        return str(directory)


def run(lock: DataDirLock) -> int:
    """Run the local stack until Ctrl-C or SIGTERM.

    Exit 0 after a stop, 130 when interrupted during start-up, 1 when something failed.
    """
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stack = Stack(lock, stop)
    try:
        return _run(stack)
    except _InterruptedError:
        sys.stderr.write("courier-gateway dev: interrupted during start-up; stopped\n")
        return INTERRUPTED
    except StackError as error:
        sys.stderr.write(f"courier-gateway dev: {error}\n")
        return 1
    finally:
        remove_env_file(stack.directory)
        stack.stop_all()


def _run(stack: Stack) -> int:
    settings = Settings.from_env()
    if not port_is_free(settings.api_host, settings.api_port):
        raise ConfigError(f"API_PORT: port {settings.api_port} is already in use; set API_PORT")
    env, secret = _environment(settings, stack)
    load_sources(Settings.from_env(env))  # a bad sources file stops us here with its message
    command = [sys.executable, "-m", "courier_gateway"]
    stack.start("ingress", [*command, "ingress"], env=env)
    stack.start("worker", [*command, "worker"], env=env)
    url = f"http://{settings.api_host}:{settings.api_port}"
    stack.wait(lambda: _ready(url), "the ingress did not become ready")
    write_env_file(stack.directory, _exported(env, settings), bin_dir=_bin_dir())
    stack.lock.describe(f"pid {os.getpid()}, {url}")
    _announce(url, secret, env, stack.directory)
    while not stack.stop.wait(0.5):
        stack.check_children(during="the run")
    return 0
