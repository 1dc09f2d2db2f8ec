"""``python -m loadtest bench``: the benchmark behind ``docs/benchmarks.md``.

Every scenario runs against a freshly started local stack (``loadtest/stack.py``):

- (a) the original's own scenario: 1,000 requests with 10 % duplicates over 100 connections,
  worker running, then wait until every accepted event is terminal;
- (b) 30 s at 100 connections and (c) 30 s at 500 connections, intake only (no worker, so the
  intake is measured alone; every queued event must be on the stream);
- (d) the bare Sanic endpoint with the same number of processes, 100 connections, 30 s: the
  reference for the intake/bare ratio;
- (e) worker drain: a backlog of N events accepted with no worker, then the worker is started and
  timed until all are terminal (events/s, CPU ms and store round trips per event);
- (f) provider adapters, intake only, 100 connections: AfterShip single events (body HMAC) and
  Ship24 batches of 10 events (bearer), each for half the duration: requests/s, events/s and
  latency next to (b), every queued event checked on the stream;
- adapter mapping cost: ``loadtest/adapter_cost.py`` in-process, CPU µs per event for every
  built-in adapter's documented sample;
- (g) Redis Cluster (``loadtest/cluster.py``): intake and drain on three primaries with 1 and 6
  queue partitions, and the intake cost of ``ENQUEUE_MIN_REPLICAS=1``; also runnable alone
  (``python -m loadtest cluster``), appended to ``docs/benchmarks/cluster.json``.

(b), (c) and (d) run ``--runs`` times each, interleaved, and are reported as medians. Every
bench run is appended to ``docs/benchmarks/results.json``; ``docs/benchmarks.md`` shows the
latest run in full and the earlier ones as history, and ``docs/benchmarks/latency.png`` plots
the latest latency percentiles.
"""

from __future__ import annotations

import json
import math
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from courier_gateway.config.sources import DEFAULT_SOURCE, Scheme
from loadtest import report
from loadtest.adapter_cost import measure as measure_adapter_cost
from loadtest.adapter_requests import AdapterMix, generate_adapter_requests
from loadtest.endtoend import StreamCheck, check_stream, histogram_percentiles, wait_terminal
from loadtest.engine import run_wrk
from loadtest.machine import describe
from loadtest.metrics import STORE_OPERATIONS, Scrape, scrape
from loadtest.requests import Generated, Mix, SourceSpec, generate
from loadtest.stack import DEFAULT_SECRET, LocalStack, bare_server

__all__ = ["TARGETS", "BenchOptions", "render_markdown", "run_bench", "run_cluster"]

Result = dict[str, Any]

_SOURCE = SourceSpec(DEFAULT_SOURCE, Scheme.V1, DEFAULT_SECRET)
_LEDGER_DUPLICATES = "courier_gateway_duplicates_total"
_OUTCOMES = "courier_gateway_worker_outcomes_total"

#: The issue's targets: (key, what, comparison, threshold, unit, the original's figure).
TARGETS: tuple[tuple[str, str, str, float, str, str], ...] = (
    ("accepted_rps_100", "accepted req/s at 100 connections (b)", ">=", 6000, "", "about 575"),
    ("p99_100", "p99 latency at 100 connections (b)", "<=", 25, " ms", "270 ms"),
    ("intake_bare_ratio", "intake ÷ bare Sanic throughput (b ÷ d)", ">=", 0.7, "", "-"),
    ("errors", "errors: non-2xx + socket errors, all scenarios", "<=", 0, "", "not measured"),
    ("lost", "events lost, all scenarios", "<=", 0, "", "lost on a worker crash"),
    ("drain_rate", "worker drain rate (e)", ">=", 92, " events/s", "33-168 (median 46)"),
    ("round_trips", "store round trips per event (e)", "<=", 3, "", "-"),
    ("cpu_per_event", "worker CPU per event (e)", "<=", 1, " ms", "-"),
    ("rss_ingress", "peak RSS per ingress process", "<=", 100, " MB", "API 149-232 MB"),
    ("rss_worker", "peak RSS of the worker", "<=", 150, " MB", "119 MB"),
    ("adapter_cost", "adapter mapping CPU per event, slowest built-in", "<=", 30, " µs", "-"),
)

#: The original's figures for the same scenarios (shared/reference/original-measured.md).
ORIGINAL = {
    "a": ("457", "203 ms", "318 ms", "403 ms"),
    "b": ("about 575", "170 ms", "230 ms", "270 ms"),
    "c": ("575-640", "about 790 ms", "850-1,230 ms", "910-1,380 ms"),
}


@dataclass(frozen=True)
class BenchOptions:
    """What the bench runs and where it writes."""

    runs: int = 3
    duration: float = 30.0
    drain_events: int = 3000
    original_requests: int = 1000
    connections: int = 100
    high_connections: int = 500
    max_rate: float = 10_000.0
    events_per_shipment: float = 3.0
    docs: Path = Path("docs")
    note: str | None = None
    #: Scenario (g): seconds and rounds of each intake sub-run, backlog of each drain sub-run,
    #: and whether ``run_bench`` runs it.
    cluster_duration: float = 5.0
    cluster_runs: int = 3
    cluster_drain_events: int = 1500
    cluster: bool = True


def _say(message: str) -> None:
    sys.stderr.write(f"[bench] {message}\n")
    sys.stderr.flush()


def _describe_run(result: Result) -> str:
    latency = result["latencyMs"]
    return (
        f"{result['requests']:,} requests in {result['durationSeconds']:.1f} s:"
        f" {result['acceptedPerSecond']:,.0f} accepted/s, p50 {latency['p50']:.1f} ms,"
        f" p99 {latency['p99']:.1f} ms, errors {result['errors']}, lost {result['lost']}"
    )


def _timed_events(options: BenchOptions) -> int:
    """Unique events a timed run needs so that wrk never has to re-send (cycle) the list."""
    return max(1000, math.ceil(options.duration * options.max_rate))


def _mix(options: BenchOptions, events: int, *, duplicate_ratio: float = 0.0) -> Mix:
    return Mix(
        events=events,
        sources=(_SOURCE,),
        duplicate_ratio=duplicate_ratio,
        events_per_shipment=options.events_per_shipment,
    )


def scenario_original(options: BenchOptions, workdir: Path) -> Result:
    """(a) 1,000 requests, 10 % duplicates, 100 connections, worker running, wait until terminal."""
    mix = _mix(options, round(options.original_requests * 0.9), duplicate_ratio=0.1)
    with LocalStack(sources=(_SOURCE,)) as stack:
        stack.start(worker=True)
        generated = generate(mix, workdir / "a.lua")
        before = scrape(stack.worker_metrics_url)
        run = run_wrk(
            stack.url, generated.path, connections=options.connections, count=generated.requests
        )
        e2e = wait_terminal(stack.mongo_uri, stack.mongo_db, run.queued, timeout=600)
        after = scrape(stack.worker_metrics_url)
        e2e.histogram_ms = histogram_percentiles(before, after)
        ledger = after.total(_LEDGER_DUPLICATES, stage="ledger") - before.total(
            _LEDGER_DUPLICATES, stage="ledger"
        )
        usage = stack.sampler.usage()
    return report.scenario_result(
        name="a",
        title=f"original's test: {generated.requests:,} requests, 10 % duplicates, worker",
        run=run,
        connections=options.connections,
        generated=generated.as_dict(),
        end_to_end=e2e,
        usage=usage,
        duplicates_sent=generated.duplicates,
        ledger_duplicates=ledger,
    )


def scenario_intake(options: BenchOptions, workdir: Path, *, name: str, connections: int) -> Result:
    """(b), (c): a timed run against the intake alone; every queued event must be on the stream."""
    with LocalStack(sources=(_SOURCE,)) as stack:
        stack.start(worker=False)
        generated = generate(_mix(options, _timed_events(options)), workdir / f"{name}.lua")
        result = intake_on(
            stack,
            generated,
            name=name,
            connections=connections,
            duration=options.duration,
            check=lambda queued: check_stream(stack.redis_url, stack.stream, queued),
        )
        generated.path.unlink(missing_ok=True)
    return result


def intake_on(
    stack: LocalStack,
    generated: Generated,
    *,
    name: str,
    connections: int,
    duration: float,
    check: Callable[[int], StreamCheck],
    title: str | None = None,
) -> Result:
    """A timed wrk run against a started stack's intake; ``check`` counts what reached Redis."""
    run = run_wrk(stack.url, generated.path, connections=connections, duration=duration)
    stream = check(run.queued)
    return report.scenario_result(
        name=name,
        title=title or f"{duration:g} s at {connections} connections, intake only",
        run=run,
        connections=connections,
        generated=generated.as_dict(),
        stream=stream,
        usage=stack.sampler.usage(),
    )


def scenario_bare(options: BenchOptions, requests_file: Path) -> Result:
    """(d) the bare Sanic endpoint, same processes, same connections and duration."""
    with bare_server(workers=2) as (url, sampler):
        run = run_wrk(
            url, requests_file, connections=options.connections, duration=options.duration
        )
        usage = sampler.usage()
    return report.scenario_result(
        name="d",
        title=f"bare Sanic endpoint, {options.duration:g} s at {options.connections} connections",
        run=run,
        connections=options.connections,
        usage=usage,
    )


def scenario_drain(options: BenchOptions, workdir: Path) -> Result:
    """(e) a backlog accepted with no worker, then the worker started and timed to the end."""
    with LocalStack(sources=(_SOURCE,)) as stack:
        stack.start(worker=False)
        return drain_on(
            stack,
            options,
            workdir,
            name="e",
            check=lambda queued: check_stream(stack.redis_url, stack.stream, queued),
        )


def drain_on(
    stack: LocalStack,
    options: BenchOptions,
    workdir: Path,
    *,
    name: str,
    check: Callable[[int], StreamCheck],
    count: int | None = None,
) -> Result:
    """Accept a backlog of ``count`` events on a stack started without its worker, then start
    the worker and time it until every event is terminal (the figures of (e))."""
    count = options.drain_events if count is None else count
    generated = generate(_mix(options, count), workdir / f"{name}.lua")
    run = run_wrk(stack.url, generated.path, connections=options.connections, count=count)
    generated.path.unlink(missing_ok=True)
    stream = check(run.queued)
    launched = time.monotonic()
    stack.start_worker()
    ready_at = datetime.now(UTC)
    startup = time.monotonic() - launched
    # Events done before this point are left out of the per-event figures: the metrics
    # scrape counts them, the CPU baseline is taken right after it.
    before = scrape(stack.worker_metrics_url)
    stack.sampler.reset("worker")
    e2e = wait_terminal(stack.mongo_uri, stack.mongo_db, run.queued, timeout=max(600.0, count / 10))
    after = scrape(stack.worker_metrics_url)
    cpu = stack.sampler.cpu_seconds("worker")
    e2e.histogram_ms = histogram_percentiles(before, after)
    usage = stack.sampler.usage()
    start = e2e.first_claim or ready_at
    end = e2e.last_terminal or ready_at
    window = max((end - start).total_seconds(), 1e-6)
    operations = after.by_label(STORE_OPERATIONS, "command")
    earlier = before.by_label(STORE_OPERATIONS, "command")
    per_command = {cmd: round(total - earlier.get(cmd, 0.0)) for cmd, total in operations.items()}
    processed = e2e.terminal
    measured = _terminal_outcomes(after) - _terminal_outcomes(before)
    return {
        "name": name,
        "title": f"worker drain of a {count:,}-event backlog",
        "events": count,
        "command": " ".join(run.command),
        "accepted": run.accepted,
        "queued": run.queued,
        "errors": run.non_2xx + run.socket_errors,
        "stream": stream.as_dict(),
        "workerStartupSeconds": round(startup, 2),
        "drainSeconds": round(window, 2),
        "fromReadySeconds": round(max((end - ready_at).total_seconds(), 0.0), 2),
        "eventsPerSecond": round(processed / window, 1),
        "workerCpuSeconds": round(cpu, 3),
        "eventsMeasured": measured,
        "workerCpuMsPerEvent": round(cpu * 1000 / measured, 3) if measured else None,
        "storeOperations": per_command,
        "storeRoundTripsPerEvent": (
            round(sum(per_command.values()) / measured, 2) if measured else None
        ),
        "endToEnd": e2e.as_dict(),
        "lost": e2e.lost + stream.lost,
        "processes": [entry.as_dict() for entry in usage],
        "peakRssMB": {
            "worker": round(
                max((u.peak_rss for u in usage if u.label.startswith("worker")), default=0)
                / (1024 * 1024),
                1,
            )
        },
    }


_ADAPTER_KEY = "bench-provider-key-0001"
#: (adapter, events per request) of scenario (f).
_ADAPTER_RUNS = (("aftership", 1), ("ship24", 10))


def scenario_adapters(options: BenchOptions, workdir: Path) -> list[Result]:
    """(f) provider adapters through the intake alone: one timed run per adapter."""
    sources = {
        name: {"adapter": name, "secrets": [{"id": "bench", "value": _ADAPTER_KEY}]}
        for name, _ in _ADAPTER_RUNS
    }
    path = workdir / "f-sources.yaml"
    path.write_text(yaml.safe_dump({"sources": sources}))
    duration = max(2.0, options.duration / 2)
    results: list[Result] = []
    with LocalStack(env={"SOURCES_FILE": str(path)}) as stack:
        stack.start(worker=False)
        queued_before = 0
        for name, per_request in _ADAPTER_RUNS:
            # Enough unique requests that wrk never re-sends one (a batch is slower per request).
            count = max(500, math.ceil(duration * options.max_rate / per_request / 2))
            mix = AdapterMix(
                name, name, _ADAPTER_KEY, count, events=per_request, run_id=f"f{name[:2]}"
            )
            generated = generate_adapter_requests(mix, workdir / f"f-{name}.lua")
            run = run_wrk(
                stack.url, generated.path, connections=options.connections, duration=duration
            )
            generated.path.unlink(missing_ok=True)
            answered = run.statuses.get(200, 0)
            events = answered * per_request
            # wrk cycles through the list when the run outlasts it: a request sent again is a
            # duplicate (answered 200, nothing new on the stream), not a loss. The list is sized
            # for max_rate; a fast batch adapter can still outrun it.
            resent = max(0, answered - mix.requests)
            stream = check_stream(
                stack.redis_url,
                stack.stream,
                (answered - resent) * per_request,
                baseline=queued_before,
            )
            queued_before += stream.entries
            seconds = max(run.duration_s, 1e-6)
            results.append(
                {
                    "name": f"f-{name}",
                    "title": f"{name}, {per_request} event(s) per request, {duration:g} s",
                    "adapter": name,
                    "eventsPerRequest": per_request,
                    "command": " ".join(run.command),
                    "requests": run.requests,
                    "answered": answered,
                    "requestsPerSecond": round(answered / seconds, 1),
                    "eventsPerSecond": round(events / seconds, 1),
                    "latencyMs": run.latency_ms,
                    "errors": run.non_2xx + run.socket_errors,
                    "stream": stream.as_dict(),
                    "resentRequests": resent,
                    "lost": stream.lost,
                    "generated": generated.as_dict(),
                }
            )
    return results


def _terminal_outcomes(metrics: Scrape) -> int:
    """Jobs the worker finished as processed or dead-lettered, per its own counter."""
    return round(
        metrics.total(_OUTCOMES, outcome="processed")
        + metrics.total(_OUTCOMES, outcome="dead_lettered")
    )


def _measure_adapters(options: BenchOptions, workdir: Path) -> list[Result]:
    _say("(f) provider adapters …")
    runs = scenario_adapters(options, workdir)
    for run in runs:
        _say(
            f"(f) {run['adapter']}: {run['requestsPerSecond']:,.0f} req/s,"
            f" {run['eventsPerSecond']:,.0f} events/s, p99 {run['latencyMs'].get('p99', 0):.1f} ms,"
            f" errors {run['errors']}, re-sent {run['resentRequests']:,} (duplicates),"
            f" lost {run['lost']}"
        )
    return runs


def _measure(name: str, action: Callable[[], Result]) -> Result:
    _say(f"{name} …")
    result = action()
    if "latencyMs" in result:
        _say(f"{name}: {_describe_run(result)}")
    return result


def _goal(comparison: str, threshold: float, unit: str) -> str:
    if threshold == 0:
        return "0"
    sign = "≥" if comparison == ">=" else "≤"
    number = report.format_number(threshold if threshold % 1 else int(threshold), 1)
    return f"{sign} {number}{unit}"


def evaluate_targets(
    scenarios: dict[str, Result],
    drain: Result,
    adapter_cost: list[Result] | None = None,
    adapter_runs: list[Result] | None = None,
) -> list[dict[str, Any]]:
    """The measured value of each target and whether it is met."""
    b, d = scenarios["b"], scenarios["d"]
    gateway = [scenarios[name] for name in ("a", "b", "c")]
    ingress_rss = [
        process["peakRssMB"]
        for result in [*gateway, drain]
        for process in result.get("processes", [])
        if process["label"].startswith("ingress")
    ]
    worker_rss = [
        process["peakRssMB"]
        for result in (scenarios["a"], drain)
        for process in result.get("processes", [])
        if process["label"].startswith("worker")
    ]
    measured: dict[str, float | None] = {
        "accepted_rps_100": b["acceptedPerSecond"],
        "p99_100": b["latencyMs"].get("p99"),
        "intake_bare_ratio": (
            round(b["throughput"] / d["throughput"], 2) if d["throughput"] else None
        ),
        "errors": sum(
            result.get("errors") or 0
            for result in [*scenarios.values(), drain, *(adapter_runs or [])]
        ),
        "lost": sum(result.get("lost") or 0 for result in [*gateway, drain, *(adapter_runs or [])]),
        "drain_rate": drain["eventsPerSecond"],
        "round_trips": drain["storeRoundTripsPerEvent"],
        "cpu_per_event": drain["workerCpuMsPerEvent"],
        "rss_ingress": max(ingress_rss, default=None),
        "rss_worker": max(worker_rss, default=None),
        "adapter_cost": max(
            (row["mapUsPerEvent"] for row in adapter_cost or [] if row["format"] == "mapped"),
            default=None,
        ),
    }
    rows = []
    for key, what, comparison, threshold, unit, original in TARGETS:
        value = measured[key]
        met = None
        if value is not None:
            met = value >= threshold if comparison == ">=" else value <= threshold
        rows.append(
            {
                "key": key,
                "what": what,
                "target": _goal(comparison, threshold, unit),
                "measured": value,
                "unit": unit,
                "met": met,
                "original": original,
            }
        )
    return rows


def run_bench(options: BenchOptions, *, command: str) -> Result:
    """Run every scenario; append the record to results.json and rewrite the Markdown and plot."""
    started = datetime.now(UTC)
    machine = describe()
    _say(f"machine: {machine['nproc']} CPUs, {machine['cpuModel']}, load {machine['loadAverage']}")
    workdir = Path(tempfile.mkdtemp(prefix="loadtest-bench-"))
    try:
        original = _measure("(a) original's scenario", lambda: scenario_original(options, workdir))
        runs: dict[str, list[Result]] = {"b": [], "c": [], "d": []}
        bare_file = generate(_mix(options, _timed_events(options)), workdir / "bare.lua").path
        for round_number in range(1, options.runs + 1):
            label = f"run {round_number}/{options.runs}"
            runs["b"].append(
                _measure(
                    f"(b) {label}",
                    lambda: scenario_intake(
                        options, workdir, name="b", connections=options.connections
                    ),
                )
            )
            runs["c"].append(
                _measure(
                    f"(c) {label}",
                    lambda: scenario_intake(
                        options, workdir, name="c", connections=options.high_connections
                    ),
                )
            )
            runs["d"].append(_measure(f"(d) {label}", lambda: scenario_bare(options, bare_file)))
        drain = _measure("(e) worker drain", lambda: scenario_drain(options, workdir))
        _say(
            f"(e): {drain['eventsPerSecond']:,.1f} events/s,"
            f" {drain['workerCpuMsPerEvent']} CPU ms/event,"
            f" {drain['storeRoundTripsPerEvent']} round trips/event, lost {drain['lost']}"
        )
        adapter_runs = _measure_adapters(options, workdir)
        _say("adapter mapping cost …")
        adapter_cost = measure_adapter_cost(2.0)
        cluster = None
        if options.cluster:
            from loadtest.cluster import scenario_cluster

            cluster = scenario_cluster(options, workdir, command=command)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    scenarios = {"a": original} | {
        name: report.median_result(items) for name, items in runs.items()
    }
    record: Result = {
        "startedAt": started.isoformat(timespec="seconds"),
        "finishedAt": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "note": options.note,
        "options": {
            key: str(value) if isinstance(value, Path) else value
            for key, value in asdict(options).items()
        },
        "machine": machine,
        "scenarios": list(scenarios.values()),
        "drain": drain,
        "adapterRuns": adapter_runs,
        "adapterCost": adapter_cost,
        "targets": evaluate_targets(scenarios, drain, adapter_cost, adapter_runs),
    }
    write_outputs(record, options.docs, cluster=cluster)
    return record


def run_cluster(options: BenchOptions, *, command: str) -> Result:
    """Run scenario (g) alone; append it to cluster.json and rewrite benchmarks.md."""
    from loadtest.cluster import scenario_cluster

    workdir = Path(tempfile.mkdtemp(prefix="loadtest-cluster-bench-"))
    try:
        record = scenario_cluster(options, workdir, command=command)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    write_outputs(None, options.docs, cluster=record)
    return record


def _append(path: Path, record: Result) -> list[Result]:
    """Append ``record`` to the JSON list in ``path`` (written atomically); the whole list."""
    history: list[Result] = json.loads(path.read_text()) if path.exists() else []
    history.append(record)
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(history, indent=1, ensure_ascii=False) + "\n")
    temporary.replace(path)
    return history


def _load(path: Path) -> list[Result]:
    return json.loads(path.read_text()) if path.exists() else []


def write_outputs(record: Result | None, docs: Path, *, cluster: Result | None = None) -> None:
    """Append ``record`` to results.json (and ``cluster``, a (g) run, to cluster.json), draw the
    plot, and rewrite benchmarks.md. With ``record`` None only (g) is recorded."""
    directory = docs / "benchmarks"
    directory.mkdir(parents=True, exist_ok=True)
    history_path = directory / "results.json"
    cluster_path = directory / "cluster.json"
    if record is not None:
        history = _append(history_path, record)
        report.plot_latency(
            record["scenarios"],
            directory / "latency.png",
            title=(
                f"Latency by percentile ({record['startedAt']}, {record['machine']['nproc']} CPUs)"
            ),
        )
    else:
        history = _load(history_path)
    clusters = _append(cluster_path, cluster) if cluster is not None else _load(cluster_path)
    (docs / "benchmarks.md").write_text(render_markdown(history, clusters))


def _fmt(value: Any, unit: str = "") -> str:
    if isinstance(value, float):
        digits = 2 if abs(value) < 10 else (1 if abs(value) < 100 else 0)
        return report.format_number(value, digits, unit)
    return report.format_number(value, 0, unit)


def _machine_table(machine: dict[str, Any]) -> str:
    rows = [
        ("CPUs (nproc)", machine["nproc"]),
        ("CPU model", machine["cpuModel"]),
        ("memory", f"{machine['memoryGB']} GB"),
        ("kernel", machine["kernel"]),
        ("load average at start (1, 5, 15 min)", ", ".join(map(str, machine["loadAverage"]))),
        ("Python", machine["python"]),
        ("redis-server", machine["redisServer"]),
        ("wrk", machine["wrk"]),
        ("Sanic", machine["sanic"]),
        ("nx-27017", machine["nx27017"]),
        ("courier-gateway", machine["courierGateway"]),
    ]
    return "| | |\n|---|---|\n" + "\n".join(f"| {name} | {value} |" for name, value in rows) + "\n"


def _targets_table(targets: list[dict[str, Any]]) -> str:
    rows = ["| target | goal | measured | met | original |", "|---|---|---:|---|---|"]
    for row in targets:
        met = {True: "yes", False: "**no**", None: "-"}[row["met"]]
        rows.append(
            f"| {row['what']} | {row['target']} | {_fmt(row['measured'], row['unit'])} | {met}"
            f" | {row['original']} |"
        )
    return "\n".join(rows) + "\n"


def _original_table(scenarios: list[Result]) -> str:
    rows = [
        "| scenario | accepted req/s (here / original) | p50 | p95 | p99 |",
        "|---|---|---|---|---|",
    ]
    for result in scenarios:
        original = ORIGINAL.get(result["name"])
        if original is None:
            continue
        latency = result["latencyMs"]
        rows.append(
            f"| {result['name']}: {result['title']}"
            f" | {_fmt(result['acceptedPerSecond'])} / {original[0]}"
            f" | {_fmt(latency.get('p50'), ' ms')} / {original[1]}"
            f" | {_fmt(latency.get('p95'), ' ms')} / {original[2]}"
            f" | {_fmt(latency.get('p99'), ' ms')} / {original[3]} |"
        )
    return "\n".join(rows) + "\n"


def _drain_table(drain: Result, options: dict[str, Any]) -> str:
    operations = ", ".join(
        f"{cmd} {count:,}" for cmd, count in sorted(drain["storeOperations"].items())
    )
    e2e = drain["endToEnd"]
    measured = drain.get("eventsMeasured", e2e["terminal"])
    rows = [
        (
            "backlog accepted (202) / on the stream",
            f"{drain['accepted']:,} / {drain['stream']['streamEntries']:,}",
        ),
        ("worker start-up (launch → consuming)", _fmt(drain["workerStartupSeconds"], " s")),
        ("drain time (first claim → last terminal)", _fmt(drain["drainSeconds"], " s")),
        ("drain rate", _fmt(drain["eventsPerSecond"], " events/s")),
        ("terminal / lost", f"{e2e['terminal']:,} / {drain['lost']}"),
        (
            "worker CPU",
            f"{_fmt(drain['workerCpuSeconds'], ' s')} over {measured:,} events"
            f" = {_fmt(drain['workerCpuMsPerEvent'], ' ms')} per event",
        ),
        (
            "store round trips",
            f"{_fmt(drain['storeRoundTripsPerEvent'])} per event ({operations})",
        ),
        ("worker peak RSS", _fmt(drain["peakRssMB"]["worker"], " MB")),
    ]
    table = "| | |\n|---|---|\n" + "\n".join(f"| {name} | {value} |" for name, value in rows)
    return (
        table
        + "\n\nCPU and round trips are counted from the worker's first metrics scrape after it is"
        " ready (`courier_gateway_store_operations_total` increase over the terminal jobs in"
        " `courier_gateway_worker_outcomes_total`); the few events it finished before that scrape"
        " are left out of both. Shipments get"
        f" {float(options.get('events_per_shipment', 3.0)):g} events on average"
        " (`--events-per-shipment`): concurrent jobs for one shipment then sometimes need the"
        " extra read and history update of an event that turned out older; with 1 there are"
        " none.\n"
    )


def _adapter_runs_table(runs: list[Result], intake: Result | None) -> str:
    lines = [
        "| scenario | requests/s | events/s | p50 | p99 | errors | lost |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    if intake is not None:
        latency = intake["latencyMs"]
        lines.append(
            f"| (b) canonical v1, 1 event per request (same run, for comparison)"
            f" | {_fmt(intake['acceptedPerSecond'])} | {_fmt(intake['acceptedPerSecond'])}"
            f" | {_fmt(latency.get('p50'), ' ms')} | {_fmt(latency.get('p99'), ' ms')}"
            f" | {intake.get('errors', 0)} | {intake.get('lost', 0)} |"
        )
    for run in runs:
        latency = run["latencyMs"]
        lines.append(
            f"| (f) {run['title']} | {_fmt(run['requestsPerSecond'])}"
            f" | {_fmt(run['eventsPerSecond'])} | {_fmt(latency.get('p50'), ' ms')}"
            f" | {_fmt(latency.get('p99'), ' ms')} | {run['errors']} | {run['lost']} |"
        )
    return (
        "\n".join(lines) + "\n\nThe provider requests are pre-signed the providers' ways by"
        " `loadtest/adapter_requests.py` (AfterShip: base64 HMAC of the body; Ship24: bearer"
        " secret); every event answered is checked on the Redis stream.\n"
    )


def _adapter_cost_table(rows: list[Result]) -> str:
    lines = [
        "| adapter | events in the sample | body bytes | map µs per request | map µs per event"
        " | verify µs per request |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['adapter']} | {row['events']} | {row['bodyBytes']:,}"
            f" | {_fmt(row['mapUsPerRequest'])} | {_fmt(row['mapUsPerEvent'])}"
            f" | {_fmt(row['verifyUsPerRequest'])} |"
        )
    return (
        "\n".join(lines)
        + "\n\nCPU time of one process mapping each built-in adapter's documented sample (JSON"
        " parsing, ignore rules, splitting, mapping; verification separately), the least"
        " disturbed of five rounds: `python -m loadtest.adapter_cost`. `v1`,"
        " `standard-webhooks` and `legacy-body` are the canonical format's own parse, for"
        " comparison.\n"
    )


def _commands(record: Result) -> str:
    options = record["options"]
    lines = [
        "```bash",
        "make bench   # installs redis-server and wrk if missing, then:",
        record["command"],
        "```",
        "",
        "Each scenario starts a fresh stack in a temporary directory:"
        " `redis-server --appendonly yes --appendfsync everysec --save ''`,"
        " `nx-27017 --data-dir …`, `courier-gateway ingress` with"
        " `INGRESS_WORKERS=2 LOG_LEVEL=INFO` (logs to a file) and, where the scenario says so,"
        " `courier-gateway worker`. The bare endpoint runs as"
        " `python -m sanic loadtest.bare_app:app --workers 2 --no-motd --no-access-logs`. Requests"
        f" are pre-signed by `loadtest/requests.py` just before each run; timed runs get"
        f" {math.ceil(float(options['duration']) * float(options['max_rate'])):,} unique events"
        " so that wrk never re-sends one. wrk commands (ports and temporary paths vary):",
        "",
        "```",
    ]
    for result in [*record["scenarios"], record["drain"]]:
        lines.append(f"# ({result['name']}) {result['title']}")
        lines.append(result["command"])
    lines.append("```")
    return "\n".join(lines) + "\n"


def _history_table(history: list[Result]) -> str:
    rows = [
        "| started (UTC) | note | runs x duration | (a) req/s, p99 | (b) accepted/s, p99 |"
        " (c) accepted/s, p99 | bare req/s | intake ÷ bare | drain events/s | round trips"
        " | CPU ms/event | errors | lost | targets met |",
        "|---|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for record in reversed(history):
        by_name = {result["name"]: result for result in record["scenarios"]}
        targets = {row["key"]: row for row in record["targets"]}
        met = sum(1 for row in record["targets"] if row["met"])

        def cell(name: str, by_name: dict[str, Result] = by_name) -> str:
            result = by_name.get(name)
            if result is None:
                return "-"
            p99 = _fmt(result["latencyMs"].get("p99"), " ms")
            return f"{_fmt(result['acceptedPerSecond'])}, {p99}"

        options = record["options"]
        rows.append(
            f"| {record['startedAt']} | {record.get('note') or ''}"
            f" | {options['runs']} x {options['duration']:g} s"
            f" | {cell('a')} | {cell('b')} | {cell('c')}"
            f" | {_fmt(by_name.get('d', {}).get('throughput'))}"
            f" | {_fmt(targets['intake_bare_ratio']['measured'])}"
            f" | {_fmt(record['drain']['eventsPerSecond'])}"
            f" | {_fmt(record['drain']['storeRoundTripsPerEvent'])}"
            f" | {_fmt(record['drain']['workerCpuMsPerEvent'])}"
            f" | {_fmt(targets['errors']['measured'])} | {_fmt(targets['lost']['measured'])}"
            f" | {met}/{len(record['targets'])} |"
        )
    return "\n".join(rows) + "\n"


_GENERATED = (
    "Generated by `python -m loadtest bench` (`make bench`); do not edit by hand. Every run is"
    " appended to [benchmarks/results.json](benchmarks/results.json); this page shows the"
    " latest in full and the earlier ones under [Previous runs](#previous-runs). The load test"
    " itself is described in `loadtest/__init__.py`. The Redis Cluster scenario (g) is also run"
    " alone by `python -m loadtest cluster`; its runs are appended to"
    " [benchmarks/cluster.json](benchmarks/cluster.json) and the latest is shown under"
    " [Redis Cluster (g)](#redis-cluster-g)."
)


def render_markdown(history: list[Result], clusters: list[Result] | None = None) -> str:
    """benchmarks.md: the latest run in full, earlier runs as a history table; then the latest
    Redis Cluster run (g), from ``clusters`` (the records of docs/benchmarks/cluster.json)."""
    cluster_part: list[str] = []
    if clusters:
        from loadtest.cluster import render_cluster

        cluster_part = [render_cluster(clusters)]
    if not history:
        return "\n".join(["# Benchmarks", "", _GENERATED, "", *cluster_part])
    latest = history[-1]
    options = latest["options"]
    scenarios = latest["scenarios"]
    # The bare endpoint does not care whether a request repeats; the gateway would dedupe it.
    cycled = [r["name"] for r in scenarios if r.get("cycled") and r["name"] != "d"]
    parts = [
        "# Benchmarks",
        "",
        _GENERATED,
        "",
        f"## Latest run: {latest['startedAt']}"
        + (f" ({latest['note']})" if latest.get("note") else ""),
        "",
        f"(b), (c) and (d) ran {options['runs']} time(s) each, interleaved; their figures are"
        " medians (errors and losses are summed over the runs). Throughput is counted from the"
        " first request sent to the last response received.",
        "",
        "### Machine",
        "",
        _machine_table(latest["machine"]),
        "### Commands",
        "",
        _commands(latest),
        "### Results",
        "",
        report.results_table(scenarios),
        "Rejected responses are listed by status and `errorCode`; duplicates suppressed counts"
        " `duplicate: true` answers at intake plus duplicates skipped by the worker's ledger. Lost:"
        " with the worker, queued events (202 minus duplicates) without a terminal ledger record;"
        " without it, queued events missing from the Redis stream.",
        "",
    ]
    if cycled:
        parts += [
            f"**Warning**: wrk re-sent its request list in {', '.join(cycled)}:"
            " raise `--max-rate`.",
            "",
        ]
    parts += [
        "#### End to end (receivedAt → terminal)",
        "",
        report.end_to_end_table([*scenarios, latest["drain"]]),
        "#### Worker drain (e)",
        "",
        _drain_table(latest["drain"], options),
        "#### Latency distribution",
        "",
        "![latency percentiles](benchmarks/latency.png)",
        "",
        "#### Processes (peak RSS sampled every 0.1 s; CPU time over the scenario)",
        "",
        report.process_table([*scenarios, latest["drain"]]),
    ]
    if latest.get("adapterRuns"):
        intake = next((r for r in scenarios if r["name"] == "b"), None)
        parts += [
            "#### Provider adapters (f)",
            "",
            _adapter_runs_table(latest["adapterRuns"], intake),
        ]
    if latest.get("adapterCost"):
        parts += ["#### Adapter mapping cost", "", _adapter_cost_table(latest["adapterCost"])]
    parts += [
        "### Targets",
        "",
        _targets_table(latest["targets"]),
        "### Against the original",
        "",
        "The original's figures are from `shared/reference/original-measured.md` (same kind of"
        " machine, medians of noisy runs).",
        "",
        _original_table(scenarios),
        *cluster_part,
        "## Previous runs",
        "",
    ]
    if len(history) > 1:
        parts.append(_history_table(history[:-1]))
    else:
        parts.append("None yet.\n")
    return "\n".join(parts)


def default_command(argv: list[str]) -> str:
    """The command line as typed, for the record."""
    return "python -m loadtest " + " ".join(shlex.quote(arg) for arg in argv)
