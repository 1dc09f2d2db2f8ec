"""Running the worker process: wiring, background duties, and a graceful stop.

On SIGTERM (or SIGINT) the worker stops fetching, lets in-flight jobs finish within
``WORKER_DRAIN_TIMEOUT_MS``, then releases the jobs still running (their leases are given back
and their messages left unacknowledged, reclaimed by another worker after the idle timeout),
and only then closes its connections; it exits 0 as soon as it is done.

Beside the taskiq receiver the process runs small duties, so no extra process is needed: moving
due retries from the schedule onto the stream, stream maintenance (safe trimming, removing
consumers that are gone), renewing the leases of long jobs, and the gauges.

A Redis or store outage ends none of this: every loop waits it out with capped, jittered
backoff (see :mod:`courier_gateway.dependency`), ``/ready`` reports it, and consuming resumes
by itself when the dependency is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from pymongo import AsyncMongoClient
from taskiq.acks import AcknowledgeType

from courier_gateway.config import ConfigError, Settings
from courier_gateway.dependency import (
    REDIS_UNAVAILABLE,
    STORE_UNAVAILABLE,
    Backoff,
    Dependency,
)
from courier_gateway.observability import configure_logging, configure_tracing, shutdown_tracing
from courier_gateway.observability.metrics import declare_build
from courier_gateway.observability.worker_metrics import (
    DEAD_LETTERS_PENDING,
    DEFERRAL_OLDEST_AGE,
    WORKER_UP,
    prime_worker,
)
from courier_gateway.process import settle_garbage_collector
from courier_gateway.queue import PROCESS_EVENT_TASK
from courier_gateway.queue.broker import (
    CONSUMER_GROUP,
    HEALTH_CHECK_SECONDS,
    CourierStreamBroker,
    make_broker,
)
from courier_gateway.queue.layout import QueueLayout
from courier_gateway.queue.maintenance import (
    publish_queue_state,
    remove_gone_consumers,
    trim_acknowledged,
)
from courier_gateway.queue.retry_schedule import PartitionedSchedule
from courier_gateway.queue.state import publish_dead_letters_pending
from courier_gateway.queue.topology import connect, redis_variable
from courier_gateway.store import DeadLetterEvent, open_store
from courier_gateway.worker.deadletters import DeadLetters
from courier_gateway.worker.downstream import Downstream
from courier_gateway.worker.leases import LeaseLostError, Leases
from courier_gateway.worker.ledger import Ledger
from courier_gateway.worker.pipeline import AttemptFailedError, Pipeline, task_function
from courier_gateway.worker.receiver import CourierReceiver, quiet_library_logs
from courier_gateway.worker.retries import RetryMiddleware, RetryPolicy
from courier_gateway.worker.shipments import Shipments
from courier_gateway.worker.status_server import Status, StatusServer

__all__ = ["WorkerProcess", "run_worker"]

log = logging.getLogger("courier_gateway.worker")

T = TypeVar("T")

_MOVE_INTERVAL = 0.2
_GAUGE_INTERVAL = 2.0
# Cancelled jobs (past the drain timeout) get this long to give their leases back.
_RELEASE_SECONDS = 5.0
# How duties space their rounds while a dependency is unreachable.
_BACKOFF = Backoff()


def _downstream(settings: Settings) -> Downstream | None:
    if settings.downstream_url is None:
        return None
    if settings.downstream_signing_secret is None:
        raise ConfigError("DOWNSTREAM_SIGNING_SECRET: is required when DOWNSTREAM_URL is set")
    return Downstream(
        settings.downstream_url,
        settings.downstream_signing_secret.get_secret_value().encode(),
        timeout=settings.downstream_timeout_ms / 1000,
        threshold=settings.breaker_failure_threshold,
        cooldown=settings.breaker_cooldown_seconds,
    )


async def _every(seconds: float, duty: Callable[[], Awaitable[object]], name: str) -> None:
    """Run ``duty`` every ``seconds``; while a dependency is unreachable, back off instead.

    Unreachable dependencies are logged by their :class:`Dependency` (once per outage), so a
    failing round is silent here; anything else is unexpected and logged with its traceback.
    """
    failures = 0
    while True:
        try:
            await duty()
        except (*REDIS_UNAVAILABLE, *STORE_UNAVAILABLE):
            failures += 1
        except Exception:
            failures += 1
            log.exception("background duty failed", extra={"duty": name})
        else:
            failures = 0
        await asyncio.sleep(max(seconds, _BACKOFF.delay(failures)) if failures else seconds)


class WorkerProcess:
    """The worker's parts, wired from the settings: broker, pipeline, duties, status endpoint."""

    def __init__(self, settings: Settings, store: AsyncMongoClient[dict[str, Any]]) -> None:
        self.settings = settings
        self.store = store
        self.worker_id = settings.worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self.downstream = _downstream(settings)
        self.lease_seconds = settings.worker_idle_timeout_ms / 1000
        self.redis_link = Dependency("redis", REDIS_UNAVAILABLE)
        self.store_link = Dependency("store", STORE_UNAVAILABLE)
        self.redis = connect(settings, timeout=5, health_check_interval=HEALTH_CHECK_SECONDS)
        self.layout = QueueLayout.from_settings(settings)
        self.schedule = PartitionedSchedule(
            self.redis,
            self.layout,
            min_replicas=settings.enqueue_min_replicas,
            wait_ms=min(settings.enqueue_timeout_ms, 4000),
        )
        self.finish = asyncio.Event()
        self.status = StatusServer(
            settings.api_host, settings.worker_metrics_port, status=self.current_status
        )
        self.ledger = Ledger(lease_seconds=self.lease_seconds)
        self.leases = Leases(lambda: self.ledger.collection, lease_seconds=self.lease_seconds)
        self.broker = self._broker()
        self.receiver: CourierReceiver | None = None
        # Neither a read nor a finished job for this long, while consuming, is being stuck:
        # far beyond a read round (<= 1 s), a backoff step (<= 5 s) and a job (bounded by the
        # store and downstream timeouts and the acknowledgement's patience of one lease).
        self.stuck_after = max(120.0, 4 * self.lease_seconds)
        self.duties: list[asyncio.Task[None]] = []

    def consuming(self) -> bool:
        """Whether the worker is fetching (not draining)."""
        return not self.finish.is_set()

    def current_status(self) -> Status:
        """What ``/ready`` and ``/health`` report now."""
        consuming = self.consuming()
        progress = self.broker.last_poll
        if self.receiver is not None:
            progress = max(progress, self.receiver.heartbeat)
        idle = time.monotonic() - progress
        return Status(
            consuming=consuming,
            redis=self.redis_link.reachable,
            store=self.store_link.reachable,
            stuck_for=idle if consuming and idle > self.stuck_after else None,
        )

    def _broker(self) -> CourierStreamBroker:
        settings = self.settings
        pipeline = Pipeline(
            ledger=self.ledger,
            shipments=Shipments(),
            downstream=self.downstream,
            worker_id=self.worker_id,
            leases=self.leases,
        )
        broker = make_broker(settings, self.redis_link)
        broker.register_task(task_function(pipeline), task_name=PROCESS_EVENT_TASK)
        broker.add_middlewares(
            RetryMiddleware(
                schedule=self.schedule,
                ledger=self.ledger,
                dead_letters=DeadLetters(),
                policy=RetryPolicy(
                    max_attempts=settings.retry_max_attempts,
                    base_delay=settings.retry_base_delay_ms / 1000,
                    max_delay=settings.retry_max_delay_ms / 1000,
                    jitter=settings.retry_jitter,
                    defer_max=settings.defer_max_seconds,
                ),
                worker_id=self.worker_id,
                redis=self.redis_link,
                patience=self.lease_seconds,
            )
        )
        return broker

    async def _on_redis(self, work: Callable[[], Awaitable[T]]) -> T:
        return await self.redis_link.call(work, patience=0)

    async def _on_store(self, work: Callable[[], Awaitable[T]]) -> T:
        return await self.store_link.call(work, patience=0)

    async def _move_due(self) -> None:
        await self._on_redis(lambda: self.schedule.move_due(self.broker.streams))

    async def _maintain(self) -> None:
        idle_ms = max(2 * self.settings.worker_idle_timeout_ms, 60_000)

        async def maintain() -> None:
            for stream in self.broker.streams:
                await trim_acknowledged(self.redis, stream)
                await remove_gone_consumers(self.redis, stream, CONSUMER_GROUP, idle_ms=idle_ms)

        await self._on_redis(maintain)

    async def _renew_leases(self) -> None:
        if self.leases.due():  # no round trip (and no news about the store) otherwise
            await self._on_store(self.leases.renew)

    async def _refresh_gauges(self) -> None:
        stream = self.settings.queue_stream
        if self.downstream is not None:
            self.downstream.publish_states()
        await self._on_redis(lambda: publish_queue_state(self.redis, stream))
        DEFERRAL_OLDEST_AGE.set(
            await self._on_redis(lambda: self.schedule.oldest_deferral_seconds(self.broker.streams))
        )
        letters = DeadLetterEvent.get_pymongo_collection()
        pending = await self._on_store(lambda: letters.count_documents({"reviewStatus": "pending"}))
        DEAD_LETTERS_PENDING.set(pending)
        await self._on_redis(lambda: publish_dead_letters_pending(self.redis, stream, pending))

    async def start(self) -> None:
        """Create the consumer group, start the duties, the status endpoint and signal handlers."""
        quiet_library_logs((AttemptFailedError, LeaseLostError, asyncio.CancelledError))
        await self.broker.startup()
        trim_every = self.settings.stream_trim_interval_seconds
        self.duties = [
            asyncio.create_task(_every(_MOVE_INTERVAL, self._move_due, "retries")),
            asyncio.create_task(_every(trim_every, self._maintain, "maintenance")),
            asyncio.create_task(_every(self.leases.renew_every, self._renew_leases, "leases")),
            asyncio.create_task(_every(_GAUGE_INTERVAL, self._refresh_gauges, "gauges")),
        ]
        try:
            # Real values before the first scrape: a 0 there could trip an alert on restart.
            await self._refresh_gauges()
        except (*REDIS_UNAVAILABLE, *STORE_UNAVAILABLE):
            pass  # logged by the dependency; the duty retries
        if self.settings.worker_metrics_port:
            try:
                await self.status.start()
            except OSError as error:
                raise ConfigError(
                    f"WORKER_METRICS_PORT: cannot listen on port"
                    f" {self.settings.worker_metrics_port} ({error.strerror})"
                ) from None
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.finish.set)
        settle_garbage_collector()

    async def consume(self) -> None:
        """Consume until SIGTERM, then drain in-flight jobs within the drain timeout."""
        settings = self.settings
        receiver = self.receiver = CourierReceiver(
            broker=self.broker,
            executor=ThreadPoolExecutor(max_workers=1),
            validate_params=False,
            max_async_tasks=settings.worker_concurrency,
            max_prefetch=0,
            propagate_exceptions=True,
            run_startup=False,
            ack_type=AcknowledgeType.WHEN_SAVED,
            wait_tasks_timeout=settings.worker_drain_timeout_ms / 1000,
        )
        log.info(
            "worker started",
            extra={
                "worker": self.worker_id,
                "consumer": self.broker.consumer_name,
                "concurrency": settings.worker_concurrency,
                "downstream": settings.downstream_url is not None,
            },
        )
        WORKER_UP.set(1)
        try:
            await receiver.listen(self.finish)
        finally:
            WORKER_UP.set(0)
            # Past the drain timeout: the jobs still running give their keys back now, while
            # the store and Redis are still open, instead of failing against closed clients.
            await receiver.release_running(_RELEASE_SECONDS)

    async def stop(self) -> None:
        """Stop the duties and close every connection."""
        log.info("worker stopping")
        for duty in self.duties:
            duty.cancel()
        for duty in self.duties:
            with contextlib.suppress(asyncio.CancelledError):
                await duty
        await self.broker.shutdown()
        await self.redis.aclose()
        if self.downstream is not None:
            await self.downstream.close()
        await self.store.close()
        await self.status.stop()
        shutdown_tracing()


async def run_worker(settings: Settings) -> int:
    """Run until SIGTERM/SIGINT; return the exit code."""
    settings.require_redis()
    settings.require("MONGO_URI")
    configure_logging(settings.log_level)
    configure_tracing("courier-gateway-worker")
    declare_build("worker")
    prime_worker()
    _downstream(settings)  # a bad downstream configuration fails before anything connects
    store = await open_store(settings)
    worker = WorkerProcess(settings, store)
    try:
        try:
            await worker.start()
        except REDIS_UNAVAILABLE as error:
            # Not a crash of ours: one line naming the setting, like any configuration error.
            raise ConfigError(
                f"{redis_variable(settings)}: Redis is not reachable"
                f" ({type(error).__name__}: {error})"
            ) from None
        await worker.consume()
    finally:
        with contextlib.suppress(*REDIS_UNAVAILABLE):
            await worker.stop()
    log.info("worker stopped")
    return 0
