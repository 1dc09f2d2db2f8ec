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

from redis.asyncio import Redis
from redis.exceptions import RedisError
from taskiq.acks import AcknowledgeType
from taskiq.receiver import Receiver

from courier_gateway.config import ConfigError, Settings
from courier_gateway.observability import configure_logging
from courier_gateway.queue import PROCESS_EVENT_TASK
from courier_gateway.queue.broker import CONSUMER_GROUP, make_broker
from courier_gateway.queue.maintenance import remove_gone_consumers, trim_acknowledged
from courier_gateway.queue.retry_schedule import RetrySchedule
from courier_gateway.store import open_store
from courier_gateway.worker.deadletters import DeadLetters
from courier_gateway.worker.downstream import Downstream
from courier_gateway.worker.ledger import Ledger
from courier_gateway.worker.pipeline import Pipeline, task_function
from courier_gateway.worker.retries import RetryMiddleware, RetryPolicy
from courier_gateway.worker.shipments import Shipments

__all__ = ["run_worker"]

log = logging.getLogger("courier_gateway.worker")

_MOVE_INTERVAL = 0.2


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


async def run_worker(settings: Settings) -> int:
    """Run until SIGTERM/SIGINT; return the exit code."""
    settings.require("REDIS_URL", "MONGO_URI")
    configure_logging(settings.log_level)
    downstream = _downstream(settings)
    worker_id = settings.worker_id or f"{socket.gethostname()}-{os.getpid()}"
    assert settings.redis_url is not None
    try:
        store = await open_store(settings)
    except Exception as error:
        raise ConfigError(
            f"MONGO_URI: the store is not reachable ({type(error).__name__})"
        ) from None
    redis = Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
    broker = make_broker(settings)
    ledger = Ledger(lease_seconds=settings.worker_idle_timeout_ms / 1000)
    pipeline = Pipeline(
        ledger=ledger, shipments=Shipments(), downstream=downstream, worker_id=worker_id
    )
    broker.register_task(task_function(pipeline), task_name=PROCESS_EVENT_TASK)
    schedule = RetrySchedule(redis, settings.queue_stream)
    broker.add_middlewares(
        RetryMiddleware(
            schedule=schedule,
            ledger=ledger,
            dead_letters=DeadLetters(),
            policy=RetryPolicy(
                max_attempts=settings.retry_max_attempts,
                base_delay=settings.retry_base_delay_ms / 1000,
                max_delay=settings.retry_max_delay_ms / 1000,
                jitter=settings.retry_jitter,
            ),
            worker_id=worker_id,
        )
    )
    await broker.startup()

    async def maintain() -> None:
        await trim_acknowledged(redis, settings.queue_stream)
        await remove_gone_consumers(
            redis,
            settings.queue_stream,
            CONSUMER_GROUP,
            idle_ms=max(2 * settings.worker_idle_timeout_ms, 60_000),
        )

    duties = [
        asyncio.create_task(_every(_MOVE_INTERVAL, schedule.move_due, "retries")),
        asyncio.create_task(_every(settings.stream_trim_interval_seconds, maintain, "maintenance")),
    ]
    finish = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, finish.set)
    receiver = Receiver(
        broker=broker,
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
            "worker": worker_id,
            "consumer": broker.consumer_name,
            "concurrency": settings.worker_concurrency,
            "downstream": settings.downstream_url is not None,
        },
    )
    try:
        await receiver.listen(finish)
    finally:
        log.info("worker stopping")
        for duty in duties:
            duty.cancel()
        for duty in duties:
            with contextlib.suppress(asyncio.CancelledError):
                await duty
        await broker.shutdown()
        await redis.aclose()
        if downstream is not None:
            await downstream.close()
        await store.close()
    log.info("worker stopped")
    return 0
