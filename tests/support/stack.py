"""An ingress + worker stack for one test: its own stream and database on the shared servers."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpx
from pymongo import MongoClient
from pymongo.database import Database

from courier_gateway.devstack.processes import free_port
from tests.support.servers import RedisServer, StoreServer, wait_for
from tests.support.signing import signed

__all__ = ["SECRET", "StackEnv", "history", "post_events"]

SECRET = "stack-secret-0001"


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
        env.update(overrides)
        return cls(env, redis, store)

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
