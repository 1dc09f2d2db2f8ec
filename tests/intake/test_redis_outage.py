"""202 means durable: with Redis gone or hung, intake answers 503 in bounded time, never 202.

Redis is really stopped (SIGTERM) and really hung (SIGSTOP), and the same ingress process
resumes accepting once Redis is back, including after Redis lost its script cache.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import StartGateway, base_env
from tests.support.servers import RedisServer, wait_for
from tests.support.signing import event, signed

SECRET = "outage-secret-0001"
TIMEOUT_MS = 500


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def post(url: str) -> tuple[httpx.Response, float]:
    body, headers = signed(event(), SECRET)
    started = time.monotonic()
    response = httpx.post(f"{url}/v1/events/courier", content=body, headers=headers, timeout=10)
    return response, time.monotonic() - started


def assert_unavailable(response: httpx.Response, elapsed: float) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["errorCode"] == "INTAKE_UNAVAILABLE"
    assert response.json()["acknowledged"] is False
    assert int(response.headers["retry-after"]) >= 1
    assert elapsed < TIMEOUT_MS / 1000 + 1


def test_redis_stopped_then_restarted(start: StartGateway, own_redis: RedisServer) -> None:
    ingress = start(
        "ingress",
        base_env(own_redis.url, SIGNING_SECRET=SECRET, ENQUEUE_TIMEOUT_MS=str(TIMEOUT_MS)),
    )
    pid = ingress.child.process.pid
    assert post(ingress.url)[0].status_code == 202

    own_redis.stop()
    for _ in range(5):
        assert_unavailable(*post(ingress.url))
    assert wait_for(lambda: httpx.get(f"{ingress.url}/ready").status_code == 503, timeout=5)
    assert httpx.get(f"{ingress.url}/health").json()["redis"] == "unavailable"

    own_redis.start()  # empty Redis: the stream and the script cache are gone
    assert wait_for(lambda: post(ingress.url)[0].status_code == 202, timeout=10)
    assert wait_for(lambda: httpx.get(f"{ingress.url}/ready").status_code == 200, timeout=5)
    client = own_redis.client()
    assert client.xlen(ingress.stream) >= 1
    client.close()
    assert ingress.child.process.pid == pid and ingress.child.process.poll() is None


def test_redis_hung_answers_503_within_the_enqueue_timeout(
    start: StartGateway, own_redis: RedisServer
) -> None:
    ingress = start(
        "ingress",
        base_env(own_redis.url, SIGNING_SECRET=SECRET, ENQUEUE_TIMEOUT_MS=str(TIMEOUT_MS)),
    )
    assert post(ingress.url)[0].status_code == 202
    assert own_redis.child is not None
    redis_process = own_redis.child.process
    redis_process.send_signal(signal.SIGSTOP)
    try:
        for _ in range(3):
            assert_unavailable(*post(ingress.url))
    finally:
        redis_process.send_signal(signal.SIGCONT)
    assert wait_for(lambda: post(ingress.url)[0].status_code == 202, timeout=10)
