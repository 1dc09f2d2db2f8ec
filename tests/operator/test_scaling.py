"""Worker scaling on the queue lag read from a real Redis: up at once, down after the window."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from redis.asyncio import Redis

from courier_gateway.queue.broker import CONSUMER_GROUP, ensure_consumer_group
from courier_operator.gateway.scaling import decide
from courier_operator.kube import COURIER_GATEWAYS, DEPLOYMENTS, SECRETS, KubeClient
from tests.operator.conftest import NAMESPACE, condition, create_gateway, secret
from tests.support.kube import eventually
from tests.support.servers import RedisServer

pytestmark = pytest.mark.timeout(60)

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def _decide(**overrides: Any) -> Any:
    arguments: dict[str, Any] = {
        "current": 2,
        "lag": 0,
        "target_per_replica": 100,
        "minimum": 1,
        "maximum": 5,
        "window": timedelta(seconds=60),
        "candidate": None,
        "candidate_since": None,
        "now": NOW,
    }
    arguments.update(overrides)
    return decide(**arguments)


def test_scaling_up_is_immediate_and_bounded() -> None:
    assert _decide(lag=250).replicas == 3
    assert _decide(lag=250).reason == "ScaledUp"
    assert _decide(lag=10_000).replicas == 5
    assert _decide(lag=200).reason == "Steady"


def test_scaling_down_waits_for_the_window_and_takes_the_highest_recommendation() -> None:
    first = _decide(current=4, lag=0)
    assert (first.replicas, first.reason) == (4, "Stabilizing")
    assert first.candidate == {"replicas": 1, "since": NOW}
    # A higher recommendation inside the window raises the floor, keeps the start.
    later = _decide(
        current=4, lag=250, candidate=first.candidate, candidate_since=NOW,
        now=NOW + timedelta(seconds=30),
    )  # fmt: skip
    assert (later.replicas, later.candidate) == (4, {"replicas": 3, "since": NOW})
    done = _decide(
        current=4, lag=0, candidate=later.candidate, candidate_since=NOW,
        now=NOW + timedelta(seconds=60),
    )  # fmt: skip
    assert (done.replicas, done.reason) == (3, "ScaledDown")


def test_a_pending_scale_down_above_new_bounds_is_dropped() -> None:
    # maxReplicas lowered from 8 to 3 while a scale-down to 6 was pending: never above 3.
    decision = _decide(
        current=3, maximum=3, lag=0, candidate={"replicas": 6}, candidate_since=NOW,
        now=NOW + timedelta(seconds=120),
    )  # fmt: skip
    assert decision.replicas <= 3
    assert (decision.reason, decision.candidate) == (
        "Stabilizing",
        {"replicas": 1, "since": decision.candidate["since"]},
    )


def test_new_bounds_apply_at_once() -> None:
    assert _decide(current=8, lag=10_000).replicas == 5
    assert _decide(current=1, minimum=3).replicas == 3


async def _worker_replicas(kubectl: KubeClient, name: str) -> int | None:
    live = await kubectl.get(DEPLOYMENTS, NAMESPACE, f"{name}-worker")
    return None if live is None else int(live["spec"]["replicas"])


async def _events(kube_api: Any, reason: str) -> list[dict[str, Any]]:
    return [
        dict(event)
        for (resource, _namespace, _name), event in kube_api.objects.items()
        if resource.plural == "events" and event.get("reason") == reason
    ]


async def _scaled_twice(kube_api: Any) -> bool:
    return len(await _events(kube_api, "Scaled")) == 2


async def test_a_backlog_scales_the_worker_up_and_its_end_down_after_the_window(
    operator: Any, kube_api: Any, kubectl: KubeClient, redis_server: RedisServer
) -> None:
    stream = f"scale-{uuid.uuid4().hex[:8]}"
    redis = Redis.from_url(redis_server.url)
    try:
        await ensure_consumer_group(redis, stream)
        for index in range(35):
            await redis.xadd(stream, {"n": str(index)})
        await operator()
        window = 2
        await create_gateway(
            kubectl,
            redis_server.url,
            "scaled",
            redis={"urlSecretRef": {"name": "queue"}, "stream": stream},
            worker={
                "minReplicas": 1,
                "maxReplicas": 3,
                "targetLagPerReplica": 10,
                "scaleDownStabilizationSeconds": window,
            },
        )

        async def at(replicas: int) -> bool:
            return await _worker_replicas(kubectl, "scaled") == replicas

        await eventually(lambda: at(3))  # ceil(35 / 10) = 4, bounded by maxReplicas
        live = await kubectl.get(COURIER_GATEWAYS, NAMESPACE, "scaled")
        assert live is not None
        assert live["status"]["queue"]["lag"] == 35
        scaling = live["status"]["scaling"]
        assert (scaling["recommendedReplicas"], scaling["targetLagPerReplica"]) == (3, 10)
        assert live["status"]["worker"]["desiredReplicas"] == 3
        # kopf posts Events from a queue of its own, a moment after the handler asked.
        (event,) = await eventually(lambda: _events(kube_api, "Scaled"))
        assert event["message"] == (
            "worker replicas 1 -> 3: lag 35, target 10 per replica, bounds 1..3"
        )
        assert event["involvedObject"]["name"] == "scaled"

        # Every entry delivered and acknowledged: the lag is gone.
        await redis.xgroup_setid(stream, CONSUMER_GROUP, id="$")
        emptied = time.monotonic()

        async def stabilizing() -> dict[str, Any] | None:
            live = await kubectl.get(COURIER_GATEWAYS, NAMESPACE, "scaled")
            return live if (live or {}).get("status", {}).get("queue", {}).get("lag") == 0 else None

        live = await eventually(stabilizing)
        assert live["status"]["scaling"]["scaleDownCandidate"]["replicas"] == 1
        scaled = condition(live, "Scaled")
        assert scaled is not None and scaled["reason"] == "Stabilizing"
        assert await _worker_replicas(kubectl, "scaled") == 3

        await eventually(lambda: at(1), timeout=window + 5)
        assert time.monotonic() - emptied >= window
        assert await eventually(lambda: _scaled_twice(kube_api))
    finally:
        await redis.delete(stream)
        await redis.aclose()


async def test_an_unreachable_redis_is_reported_and_keeps_the_replicas(
    operator: Any, kubectl: KubeClient, redis_server: RedisServer
) -> None:
    await operator()
    # Port 1 on loopback: nothing listens there, the connection is refused at once.
    await kubectl.create(SECRETS, NAMESPACE, secret("unreachable", url="redis://127.0.0.1:1/0"))
    await create_gateway(
        kubectl, redis_server.url, "noredis", redis={"urlSecretRef": {"name": "unreachable"}}
    )

    async def reported() -> dict[str, Any] | None:
        found = condition(await kubectl.get(COURIER_GATEWAYS, NAMESPACE, "noredis"), "Scaled")
        return found if found and found["reason"] == "LagUnavailable" else None

    scaled = await eventually(reported)
    assert scaled["status"] == "False"
    assert "Redis unreachable" in scaled["message"]
    assert await _worker_replicas(kubectl, "noredis") == 1
