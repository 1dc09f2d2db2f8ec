"""Retries, dead letters and the circuit breaker, against a real downstream over HTTP.

Delays are checked for order and bounds, never exact times: attempt n waits base * 2**(n-1)
plus up to 20 % jitter, plus the retry mover's polling (0.2 s) and processing time.
"""

from __future__ import annotations

import time

from tests.conftest import StartGateway
from tests.support.downstream import Downstream
from tests.support.servers import RedisServer, StoreServer, wait_for
from tests.support.signing import event
from tests.support.stack import StackEnv, post_events

SLACK = 1.0  # mover polling + scheduling + processing, generously


def downstream_stack(
    redis_server: RedisServer, store_server: StoreServer, downstream: Downstream, **env: str
) -> StackEnv:
    return StackEnv.create(
        redis_server,
        store_server,
        **downstream.env(),
        DOWNSTREAM_TIMEOUT_MS="2000",
        **env,
    )


def test_fails_twice_then_succeeds_with_growing_gaps(
    start: StartGateway, redis_server: RedisServer, store_server: StoreServer
) -> None:
    downstream = Downstream(respond=lambda request, count: (503 if count <= 2 else 200, {})).start()
    try:
        stack = downstream_stack(redis_server, store_server, downstream, RETRY_BASE_DELAY_MS="500")
        start("ingress", stack.env)
        start("worker", stack.env, wait_ready=False)
        document = event()
        post_events(stack.url, [document])
        assert stack.wait_terminal(1, timeout=20)
        [record] = stack.find("processed_events")
        assert record["status"] == "processed"
        assert [a["outcome"] for a in record["attempts"]] == ["retry", "retry", "processed"]
        assert [a["errorCode"] for a in record["attempts"]] == ["DOWNSTREAM_UNAVAILABLE"] * 2 + [
            None
        ]
        calls = [r.at for r in downstream.requests]
        assert len(calls) == 3
        first_gap, second_gap = calls[1] - calls[0], calls[2] - calls[1]
        assert 0.5 <= first_gap <= 0.5 * 1.2 + SLACK
        assert second_gap >= 1.0
        assert second_gap <= 1.0 * 1.2 + SLACK
        assert second_gap > first_gap
        # The store step ran once: the retries after the downstream failures skipped it (the
        # ledger's appliedAt was set once, before the first downstream call).
        [shipment] = stack.find("active_shipments")
        assert len(shipment["history"]) == 1
        assert stack.count("dead_letter_events") == 0
    finally:
        downstream.stop()


def test_downstream_4xx_dead_letters_after_one_attempt(
    start: StartGateway, redis_server: RedisServer, store_server: StoreServer
) -> None:
    downstream = Downstream(respond=lambda request, count: (400, {})).start()
    try:
        stack = downstream_stack(redis_server, store_server, downstream)
        start("ingress", stack.env)
        start("worker", stack.env, wait_ready=False)
        document = event()
        post_events(stack.url, [document])
        assert stack.wait_terminal(1, timeout=20)
        [letter] = stack.find("dead_letter_events")
        assert letter["reasonCode"] == "DOWNSTREAM_REJECTED"
        assert letter["reviewStatus"] == "pending"
        assert len(letter["attempts"]) == 1
        assert letter["event"]["eventId"] == document["eventId"]
        assert letter["traceId"]
        assert len(downstream.requests) == 1
        [record] = stack.find("processed_events")
        assert record["status"] == "dead_lettered"
    finally:
        downstream.stop()


def test_downstream_down_for_good_dead_letters_after_max_attempts(
    start: StartGateway, redis_server: RedisServer, store_server: StoreServer
) -> None:
    downstream = Downstream(respond=lambda request, count: (503, {})).start()
    try:
        stack = downstream_stack(
            redis_server,
            store_server,
            downstream,
            RETRY_MAX_ATTEMPTS="4",
            RETRY_BASE_DELAY_MS="100",
            BREAKER_FAILURE_THRESHOLD="1000",
        )
        start("ingress", stack.env)
        start("worker", stack.env, wait_ready=False)
        post_events(stack.url, [event()])
        assert stack.wait_terminal(1, timeout=20)
        [letter] = stack.find("dead_letter_events")
        assert letter["reasonCode"] == "RETRIES_EXHAUSTED"
        assert "DOWNSTREAM_UNAVAILABLE" in letter["reasonMessage"]
        attempts = letter["attempts"]
        assert [a["number"] for a in attempts] == [1, 2, 3, 4]
        assert [a["outcome"] for a in attempts] == ["retry"] * 3 + ["dead_lettered"]
        assert all(a["errorCode"] == "DOWNSTREAM_UNAVAILABLE" and a["worker"] for a in attempts)
        assert all(a["startedAt"] <= a["endedAt"] for a in attempts)
        assert len(downstream.requests) == 4
    finally:
        downstream.stop()


def test_open_breaker_stops_calls_and_spends_no_attempts(
    start: StartGateway, redis_server: RedisServer, store_server: StoreServer
) -> None:
    healthy = {"now": False}
    downstream = Downstream(
        respond=lambda request, count: (200 if healthy["now"] else 503, {})
    ).start()
    try:
        stack = downstream_stack(
            redis_server,
            store_server,
            downstream,
            RETRY_MAX_ATTEMPTS="3",
            RETRY_BASE_DELAY_MS="100",
            BREAKER_FAILURE_THRESHOLD="3",
            BREAKER_COOLDOWN_SECONDS="2",
            # One job at a time: calls already in flight when the breaker opens would otherwise
            # add up to the concurrency to the count.
            WORKER_CONCURRENCY="1",
        )
        start("ingress", stack.env)
        start("worker", stack.env, wait_ready=False)
        post_events(stack.url, [event() for _ in range(10)])
        time.sleep(6)
        # Closed: 3 failures open it; then one half-open probe per 2 s cool-down at most.
        calls_while_down = len(downstream.requests)
        assert calls_while_down <= 3 + 6 / 2 + 1, calls_while_down
        assert stack.count("dead_letter_events") == 0  # waiting, not burning attempts
        healthy["now"] = True
        assert stack.wait_terminal(10, timeout=30)
        assert stack.count("processed_events", {"status": "processed"}) == 10
        for record in stack.find("processed_events"):
            assert len(record["attempts"]) <= 3
    finally:
        downstream.stop()


def test_pending_retry_survives_a_worker_restart(
    start: StartGateway, redis_server: RedisServer, store_server: StoreServer
) -> None:
    downstream = Downstream(respond=lambda request, count: (503 if count == 1 else 200, {})).start()
    try:
        stack = downstream_stack(redis_server, store_server, downstream, RETRY_BASE_DELAY_MS="4000")
        start("ingress", stack.env)
        worker = start("worker", stack.env, wait_ready=False)
        post_events(stack.url, [event()])
        assert wait_for(lambda: stack.retries_waiting() == 1, timeout=10)
        assert worker.stop() == 0
        assert stack.retries_waiting() == 1  # held in Redis, not in the stopped process
        start("worker", stack.env, wait_ready=False)
        assert stack.wait_terminal(1, timeout=20)
        time.sleep(1)
        assert len(downstream.requests) == 2
        assert stack.retries_waiting() == 0
        [record] = stack.find("processed_events")
        assert [a["outcome"] for a in record["attempts"]] == ["retry", "processed"]
    finally:
        downstream.stop()
