"""Prometheus metrics of real processes count exactly the traffic that was sent.

What is proved:

- An ingress running ``INGRESS_WORKERS=2`` (prometheus-client multiprocess mode) serves one
  aggregated ``/metrics``: after a known mix of accepted events, intake duplicates, bad
  signatures, events that are dead-lettered, a request to an unknown source, an invalid payload
  and a wrong content type, sent concurrently over fresh connections so that both processes
  take a share, every intake counter and the latency histogram's count equal the traffic
  exactly, and both processes did write metrics (so the aggregation really added two files).
  A ``PROMETHEUS_MULTIPROC_DIR`` that does not exist yet is created by the serving command.
- The worker's ``/metrics`` counts each terminal outcome exactly (processed, dead-lettered, no
  retry, no ledger duplicate), its dead-letter gauge reaches the number of pending dead letters,
  and both roles export ``courier_gateway_build_info``; neither exports ``*_created`` series,
  and the queue gauge ``courier_gateway_queue_lag_messages`` is also exported under its
  deprecated former name ``courier_gateway_queue_lag``, with the same values.
- The worker's ``/health`` and ``/ready`` answer 200 JSON while it consumes; after SIGTERM,
  while it drains an in-flight job, ``/ready`` turns 503 and ``/health`` stays 200, and the job
  still completes before the worker exits 0.
"""

from __future__ import annotations

import shutil
import signal
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from courier_gateway import __version__
from courier_gateway.devstack.processes import free_port
from tests.conftest import StartGateway
from tests.support.downstream import Downstream
from tests.support.servers import RedisServer, StoreServer, wait_for
from tests.support.signing import event, signed
from tests.support.stack import SECRET, StackEnv, post_events

Samples = list[tuple[str, dict[str, str], float]]


def scrape(url: str) -> Samples:
    """Every sample of a ``/metrics`` page as ``(name, labels, value)``."""
    response = httpx.get(f"{url}/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return [
        (sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    ]


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels`` (0 when there is none)."""
    return sum(
        value
        for sample_name, sample_labels, value in samples
        if sample_name == name and labels.items() <= sample_labels.items()
    )


def requests_per_process(directory: Path) -> list[float]:
    """The intake requests each process counted, read from its own multiprocess file.

    Files that count no request (the serving command's parent primes its series too) are left
    out, so the list has one entry per process that served requests.
    """
    counts = []
    for path in sorted(directory.glob("counter_*.db")):
        with tempfile.TemporaryDirectory() as alone:
            shutil.copy(path, alone)
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=alone)  # type: ignore[no-untyped-call]
            samples = [
                (sample.name, dict(sample.labels), sample.value)
                for family in text_string_to_metric_families(generate_latest(registry).decode())
                for sample in family.samples
            ]
        count = total(samples, "courier_gateway_intake_requests_total")
        if count:
            counts.append(count)
    return counts


def worker_status(port: int, path: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2)


def wait_worker_ready(port: int) -> None:
    def ready() -> bool:
        try:
            return worker_status(port, "/ready").status_code == 200
        except httpx.HTTPError:
            return False

    assert wait_for(ready, timeout=20, interval=0.1), "the worker's /ready never answered 200"


def test_metrics_of_two_ingress_processes_and_a_worker_are_exact(
    start: StartGateway, redis_server: RedisServer, store_server: StoreServer, tmp_path: Path
) -> None:
    metrics_dir = tmp_path / "prometheus-multiproc"
    metrics_dir.mkdir()
    worker_port = free_port()
    stack = StackEnv.create(redis_server, store_server, WORKER_METRICS_PORT=str(worker_port))
    ingress = start(
        "ingress",
        {**stack.env, "INGRESS_WORKERS": "2", "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)},
    )
    start("worker", stack.env, wait_ready=False)
    wait_worker_ready(worker_port)

    accepted = [event() for _ in range(14)]  # S: processed
    teleported = [event(eventType="shipment.teleported") for _ in range(3)]  # K: dead-lettered
    duplicates = accepted[:4]  # D: the same events again (fresh signatures)
    bad_signatures = [event() for _ in range(3)]  # B: signed with another secret
    s, k, d, b = len(accepted), len(teleported), len(duplicates), len(bad_signatures)

    def send(build: Callable[[], tuple[str, bytes, dict[str, str]]]) -> int:
        path, body, headers = build()
        # A fresh connection per request, so the kernel spreads them over both processes.
        return httpx.post(
            f"{ingress.url}{path}", content=body, headers=headers, timeout=10
        ).status_code

    def good(document: dict[str, object]) -> Callable[[], tuple[str, bytes, dict[str, str]]]:
        return lambda: ("/v1/events/courier", *signed(document, SECRET))

    def forged(document: dict[str, object]) -> Callable[[], tuple[str, bytes, dict[str, str]]]:
        return lambda: ("/v1/events/courier", *signed(document, "not-the-stack-secret"))

    def unknown_source() -> tuple[str, bytes, dict[str, str]]:
        return ("/v1/events/nobody", *signed(event(), SECRET))

    def invalid_payload() -> tuple[str, bytes, dict[str, str]]:
        return ("/v1/events/courier", *signed({"eventId": "evt_only"}, SECRET))

    def wrong_content_type() -> tuple[str, bytes, dict[str, str]]:
        body, headers = signed(event(), SECRET)
        return "/v1/events/courier", body, {**headers, "content-type": "text/plain"}

    first_wave = [
        *map(good, accepted + teleported),
        *map(forged, bad_signatures),
        unknown_source,
        invalid_payload,
        wrong_content_type,
    ]
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(send, first_wave))
        # Duplicates only after their originals were acknowledged.
        duplicate_statuses = list(pool.map(send, map(good, duplicates)))
    assert statuses == [202] * (s + k) + [401] * b + [404, 400, 415]
    assert duplicate_statuses == [202] * d
    events_route_requests = len(first_wave) + d

    # --- The ingress: one scrape, both processes aggregated, exact values. ---
    served = requests_per_process(metrics_dir)
    assert len(served) == 2, f"expected both ingress processes to have served requests: {served}"
    assert sum(served) == events_route_requests
    intake = scrape(ingress.url)
    requests = "courier_gateway_intake_requests_total"
    assert total(intake, requests, source="courier", outcome="accepted") == s + k
    assert total(intake, requests, source="courier", outcome="duplicate") == d
    assert total(intake, requests, source="courier", outcome="invalid_signature") == b
    assert total(intake, requests, source="courier", outcome="invalid_payload") == 1
    assert total(intake, requests, source="courier", outcome="unsupported_media_type") == 1
    assert total(intake, requests, source="unknown", outcome="unknown_source") == 1
    assert total(intake, requests) == events_route_requests
    failures = "courier_gateway_signature_failures_total"
    assert total(intake, failures, source="courier", reason="mismatch") == b
    assert total(intake, failures) == b
    assert total(intake, "courier_gateway_events_enqueued_total", source="courier") == s + k
    assert total(intake, "courier_gateway_events_enqueued_total") == s + k
    assert total(intake, "courier_gateway_duplicates_total", stage="intake") == d
    assert total(intake, "courier_gateway_legacy_signatures_total") == 0
    latency = "courier_gateway_intake_latency_seconds_count"
    assert total(intake, latency) == events_route_requests
    assert total(intake, latency, source="unknown") == 1
    assert total(intake, "courier_gateway_intake_latency_seconds_bucket", le="+Inf") == (
        events_route_requests
    )
    assert total(intake, "courier_gateway_build_info", role="ingress", version=__version__) == 1

    # --- The worker: every accepted event reaches its terminal outcome exactly once. ---
    assert stack.wait_terminal(s + k, timeout=30)
    outcomes = "courier_gateway_worker_outcomes_total"

    def worker_settled() -> bool:
        samples = scrape(f"http://127.0.0.1:{worker_port}")
        return (
            total(samples, outcomes, outcome="processed") == s
            and total(samples, outcomes, outcome="dead_lettered") == k
            and total(samples, "courier_gateway_dead_letters_pending") == k
        )

    # The dead-letter gauge is refreshed every 2 s.
    assert wait_for(worker_settled, timeout=10, interval=0.2)
    work = scrape(f"http://127.0.0.1:{worker_port}")
    assert total(work, outcomes, outcome="processed") == s
    assert total(work, outcomes, outcome="dead_lettered") == k
    assert total(work, outcomes, outcome="retried") == 0
    assert total(work, outcomes, outcome="duplicate") == 0
    assert total(work, outcomes) == s + k
    assert total(work, "courier_gateway_duplicates_total", stage="ledger") == 0
    assert total(work, "courier_gateway_dead_letters_pending") == k
    assert total(work, "courier_gateway_processing_seconds_count", outcome="processed") == s
    assert total(work, "courier_gateway_end_to_end_seconds_count", outcome="processed") == s
    assert total(work, "courier_gateway_end_to_end_seconds_count", outcome="dead_lettered") == k
    assert total(work, "courier_gateway_worker_up") == 1
    # Units in names; the former name of the queue gauge stays one release, with equal values.
    lag = {
        tuple(sorted(labels.items())): value
        for name, labels, value in work
        if name == "courier_gateway_queue_lag_messages"
    }
    old = {
        tuple(sorted(labels.items())): value
        for name, labels, value in work
        if name == "courier_gateway_queue_lag"
    }
    assert set(lag) == {(("state", "pending"),), (("state", "undelivered"),)}
    assert old == lag
    # No *_created series next to the counters and histograms, in either role.
    assert [name for name, _, _ in work + intake if name.endswith("_created")] == []
    assert total(work, "courier_gateway_build_info", role="worker", version=__version__) == 1
    assert total(work, "courier_gateway_build_info", role="ingress") == 0
    assert stack.count("dead_letter_events", {"reviewStatus": "pending"}) == k


def test_a_metrics_directory_that_does_not_exist_yet_is_created(
    start: StartGateway, redis_server: RedisServer, store_server: StoreServer, tmp_path: Path
) -> None:
    metrics_dir = tmp_path / "not-yet" / "prometheus-multiproc"
    stack = StackEnv.create(redis_server, store_server)
    ingress = start(
        "ingress",
        {**stack.env, "INGRESS_WORKERS": "2", "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)},
    )
    assert [r.status_code for r in post_events(stack.url, [event(), event()])] == [202, 202]
    samples = scrape(ingress.url)
    assert total(samples, "courier_gateway_intake_requests_total", outcome="accepted") == 2
    assert any(metrics_dir.glob("counter_*.db"))


def test_worker_health_and_readiness_turn_on_sigterm_while_draining(
    start: StartGateway, redis_server: RedisServer, store_server: StoreServer
) -> None:
    downstream = Downstream(delay=2.0).start()
    try:
        worker_port = free_port()
        stack = StackEnv.create(
            redis_server,
            store_server,
            WORKER_METRICS_PORT=str(worker_port),
            DOWNSTREAM_URL=downstream.url,
            DOWNSTREAM_SIGNING_SECRET="downstream-secret-metrics",
            WORKER_DRAIN_TIMEOUT_MS="10000",
        )
        start("ingress", stack.env)
        worker = start("worker", stack.env, wait_ready=False)
        wait_worker_ready(worker_port)
        health = worker_status(worker_port, "/health")
        assert health.status_code == 200
        assert health.headers["content-type"] == "application/json"
        assert health.json() == {"status": "ok", "consuming": True}
        ready = worker_status(worker_port, "/ready")
        assert ready.status_code == 200
        assert ready.json() == {
            "status": "ready",
            "consuming": True,
            "redis": "connected",
            "store": "connected",
        }
        assert worker_status(worker_port, "/nothing").status_code == 404

        [response] = post_events(stack.url, [event()])
        assert response.status_code == 202
        assert wait_for(lambda: len(downstream.requests) == 1, timeout=15)
        worker.child.process.send_signal(signal.SIGTERM)  # the job is in flight downstream

        def draining() -> bool:
            try:
                return worker_status(worker_port, "/ready").status_code == 503
            except httpx.HTTPError:
                return False

        assert wait_for(draining, timeout=1.5, interval=0.05), "/ready did not turn 503"
        not_ready = worker_status(worker_port, "/ready")
        assert not_ready.json() == {
            "status": "not_ready",
            "consuming": False,
            "redis": "connected",
            "store": "connected",
        }
        still_alive = worker_status(worker_port, "/health")
        assert still_alive.status_code == 200
        assert still_alive.json() == {"status": "ok", "consuming": False}
        assert worker.child.process.wait(timeout=15) == 0
        assert stack.count("processed_events", {"status": "processed"}) == 1
    finally:
        downstream.stop()
