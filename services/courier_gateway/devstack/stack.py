"""Starting, announcing and stopping the local stack (see the package docstring)."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

import httpx
import orjson

from courier_gateway.cli.sign import build_request, curl_command, sample_event
from courier_gateway.config import ConfigError, Settings, load_sources
from courier_gateway.config.sources import DEFAULT_SOURCE
from courier_gateway.devstack.processes import (
    Child,
    free_port,
    port_is_free,
    redis_command,
    start_child,
    store_command,
    tcp_open,
    wait_until,
)

__all__ = ["run"]

_START_TIMEOUT = 60.0


def _dev_secret(data_dir: Path) -> str:
    """The dev signing secret: kept in ``.data/`` so it survives restarts of the stack."""
    path = data_dir / "signing-secret"
    if path.exists():
        return path.read_text().strip()
    secret = secrets.token_urlsafe(24)
    path.write_text(secret + "\n")
    path.chmod(0o600)
    return secret


def _executable(name: str, hint: str) -> str:
    found = shutil.which(name) or str(Path(sys.executable).parent / name)
    if not Path(found).exists():
        raise ConfigError(f"{name} not found: {hint}")
    return found


def _start_redis(data_dir: Path, children: list[Child]) -> str:
    binary = _executable(
        "redis-server", "install it (apt-get install redis-server) or set REDIS_URL"
    )
    port = free_port()
    redis_dir = data_dir / "redis"
    redis_dir.mkdir(exist_ok=True)
    child = start_child(
        "redis",
        redis_command(binary, port, redis_dir, append_only=True),
        log_file=data_dir / "redis.log",
    )
    children.append(child)
    if not wait_until(lambda: tcp_open(port), timeout=_START_TIMEOUT, child=child):
        raise ConfigError(f"redis-server did not start; see {data_dir / 'redis.log'}")
    return f"redis://127.0.0.1:{port}/0"


def _start_store(data_dir: Path, children: list[Child]) -> str:
    binary = _executable(
        "nx-27017",
        "install the embedded store (pip install 'courier-gateway[embedded]') or set MONGO_URI",
    )
    port = free_port()
    store_dir = data_dir / "store"
    store_dir.mkdir(exist_ok=True)
    child = start_child(
        "store",
        store_command(
            binary,
            port,
            store_dir,
            log_file=data_dir / "store.log",
            pid_file=data_dir / "store.pid",
        ),
        log_file=data_dir / "store.out",
    )
    children.append(child)
    if not wait_until(lambda: tcp_open(port), timeout=_START_TIMEOUT, child=child):
        raise ConfigError(f"the embedded store did not start; see {data_dir / 'store.log'}")
    return f"mongodb://127.0.0.1:{port}/"


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/ready", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def _announce(url: str, secret: str | None, settings: Settings) -> None:
    sources = load_sources(settings)
    source = sources.get(DEFAULT_SOURCE) or next(iter(sources.values()))
    key = source.keys[0]
    if source.scheme is not None:
        body = orjson.dumps(sample_event(source.name))
        headers = build_request(body, scheme=source.scheme, secret=key.secret)
        query = ""
    else:  # a provider's source: its sample, signed the provider's way
        import time
        from urllib.parse import urlencode

        from courier_gateway.adapters.signing import sign_request

        adapter = source.adapter
        body = (adapter.document.sample or "{}").encode()
        signed = sign_request(adapter, body, key.text or "", now=int(time.time()))
        headers, query = signed.headers, ("?" + urlencode(signed.query) if signed.query else "")
    lines = [
        "",
        f"Courier Gateway is running at {url}",
        f"  sources:        {', '.join(sorted(sources))}",
    ]
    if secret is not None:
        lines.append(f"  signing secret: {secret}   (source '{DEFAULT_SOURCE}', scheme v1)")
    lines += [
        "",
        "Send a signed event (valid for 5 minutes; `courier-gateway sign` makes fresh ones):",
        "",
        curl_command(f"{url}/v1/events/{source.name}{query}", headers, body),
        "",
        "Press Ctrl-C to stop.",
        "",
    ]
    sys.stdout.write("\n".join(lines))
    sys.stdout.flush()


def run(*, data_dir: str) -> int:
    """Run the local stack until Ctrl-C or SIGTERM; exit 0, or 1 when a child failed."""
    settings = Settings.from_env()
    if not port_is_free(settings.api_host, settings.api_port):
        raise ConfigError(f"API_PORT: port {settings.api_port} is already in use; set API_PORT")
    directory = Path(data_dir).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    secret: str | None = None
    if settings.signing_secret is None and settings.sources_file is None:
        secret = _dev_secret(directory)
        env["SIGNING_SECRET"] = secret
    elif settings.signing_secret is not None:
        secret = settings.signing_secret.get_secret_value()

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    children: list[Child] = []
    try:
        if not settings.redis_url:
            env["REDIS_URL"] = _start_redis(directory, children)
        if not settings.mongo_uri:
            env["MONGO_URI"] = _start_store(directory, children)
        if "WORKER_METRICS_PORT" not in env:
            env["WORKER_METRICS_PORT"] = str(free_port())
        effective = Settings.from_env(env)
        load_sources(effective)  # a bad sources file stops us here with its message
        ingress = start_child(
            "ingress", [sys.executable, "-m", "courier_gateway", "ingress"], env=env
        )
        children.append(ingress)
        children.append(
            start_child("worker", [sys.executable, "-m", "courier_gateway", "worker"], env=env)
        )
        url = f"http://{settings.api_host}:{settings.api_port}"
        if not wait_until(lambda: _ready(url), timeout=_START_TIMEOUT, child=ingress):
            sys.stderr.write("courier-gateway dev: the ingress did not become ready\n")
            return 1
        _announce(url, secret, effective)
        sys.stdout.write(
            f"Metrics: {url}/metrics (ingress),"
            f" http://{settings.api_host}:{env['WORKER_METRICS_PORT']}/metrics (worker)\n\n"
        )
        sys.stdout.flush()
        while not stop.wait(0.5):
            for child in children:
                if child.process.poll() is not None:
                    sys.stderr.write(
                        f"courier-gateway dev: {child.name} exited"
                        f" with {child.process.returncode}\n"
                    )
                    return 1
        return 0
    finally:
        for child in reversed(children):
            child.stop()
