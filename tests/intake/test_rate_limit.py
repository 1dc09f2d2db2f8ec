"""Per-source rate limits hold across ingress processes, because the bucket lives in Redis."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import yaml

from courier_gateway.devstack.processes import free_port
from tests.conftest import StartGateway, base_env
from tests.support.servers import RedisServer
from tests.support.signing import event, signed

SECRET = "limited-secret-0002"


def test_limit_is_shared_by_two_ingress_processes(
    tmp_path: Path, start: StartGateway, redis_server: RedisServer
) -> None:
    sources = tmp_path / "sources.yaml"
    sources.write_text(
        yaml.safe_dump(
            {
                "sources": {
                    "ups": {
                        "secrets": [{"id": "u1", "value": SECRET}],
                        "rateLimit": {"perSecond": 10, "burst": 10},
                    },
                    "courier": {"secrets": [{"id": "c1", "value": SECRET}]},
                }
            }
        )
    )
    env = base_env(redis_server.url, SOURCES_FILE=str(sources))
    first = start("ingress", env)
    second = start("ingress", {**env, "API_PORT": str(free_port())})

    def post(index: int) -> int:
        url = (first if index % 2 else second).url
        body, headers = signed(event(source="ups"), SECRET)
        return httpx.post(
            f"{url}/v1/events/ups", content=body, headers=headers, timeout=10
        ).status_code

    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(post, range(80)))
    elapsed = time.monotonic() - started
    accepted = statuses.count(202)
    assert set(statuses) <= {202, 429}
    # burst + refill during the run (+1 for a token refilled while the last batch was in flight)
    assert 10 <= accepted <= 10 + 10 * elapsed + 1, (accepted, elapsed)
    assert statuses.count(429) == 80 - accepted

    # Another source on the same processes is not limited.
    body, headers = signed(event(), SECRET)
    assert (
        httpx.post(f"{first.url}/v1/events/courier", content=body, headers=headers).status_code
        == 202
    )
