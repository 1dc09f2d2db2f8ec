"""Graceful stop with a real SIGTERM: not ready first, in-flight requests finish, then exit 0.

A request whose body is still arriving when SIGTERM lands is the in-flight request; it must be
answered 202. During ``SHUTDOWN_DELAY_SECONDS`` the process still serves but reports 503 on
``/ready`` (so a load balancer stops routing to it); after it, new connections are refused.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import StartGateway, base_env
from tests.support.servers import RedisServer
from tests.support.signing import event, signed

# Measures timing (latency under attack, restart windows): run alone by make test.
pytestmark = pytest.mark.serial

SECRET = "graceful-secret-0001"


def slow_body(body: bytes, seconds: float) -> Iterator[bytes]:
    pieces = 10
    size = len(body) // pieces + 1
    for index in range(0, len(body), size):
        time.sleep(seconds / pieces)
        yield body[index : index + size]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_drains_in_flight_requests(
    start: StartGateway, redis_server: RedisServer, workers: str
) -> None:
    ingress = start(
        "ingress",
        base_env(
            redis_server.url,
            SIGNING_SECRET=SECRET,
            SHUTDOWN_DELAY_SECONDS="1.5",
            SHUTDOWN_GRACE_SECONDS="10",
            INGRESS_WORKERS=workers,
        ),
    )
    body, headers = signed(event(), SECRET)
    result: dict[str, httpx.Response] = {}

    def in_flight() -> None:
        result["response"] = httpx.post(
            f"{ingress.url}/v1/events/courier",
            content=slow_body(body, 3.0),
            headers=headers,
            timeout=20,
        )

    sender = threading.Thread(target=in_flight)
    sender.start()
    time.sleep(0.5)
    ingress.child.process.send_signal(signal.SIGTERM)
    time.sleep(0.5)

    # Draining: still serving, but not ready.
    ready = httpx.get(f"{ingress.url}/ready", timeout=5)
    assert ready.status_code == 503
    assert ready.json()["draining"] is True

    time.sleep(1.5)  # past the delay: the listener is closed
    # Refused, with one process or several: the supervisor of several gave up its copy of the
    # listening socket at SIGTERM, so nobody holds it once the servers close theirs.
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{ingress.url}/health", timeout=2)

    sender.join(timeout=20)
    assert result["response"].status_code == 202, result["response"].text
    assert ingress.child.process.wait(timeout=15) == 0
    redis = redis_server.client()
    assert redis.xlen(ingress.stream) == 1
    redis.close()
