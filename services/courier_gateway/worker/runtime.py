"""Running the worker process: wiring, background duties, and a graceful stop.

On SIGTERM (or SIGINT) the worker stops fetching, lets in-flight jobs finish within
``WORKER_DRAIN_TIMEOUT_MS``, leaves anything else unacknowledged for another worker (it is
reclaimed after the idle timeout), closes its connections and exits 0 as soon as it is done.

Beside the taskiq receiver the process runs two small duties, so no extra process is needed:
moving due retries from the schedule onto the stream, and stream maintenance (safe trimming,
removing consumers that are gone).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pymongo import AsyncMongoClient
from redis.asyncio import Redis
from redis.exceptions import RedisError
from taskiq.acks import AcknowledgeType
from taskiq.receiver import Receiver

from courier_gateway.config import ConfigError, Settings
from courier_gateway.observability import configure_logging, configure_tracing, shutdown_tracing
from courier_gateway.observability.metrics import declare_build
from courier_gateway.observability.worker_metrics import (
    DEAD_LETTERS_PENDING,
    WORKER_UP,
    prime_worker,
)
from courier_gateway.process import settle_garbage_collector
from courier_gateway.queue import PROCESS_EVENT_TASK
from courier_gateway.queue.broker import CONSUMER_GROUP, CourierStreamBroker, make_broker
from courier_gateway.queue.maintenance import (
    publish_queue_state,
    remove_gone_consumers,
    trim_acknowledged,
)
from courier_gateway.queue.retry_schedule import RetrySchedule
from courier_gateway.queue.state import publish_dead_letters_pending
from courier_gateway.store import DeadLetterEvent, open_store
from courier_gateway.worker.deadletters import DeadLetters
from courier_gateway.worker.downstream import Downstream
from courier_gateway.worker.ledger import Ledger
from courier_gateway.worker.pipeline import AttemptFailedError, Pipeline, task_function
from courier_gateway.worker.retries import RetryMiddleware, RetryPolicy
from courier_gateway.worker.shipments import Shipments
from courier_gateway.worker.status_server import StatusServer

__all__ = ["WorkerProcess", "run_worker"]

log = logging.getLogger("courier_gateway.worker")

_MOVE_INTERVAL = 0.2
_GAUGE_INTERVAL = 2.0


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
    while True:
        try:
            await duty()
        except (RedisError, OSError) as error:
            log.warning(
                "background duty failed; will retry", extra={"duty": name, "error": str(error)}
            )
        except Exception:
            log.exception("background duty failed", extra={"duty": name})
        await asyncio.sleep(seconds)


class WorkerProcess:
    """The worker's parts, wired from the settings: broker, pipeline, duties, status endpoint."""

    def __init__(self, settings: Settings, store: AsyncMongoClient[dict[str, Any]]) -> None:
        assert settings.redis_url is not None
        self.settings = settings
        self.store = store
        self.worker_id = settings.worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self.downstream = _downstream(settings)
        self.redis = Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
        self.schedule = RetrySchedule(self.redis, settings.queue_stream)
        self.finish = asyncio.Event()
        self.status = StatusServer(
            settings.api_host, settings.worker_metrics_port, consuming=self.consuming
        )
        self.broker = self._broker()
        self.duties: list[asyncio.Task[None]] = []

    def consuming(self) -> bool:
        """Whether the worker is fetching (not draining)."""
        return not self.finish.is_set()

    def _broker(self) -> CourierStreamBroker:
        settings = self.settings
        ledger = Ledger(lease_seconds=settings.worker_idle_timeout_ms / 1000)
        pipeline = Pipeline(
            ledger=ledger,
            shipments=Shipments(),
            downstream=self.downstream,
            worker_id=self.worker_id,
        )
        broker = make_broker(settings)
        broker.register_task(task_function(pipeline), task_name=PROCESS_EVENT_TASK)
        broker.add_middlewares(
            RetryMiddleware(
                schedule=self.schedule,
                ledger=ledger,
                dead_letters=DeadLetters(),
                policy=RetryPolicy(
                    max_attempts=settings.retry_max_attempts,
                    base_delay=settings.retry_base_delay_ms / 1000,
                    max_delay=settings.retry_max_delay_ms / 1000,
                    jitter=settings.retry_jitter,
                ),
                worker_id=self.worker_id,
            )
        )
        return broker

    async def _maintain(self) -> None:
        stream = self.settings.queue_stream
        await trim_acknowledged(self.redis, stream)
        idle_ms = max(2 * self.settings.worker_idle_timeout_ms, 60_000)
        await remove_gone_consumers(self.redis, stream, CONSUMER_GROUP, idle_ms=idle_ms)

    async def _refresh_gauges(self) -> None:
        stream = self.settings.queue_stream
        await publish_queue_state(self.redis, stream)
        letters = DeadLetterEvent.get_pymongo_collection()
        pending = await letters.count_documents({"reviewStatus": "pending"})
        DEAD_LETTERS_PENDING.set(pending)
        await publish_dead_letters_pending(self.redis, stream, pending)
        if self.downstream is not None:
            self.downstream.publish_states()

    async def start(self) -> None:
        """Create the consumer group, start the duties, the status endpoint and signal handlers."""
        await self.broker.startup()
        self.duties = [
            asyncio.create_task(_every(_MOVE_INTERVAL, self.schedule.move_due, "retries")),
            asyncio.create_task(
                _every(self.settings.stream_trim_interval_seconds, self._maintain, "maintenance")
            ),
            asyncio.create_task(_every(_GAUGE_INTERVAL, self._refresh_gauges, "gauges")),
        ]
        try:
            # Real values before the first scrape: a 0 there could trip an alert on restart.
            await self._refresh_gauges()
        except Exception:
            log.warning("could not read the queue state at start; will retry")
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
        receiver = Receiver(
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


def _known_failure(record: logging.LogRecord) -> bool:
    """Keep taskiq's own log of a failed task unless it is an attempt the pipeline logged.

    A classified failure is already one JSON line (``job attempt``, with a stack trace only for
    an unexpected error); taskiq would add a stack trace for every retry and dead letter.
    """
    failure = record.exc_info[1] if record.exc_info else None
    return not isinstance(failure, AttemptFailedError)


async def run_worker(settings: Settings) -> int:
    """Run until SIGTERM/SIGINT; return the exit code."""
    settings.require("REDIS_URL", "MONGO_URI")
    configure_logging(settings.log_level)
    logging.getLogger("taskiq.receiver.receiver").addFilter(_known_failure)
    configure_tracing("courier-gateway-worker")
    declare_build("worker")
    prime_worker()
    _downstream(settings)  # a bad downstream configuration fails before anything connects
    store = await open_store(settings)
    worker = WorkerProcess(settings, store)
    try:
        try:
            await worker.start()
        except (RedisError, OSError) as error:
            # Not a crash of ours: one line naming the setting, like any configuration error.
            raise ConfigError(
                f"REDIS_URL: Redis is not reachable ({type(error).__name__}: {error})"
            ) from None
        await worker.consume()
    finally:
        with contextlib.suppress(RedisError, OSError):
            await worker.stop()
    log.info("worker stopped")
    return 0
