"""An ingress + worker stack for one test: its own stream and database on the shared servers.

``CG_TEST_QUEUE=cluster`` puts every stack's queue on a real Redis Cluster (3 primaries, 3
replicas) with six partitions instead of the standalone server: ``make test-cluster`` runs the
end-to-end modules that way. The readers below (``queue_client``, ``stream_length``,
``pending``, ``retries_waiting``) see the queue whichever topology it is on.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpx
from pymongo import MongoClient
from pymongo.database import Database
from redis import Redis
from redis.cluster import RedisCluster

from courier_gateway.devstack.processes import free_port
from courier_gateway.queue.layout import QueueLayout
from courier_gateway.queue.registry import CONSUMER_GROUP
from tests.support.servers import RedisServer, StoreServer, wait_for
from tests.support.signing import signed

__all__ = ["CLUSTER_PARTITIONS", "SECRET", "StackEnv", "cluster_queue", "history", "post_events"]

SECRET = "stack-secret-0001"
#: Partitions of a stack whose queue is on the cluster (``CG_TEST_QUEUE=cluster``).
CLUSTER_PARTITIONS = 6
#: The seed URL of the session's cluster, set by the conftest fixture when one runs.
_CLUSTER_URL: list[str] = []


def cluster_queue() -> bool:
    """Whether this run puts every stack's queue on a Redis Cluster."""
    return os.environ.get("CG_TEST_QUEUE", "") == "cluster"


def use_cluster(url: str) -> None:
    """Record the session cluster that stacks must use (called by the conftest fixture)."""
    _CLUSTER_URL[:] = [url]


@dataclass
class StackEnv:
    """The shared environment of an ingress and its workers, and readers for the test."""

    env: dict[str, str]
    redis: RedisServer
    store: StoreServer

    @classmethod
    def create(cls, redis: RedisServer, store: StoreServer, **overrides: str) -> StackEnv:
        env = {
            "REDIS_URL": redis.url,
            "MONGO_URI": store.uri,
            "MONGO_DB": f"t_{uuid.uuid4().hex[:10]}",
            "API_PORT": str(free_port()),
            "QUEUE_STREAM": f"test-{uuid.uuid4().hex[:10]}",
            "SIGNING_SECRET": SECRET,
            "LOG_LEVEL": "INFO",
            "WORKER_IDLE_TIMEOUT_MS": "3000",
            "RETRY_BASE_DELAY_MS": "200",
            "STORE_TIMEOUT_MS": "2000",
            "WORKER_METRICS_PORT": "0",  # tests that scrape the worker give it a free port
        }
        if cluster_queue():
            assert _CLUSTER_URL, "CG_TEST_QUEUE=cluster but no cluster was started"
            env.update(
                REDIS_URL=_CLUSTER_URL[0],
                REDIS_MODE="cluster",
                QUEUE_PARTITIONS=str(CLUSTER_PARTITIONS),
            )
        env.update(overrides)
        return cls(env, redis, store)

    @property
    def layout(self) -> QueueLayout:
        """The queue's partitions as the stack's processes see them."""
        return QueueLayout(
            self.env["QUEUE_STREAM"],
            int(self.env.get("QUEUE_PARTITIONS", "1")),
            tagged=self.env.get("REDIS_MODE") == "cluster",
        )

    def queue_client(self) -> Redis | RedisCluster:
        """A client of the Redis the queue is on (standalone or cluster)."""
        if self.env.get("REDIS_MODE") == "cluster":
            return RedisCluster.from_url(self.env["REDIS_URL"])
        return Redis.from_url(self.env["REDIS_URL"])

    def stream_length(self) -> int:
        """Entries in every partition's stream."""
        client = self.queue_client()
        try:
            return sum(int(client.xlen(stream)) for stream in self.layout.streams)
        finally:
            client.close()

    def pending(self) -> int:
        """Delivered, unacknowledged entries over every partition."""
        client = self.queue_client()
        try:
            return sum(
                int(client.xpending(stream, CONSUMER_GROUP)["pending"])
                for stream in self.layout.streams
                if client.exists(stream)
            )
        finally:
            client.close()

    def retries_waiting(self) -> int:
        """Retries and deferrals held in every partition's schedule."""
        client = self.queue_client()
        try:
            return sum(int(client.zcard(f"{s}:retries")) for s in self.layout.streams)
        finally:
            client.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.env['API_PORT']}"

    def db(self) -> Database[dict[str, Any]]:
        client: MongoClient[dict[str, Any]] = MongoClient(self.store.uri, tz_aware=True)
        return client[self.env["MONGO_DB"]]

    def count(self, collection: str, query: dict[str, Any] | None = None) -> int:
        database = self.db()
        try:
            return database[collection].count_documents(query or {})
        finally:
            database.client.close()

    def find(self, collection: str, query: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        database = self.db()
        try:
            return list(database[collection].find(query or {}))
        finally:
            database.client.close()

    def wait_terminal(self, expected: int, timeout: float) -> bool:
        """Wait until ``expected`` ledger records are processed or dead-lettered."""
        return wait_for(
            lambda: (
                self.count("processed_events", {"status": {"$in": ["processed", "dead_lettered"]}})
                >= expected
            ),
            timeout=timeout,
            interval=0.3,
        )


def post_events(
    url: str, events: Iterable[dict[str, Any]], client: httpx.Client | None = None
) -> list[httpx.Response]:
    """Sign and post each event to the default source; return the responses."""
    own = client is None
    http = client or httpx.Client(timeout=10)
    try:
        responses = []
        for document in events:
            body, headers = signed(document, SECRET)
            responses.append(http.post(f"{url}/v1/events/courier", content=body, headers=headers))
        return responses
    finally:
        if own:
            http.close()


def history(shipment: dict[str, Any]) -> list[dict[str, Any]]:
    """A shipment's history entries, oldest first (the store keeps them as a map)."""
    return sorted(shipment["history"].values(), key=lambda entry: entry["occurredAt"])
