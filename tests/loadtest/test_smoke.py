"""The load test end to end, briefly: correctness only, never timing.

300 requests (10 % duplicates, 10 % out-of-order events) over 20 connections through a fresh
stack with the worker, sent by wrk with the load test's own request file and script. Every
request must be answered 2xx without socket errors, every accepted event must reach a terminal
state (none lost), and exactly the duplicates sent must be suppressed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from loadtest.endtoend import wait_terminal
from loadtest.engine import run_wrk
from loadtest.metrics import scrape
from loadtest.requests import Mix, SourceSpec, generate
from loadtest.stack import DEFAULT_SECRET, LocalStack

from courier_gateway.config.sources import DEFAULT_SOURCE, Scheme

pytestmark = pytest.mark.slow

LEDGER_DUPLICATES = "courier_gateway_duplicates_total"


def test_load_run_loses_nothing_and_suppresses_every_duplicate(tmp_path: Path) -> None:
    assert shutil.which("wrk"), "wrk is not installed (make test installs it)"
    source = SourceSpec(DEFAULT_SOURCE, Scheme.V1, DEFAULT_SECRET)
    mix = Mix(events=270, sources=(source,), duplicate_ratio=0.1, out_of_order_ratio=0.1)
    assert (mix.requests, mix.duplicates) == (300, 30)
    with LocalStack(sources=(source,)) as stack:
        stack.start(worker=True)
        generated = generate(mix, tmp_path / "requests.lua")
        assert generated.out_of_order == 27
        before = scrape(stack.worker_metrics_url)
        run = run_wrk(
            stack.url, generated.path, connections=20, count=generated.requests, deadline_s=60
        )
        outcome = wait_terminal(stack.mongo_uri, stack.mongo_db, run.queued, timeout=60)
        after = scrape(stack.worker_metrics_url)
    assert stack.leftovers == []

    assert run.requests == 300
    assert run.socket_errors == 0
    assert run.non_2xx == 0, run.codes
    assert run.accepted == 300
    suppressed = run.duplicates + (
        after.total(LEDGER_DUPLICATES, stage="ledger")
        - before.total(LEDGER_DUPLICATES, stage="ledger")
    )
    assert suppressed == generated.duplicates == 30
    assert run.queued == 270
    assert outcome.complete, outcome.as_dict()
    assert outcome.terminal == 270
    assert outcome.lost == 0
    assert outcome.dead_lettered == 0
