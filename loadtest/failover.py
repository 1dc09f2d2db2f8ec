"""``python -m loadtest.failover``: what a Redis primary's death costs, with and without WAIT.

For Sentinel (1 primary, 1 replica, 3 sentinels) and Cluster (3+3, six partitions), and for
``ENQUEUE_MIN_REPLICAS`` 0 and 1: a real ingress and worker under load (up to 200 requests a
second), the primary SIGKILLed after 3 s, 8 s more load; then how many events answered 202 never
reached the ledger (lost), and how long intake answered 503 after the kill. Each run gets fresh
Redis processes. Results go to stdout and ``docs/benchmarks/failover.json``.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.failover import RATE, failover_under_load
from tests.support.servers import GatewayProcess, RedisServer, StoreServer, start_gateway
from tests.support.stack import StackEnv
from tests.support.topologies import cluster_setup, sentinel_setup

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "failover.json"


@contextmanager
def _gateway(stack: StackEnv, workdir: Path) -> Iterator[list[GatewayProcess]]:
    started = [
        start_gateway("ingress", stack.env, log_path=workdir / "ingress.log"),
        start_gateway("worker", stack.env, log_path=workdir / "worker.log", wait_ready=False),
    ]
    try:
        yield started
    finally:
        for process in started:
            process.stop()


def _run(
    workdir: Path, store: StoreServer, env: dict[str, str], kill: Callable[[], object]
) -> dict[str, Any]:
    stack = StackEnv.create(RedisServer(workdir), store, WORKER_CONCURRENCY="20", **env)
    with _gateway(stack, workdir):
        outcome = failover_under_load(stack, kill, settle=45)
    return {
        "accepted": outcome.accepted,
        "lost": len(outcome.lost),
        "refused": sum(n for code, n in outcome.statuses.items() if code != 202),
        "unavailableSeconds": round(outcome.unavailable_seconds, 2),
    }


def _sentinel(workdir: Path, store: StoreServer, replicas: int) -> dict[str, Any]:
    with sentinel_setup(workdir / "redis") as setup:
        env = {
            "REDIS_MODE": "sentinel",
            "REDIS_URL": "",
            "REDIS_SENTINELS": setup.sentinels_env(),
            "REDIS_SENTINEL_MASTER": setup.master_name,
            "ENQUEUE_MIN_REPLICAS": str(replicas),
            "ENQUEUE_TIMEOUT_MS": "1000",
        }
        return _run(workdir, store, env, setup.kill_primary)


def _cluster(workdir: Path, store: StoreServer, replicas: int) -> dict[str, Any]:
    with cluster_setup(workdir / "redis") as setup:
        victim = max(setup.primaries())
        env = {
            "REDIS_MODE": "cluster",
            "REDIS_URL": f"redis://127.0.0.1:{min(setup.primaries())}/0",
            "QUEUE_PARTITIONS": "6",
            "ENQUEUE_MIN_REPLICAS": str(replicas),
            "ENQUEUE_TIMEOUT_MS": "1000",
        }
        return _run(workdir, store, env, lambda: setup.kill_node(victim))


def main() -> int:
    """Run the four failovers; print and record the figures."""
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="cg-failover-") as scratch:
        root = Path(scratch)
        store = StoreServer(root / "store")
        (root / "store").mkdir()
        store.start()
        try:
            for topology, run in (("sentinel", _sentinel), ("cluster", _cluster)):
                for replicas in (0, 1):
                    workdir = root / f"{topology}-{replicas}"
                    workdir.mkdir()
                    figures = run(workdir, store, replicas)
                    results.append({"topology": topology, "minReplicas": replicas, **figures})
                    sys.stdout.write(json.dumps(results[-1]) + "\n")
        finally:
            store.stop()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"offeredRate": RATE, "runs": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
