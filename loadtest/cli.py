"""The ``python -m loadtest`` command: ``run``, ``bench``, ``cluster`` and ``generate``."""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import tempfile
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

from courier_gateway.config.sources import DEFAULT_SOURCE, Scheme
from loadtest import report
from loadtest.bench import BenchOptions, default_command, run_bench, run_cluster
from loadtest.endtoend import check_stream, histogram_percentiles, wait_terminal
from loadtest.engine import WrkError, run_wrk
from loadtest.metrics import scrape
from loadtest.requests import Generated, Mix, SourceSpec, generate
from loadtest.stack import DEFAULT_SECRET, LocalStack, StackError

__all__ = ["main"]

_DEFAULT_MAX_RATE = 10_000.0


def _ratio(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError("a ratio in [0, 1)")
    return value


def _source(text: str) -> SourceSpec:
    try:
        return SourceSpec.parse(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            "NAME:SCHEME:SECRET with SCHEME one of " + ", ".join(s.value for s in Scheme)
        ) from None


def _add_generator_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("requests")
    group.add_argument(
        "--events",
        type=int,
        help="unique events (default: 1000, or enough for --duration at --max-rate)",
    )
    group.add_argument(
        "--duplicates", type=_ratio, default=0.0, help="share of requests that are re-sent copies"
    )
    group.add_argument(
        "--out-of-order",
        type=_ratio,
        default=0.0,
        help="share of events for an existing shipment with an earlier occurredAt",
    )
    group.add_argument(
        "--events-per-shipment",
        type=float,
        default=3.0,
        help="mean in-order events per shipment (1: every event a new shipment)",
    )
    group.add_argument(
        "--payload-bytes", type=int, default=0, help="pad each body to this size (padding field)"
    )
    group.add_argument(
        "--secret",
        default=os.environ.get("SIGNING_SECRET"),
        help="v1 secret of the default source 'courier' (default: $SIGNING_SECRET)",
    )
    group.add_argument(
        "--source",
        type=_source,
        action="append",
        default=[],
        metavar="NAME:SCHEME:SECRET",
        help="also (or instead) post to this source, e.g. dhl:standard-webhooks:whsec_…"
        " or old:legacy-body:secret; repeatable; sources take turns per shipment",
    )
    group.add_argument("--seed", type=int, default=1, help="random seed of the mix")
    group.add_argument(
        "--max-rate",
        type=float,
        default=_DEFAULT_MAX_RATE,
        help="req/s a timed run must not exhaust (sizes the default --events)",
    )


def _sources(args: argparse.Namespace, *, local: bool) -> tuple[SourceSpec, ...]:
    sources: list[SourceSpec] = list(args.source)
    secret = args.secret or (DEFAULT_SECRET if local or not sources else None)
    if secret is not None and not any(s.name == DEFAULT_SOURCE for s in sources):
        sources.insert(0, SourceSpec(DEFAULT_SOURCE, Scheme.V1, secret))
    if not sources:
        raise SystemExit("loadtest: give --secret or --source")
    return tuple(sources)


def _mix(args: argparse.Namespace, sources: tuple[SourceSpec, ...], host: str) -> Mix:
    events = args.events
    if events is None:
        duration = getattr(args, "duration", None)
        rate = min(getattr(args, "rate", None) or args.max_rate, args.max_rate)
        events = math.ceil(duration * rate) if duration else 1000
    return Mix(
        events=events,
        sources=sources,
        duplicate_ratio=args.duplicates,
        out_of_order_ratio=args.out_of_order,
        payload_bytes=args.payload_bytes,
        events_per_shipment=args.events_per_shipment,
        host=host,
        seed=args.seed,
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m loadtest", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser(
        "run",
        help="an ad-hoc load run against a URL (or a fresh local stack with --local)",
        description="Generate signed requests and send them with wrk. Without --duration every"
        " generated request is sent once.",
    )
    target = run.add_argument_group("target")
    target.add_argument("--url", default="http://127.0.0.1:3000", help="gateway base URL")
    target.add_argument(
        "--local",
        action="store_true",
        help="start a fresh local stack (ignores --url) and check every event end to end",
    )
    target.add_argument(
        "--no-worker", action="store_true", help="with --local: intake only, check the stream"
    )
    load = run.add_argument_group("load")
    load.add_argument("--connections", "-c", type=int, default=100)
    load.add_argument("--threads", "-t", type=int, default=2)
    load.add_argument(
        "--duration", "-d", type=float, help="seconds (default: send every request once)"
    )
    load.add_argument("--requests", type=int, help="send this many requests (cycling the list)")
    load.add_argument("--rate", type=float, help="target requests per second")
    load.add_argument("--timeout", type=float, default=10.0, help="wrk socket/request timeout (s)")
    output = run.add_argument_group("output")
    output.add_argument("--json", type=Path, help="write the JSON report here ('-': stdout)")
    output.add_argument("--plot", type=Path, help="write the latency plot (PNG) here")
    output.add_argument(
        "--keep-requests", type=Path, help="write the request file here and keep it"
    )
    _add_generator_options(run)

    bench = commands.add_parser("bench", help="the benchmark: writes docs/benchmarks.md")
    bench.add_argument("--runs", type=int, default=3, help="runs of (b), (c), (d) (median)")
    bench.add_argument("--duration", type=float, default=30.0, help="seconds of (b), (c), (d)")
    bench.add_argument("--drain-events", type=int, default=3000, help="backlog size of (e)")
    bench.add_argument(
        "--max-rate",
        type=float,
        default=_DEFAULT_MAX_RATE,
        help="req/s the timed runs' request lists must cover",
    )
    bench.add_argument(
        "--events-per-shipment",
        type=float,
        default=3.0,
        help="mean events per shipment in every scenario (1: no two events share a shipment)",
    )
    bench.add_argument("--docs", type=Path, default=Path("docs"), help="where benchmarks.md goes")
    bench.add_argument("--note", help="a note shown with this run in the history")
    _add_cluster_options(bench)
    bench.add_argument(
        "--no-cluster", action="store_true", help="skip the Redis Cluster scenario (g)"
    )

    cluster = commands.add_parser(
        "cluster",
        help="only scenario (g), Redis Cluster: updates its section of docs/benchmarks.md",
        description="Start a 3-primary Redis Cluster and measure intake (1 vs 6 partitions,"
        " ENQUEUE_MIN_REPLICAS 0 vs 1) and worker drain on it; append the run to"
        " docs/benchmarks/cluster.json and rewrite docs/benchmarks.md (run from the repository"
        " root: it uses tests/support/topologies.py).",
    )
    cluster.add_argument(
        "--max-rate",
        type=float,
        default=_DEFAULT_MAX_RATE,
        help="req/s the intake request list must cover",
    )
    cluster.add_argument(
        "--events-per-shipment", type=float, default=3.0, help="mean events per shipment"
    )
    cluster.add_argument("--docs", type=Path, default=Path("docs"), help="where benchmarks.md goes")
    cluster.add_argument("--note", help="a note shown with this run")
    _add_cluster_options(cluster)

    gen = commands.add_parser("generate", help="only write a Lua request file for wrk")
    gen.add_argument("output", type=Path, help="the .lua file to write")
    gen.add_argument("--host", default="127.0.0.1:3000", help="Host header")
    _add_generator_options(gen)
    return parser


def _add_cluster_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cluster-duration",
        type=float,
        default=5.0,
        help="seconds of each intake sub-run of (g)",
    )
    parser.add_argument(
        "--cluster-runs", type=int, default=3, help="rounds of the intake sub-runs of (g) (median)"
    )
    parser.add_argument(
        "--cluster-drain-events",
        type=int,
        default=1500,
        help="backlog of each drain sub-run of (g)",
    )


def _print_summary(result: report.Result) -> None:
    sys.stdout.write(report.results_table([result]))
    if result.get("endToEnd"):
        sys.stdout.write("\n" + report.end_to_end_table([result]))
    if result.get("processes"):
        sys.stdout.write("\n" + report.process_table([result]))
    sys.stdout.flush()


def _command_run(args: argparse.Namespace) -> int:
    if args.duration is not None and args.requests is not None:
        raise SystemExit("loadtest run: give --duration or --requests, not both")
    sources = _sources(args, local=args.local)
    workdir = Path(tempfile.mkdtemp(prefix="loadtest-run-"))
    path = args.keep_requests or workdir / "requests.lua"
    stack: LocalStack | None = None
    try:
        if args.local:
            stack = LocalStack(sources=sources).start(worker=not args.no_worker)
            url = stack.url
        else:
            url = args.url.rstrip("/")
        generated: Generated = generate(_mix(args, sources, urlsplit(url).netloc), path)
        sys.stderr.write(f"loadtest: {generated.requests:,} signed requests in {path}\n")
        before = scrape(stack.worker_metrics_url) if stack and stack.worker_running else None
        count = None if args.duration else (args.requests or generated.requests)
        run = run_wrk(
            url,
            path,
            connections=args.connections,
            threads=args.threads,
            duration=args.duration,
            count=count,
            rate=args.rate,
            timeout_s=args.timeout,
        )
        e2e = stream = None
        ledger = None
        if stack is not None and before is not None:
            e2e = wait_terminal(stack.mongo_uri, stack.mongo_db, run.queued)
            after = scrape(stack.worker_metrics_url)
            e2e.histogram_ms = histogram_percentiles(before, after)
            name = "courier_gateway_duplicates_total"
            ledger = after.total(name, stage="ledger") - before.total(name, stage="ledger")
        elif stack is not None:
            stream = check_stream(stack.redis_url, stack.stream, run.queued)
        result = report.scenario_result(
            name="run",
            title=f"{args.connections} connections"
            + (f", {args.rate:g} req/s" if args.rate else ""),
            run=run,
            connections=args.connections,
            generated=generated.as_dict(),
            end_to_end=e2e,
            stream=stream,
            usage=stack.sampler.usage() if stack else (),
            duplicates_sent=generated.duplicates if stack else None,
            ledger_duplicates=ledger,
        )
    finally:
        if stack is not None:
            stack.stop()
        if args.keep_requests is None:
            path.unlink(missing_ok=True)
        workdir.rmdir()
    _print_summary(result)
    if args.json is not None:
        text = json.dumps(result, indent=1)
        if str(args.json) == "-":
            sys.stdout.write(text + "\n")
        else:
            args.json.write_text(text + "\n")
    if args.plot is not None:
        report.plot_latency([result], args.plot)
    return 0 if result["errors"] == 0 and not result["lost"] else 1


def _command_generate(args: argparse.Namespace) -> int:
    generated = generate(_mix(args, _sources(args, local=False), args.host), args.output)
    sys.stdout.write(json.dumps(generated.as_dict(), indent=1) + "\n")
    return 0


def _command_bench(args: argparse.Namespace, argv: list[str]) -> int:
    options = BenchOptions(
        runs=args.runs,
        duration=args.duration,
        drain_events=args.drain_events,
        max_rate=args.max_rate,
        events_per_shipment=args.events_per_shipment,
        docs=args.docs,
        note=args.note,
        cluster_duration=args.cluster_duration,
        cluster_drain_events=args.cluster_drain_events,
        cluster_runs=args.cluster_runs,
        cluster=not args.no_cluster,
    )
    record = run_bench(options, command=default_command(argv))
    sys.stdout.write(report.results_table(record["scenarios"]))
    for row in record["targets"]:
        met = {True: "met", False: "NOT MET", None: "n/a"}[row["met"]]
        sys.stdout.write(f"{row['what']}: {row['measured']} (target {row['target']}): {met}\n")
    sys.stdout.write(f"wrote {args.docs / 'benchmarks.md'}\n")
    return 0


def _command_cluster(args: argparse.Namespace, argv: list[str]) -> int:
    from loadtest.cluster import summary

    options = BenchOptions(
        max_rate=args.max_rate,
        events_per_shipment=args.events_per_shipment,
        docs=args.docs,
        note=args.note,
        cluster_duration=args.cluster_duration,
        cluster_drain_events=args.cluster_drain_events,
        cluster_runs=args.cluster_runs,
    )
    record = run_cluster(options, command=default_command(argv))
    sys.stdout.write(summary(record))
    sys.stdout.write(f"wrote {args.docs / 'benchmarks.md'}\n")
    failed = sum(r["errors"] + (r["lost"] or 0) for r in [*record["intake"], *record["drain"]])
    return 0 if failed == 0 else 1


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # runs every finally: the stacks stop


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m loadtest``."""
    arguments = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(arguments)
    signal.signal(signal.SIGTERM, _on_sigterm)
    # Ctrl-C raises KeyboardInterrupt even when started where SIGINT was ignored (a background
    # job of a script): every finally then stops what was started.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        if args.command == "run":
            return _command_run(args)
        if args.command == "generate":
            return _command_generate(args)
        if args.command == "cluster":
            return _command_cluster(args, arguments)
        return _command_bench(args, arguments)
    except (WrkError, StackError) as error:
        sys.stderr.write(f"loadtest: {error}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("loadtest: interrupted; everything started was stopped\n")
        return 130
