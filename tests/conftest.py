"""Shared fixtures: real Redis, the real store, and real gateway processes over real sockets.

Nothing here is mocked. Every process a fixture starts is stopped in ``finally``, and the session
ends by killing anything still parented to the test run, so a failing test leaves no process.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from courier_gateway.devstack.processes import free_port
from tests.support.downstream import Downstream
from tests.support.servers import GatewayProcess, RedisServer, StoreServer, start_gateway
from tests.support.sources import write_sources
from tests.support.stack import cluster_queue, use_cluster
from tests.support.topologies import ClusterSetup, SentinelSetup, cluster_setup, sentinel_setup

StartGateway = Callable[..., GatewayProcess]


@pytest.fixture(scope="session", autouse=True)
def _no_process_left_behind() -> Iterator[None]:
    yield
    leftovers = psutil.Process().children(recursive=True)
    for process in leftovers:
        process.kill()
    psutil.wait_procs(leftovers, timeout=5)


@pytest.fixture(scope="session", autouse=True)
def _queue_on_a_cluster(request: pytest.FixtureRequest) -> None:
    """With ``CG_TEST_QUEUE=cluster``, start the session cluster before any stack is built."""
    if cluster_queue():
        cluster: ClusterSetup = request.getfixturevalue("redis_cluster")
        use_cluster(cluster.url)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def store_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreServer]:
    server = StoreServer(tmp_path_factory.mktemp("store"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def base_env(redis_url: str, **overrides: str) -> dict[str, str]:
    """The environment of a test gateway: its own port and stream, quiet logs."""
    env = {
        "REDIS_URL": redis_url,
        "API_PORT": str(free_port()),
        "QUEUE_STREAM": f"test-{uuid.uuid4().hex[:10]}",
        "LOG_LEVEL": "INFO",
        "SECRETS_RELOAD_SECONDS": "0.5",
    }
    env.update(overrides)
    return env


@pytest.fixture
def start(tmp_path: Path) -> Iterator[StartGateway]:
    """Start gateway roles for one test; all are stopped when the test ends."""
    started: list[GatewayProcess] = []

    def _start(
        role: str = "ingress", env: dict[str, str] | None = None, **kwargs: object
    ) -> GatewayProcess:
        log_path = tmp_path / f"{role}-{len(started)}.log"
        process = start_gateway(role, env or {}, log_path=log_path, **kwargs)  # type: ignore[arg-type]
        started.append(process)
        return process

    try:
        yield _start
    finally:
        for process in reversed(started):
            process.stop(timeout=10)


@pytest.fixture
def downstream() -> Iterator[Downstream]:
    """A real HTTP downstream answering 200 (modules override it with other behaviours)."""
    server = Downstream().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def ingress(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer, store_server: StoreServer
) -> Iterator[GatewayProcess]:
    """One ingress shared by a module, with every scheme's source (see ``support/sources.py``)."""
    directory = tmp_path_factory.mktemp("ingress")
    env = base_env(
        redis_server.url,
        MONGO_URI=store_server.uri,
        SOURCES_FILE=str(write_sources(directory / "sources.yaml")),
        MAX_BODY_BYTES="4096",
    )
    process = start_gateway("ingress", env, log_path=directory / "ingress.log")
    try:
        yield process
    finally:
        process.stop(timeout=10)


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterSetup]:
    """A real Redis Cluster (3 primaries, 3 replicas) shared by the tests of one process."""
    with cluster_setup(tmp_path_factory.mktemp("cluster")) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSetup]:
    """A primary, a replica and three sentinels shared by the tests of one process."""
    with sentinel_setup(tmp_path_factory.mktemp("sentinel")) as setup:
        yield setup
