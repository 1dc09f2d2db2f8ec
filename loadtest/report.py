"""Turning measurements into a JSON report, Markdown tables and a latency plot.

A *scenario result* is a plain dict (it goes to ``docs/benchmarks/results.json`` as is), built
by :func:`scenario_result` from a wrk run, the end-to-end or stream check and the processes'
usage; :func:`median_result` folds repeated runs into one by medians. The plot draws each
scenario's latency percentiles on log scales (x: 1/(1 - percentile), so 50, 90, 99, 99.9 % are
evenly spaced; y: milliseconds).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from loadtest.endtoend import EndToEnd, StreamCheck
from loadtest.engine import WrkRun
from loadtest.stack import ProcessUsage

__all__ = [
    "format_number",
    "median_result",
    "plot_latency",
    "process_table",
    "results_table",
    "scenario_result",
]

Result = dict[str, Any]
_QUANTILES = ("p50", "p95", "p99")


def scenario_result(
    *,
    name: str,
    title: str,
    run: WrkRun,
    connections: int,
    generated: dict[str, Any] | None = None,
    end_to_end: EndToEnd | None = None,
    stream: StreamCheck | None = None,
    usage: Sequence[ProcessUsage] = (),
    duplicates_sent: int | None = None,
    ledger_duplicates: float | None = None,
) -> Result:
    """One run of one scenario as a JSON-ready dict."""
    duration = run.duration_s
    rejected = dict(run.codes)
    lost = None
    if end_to_end is not None:
        lost = end_to_end.lost
    elif stream is not None:
        lost = stream.lost
    result: Result = {
        "name": name,
        "title": title,
        "connections": connections,
        "command": " ".join(run.command),
        "generated": generated,
        "requests": run.requests,
        "durationSeconds": round(duration, 3),
        "throughput": round(run.requests / duration, 1) if duration else 0.0,
        "accepted": run.accepted,
        "acceptedPerSecond": round(run.accepted / duration, 1) if duration else 0.0,
        "duplicates": run.duplicates,
        "queued": run.queued,
        "statuses": {str(status): count for status, count in sorted(run.statuses.items())},
        "rejected": rejected,
        "non2xx": run.non_2xx,
        "socketErrors": run.socket_errors,
        "errors": run.non_2xx + run.socket_errors,
        "cycled": bool(run.result.get("cycled")),
        "latencyMs": {key: round(value, 2) for key, value in run.latency_ms.items()},
        "percentilesMs": [[p, round(value, 3)] for p, value in run.percentiles_ms],
        "lost": lost,
        "processes": [entry.as_dict() for entry in usage],
        "peakRssMB": _peaks(usage),
    }
    if duplicates_sent is not None:
        result["duplicatesSent"] = duplicates_sent
        suppressed = run.duplicates + int(ledger_duplicates or 0)
        result["duplicatesSuppressed"] = suppressed
    if end_to_end is not None:
        result["endToEnd"] = end_to_end.as_dict()
    if stream is not None:
        result["stream"] = stream.as_dict()
    return result


def _peaks(usage: Sequence[ProcessUsage]) -> dict[str, float]:
    """Largest peak RSS per role (ingress: over its processes), in MB."""
    peaks: dict[str, float] = {}
    for entry in usage:
        role = entry.label.split(" ")[0]
        value = round(entry.peak_rss / (1024 * 1024), 1)
        peaks[role] = max(peaks.get(role, 0.0), value)
    return peaks


def _median(values: Iterable[Any]) -> Any:
    present = [value for value in values if isinstance(value, int | float)]
    if not present:
        return None
    value = statistics.median(present)
    return round(value, 3) if isinstance(value, float) else value


def median_result(runs: Sequence[Result]) -> Result:
    """Medians of the numeric figures of repeated runs; counts of errors and losses are summed."""
    if len(runs) == 1:
        return {**runs[0], "runs": 1}
    first = runs[0]
    merged: Result = {}
    for key, value in first.items():
        numeric = isinstance(value, int | float) and not isinstance(value, bool)
        merged[key] = _median(run.get(key) for run in runs) if numeric else value
    for key in ("non2xx", "socketErrors", "errors", "lost"):
        values = [run.get(key) for run in runs]
        merged[key] = None if all(v is None for v in values) else sum(v or 0 for v in values)
    merged["latencyMs"] = {
        key: _median(run["latencyMs"].get(key) for run in runs) for key in first["latencyMs"]
    }
    merged["percentilesMs"] = [
        [p, _median(run["percentilesMs"][index][1] for run in runs)]
        for index, (p, _) in enumerate(first["percentilesMs"])
    ]
    merged["peakRssMB"] = {
        role: max(run["peakRssMB"].get(role, 0.0) for run in runs) for role in first["peakRssMB"]
    }
    rejected: dict[str, int] = {}
    for run in runs:
        for code, count in run["rejected"].items():
            rejected[code] = rejected.get(code, 0) + count
    merged["rejected"] = rejected
    merged["cycled"] = any(run.get("cycled") for run in runs)
    merged["runs"] = len(runs)
    merged["perRun"] = [
        {
            "throughput": run["throughput"],
            "acceptedPerSecond": run["acceptedPerSecond"],
            "p99": run["latencyMs"].get("p99"),
        }
        for run in runs
    ]
    return merged


def format_number(value: Any, digits: int = 0, unit: str = "") -> str:
    """A table cell: thousands separators, '-' for missing."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}{unit}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}{unit}"
    return f"{value}{unit}"


def _rejected(result: Result) -> str:
    if not result.get("rejected"):
        return "0"
    return ", ".join(f"{code}: {count}" for code, count in sorted(result["rejected"].items()))


def results_table(results: Sequence[Result]) -> str:
    """The main table: one row per scenario."""
    header = (
        "| scenario | conns | runs | requests | req/s | accepted req/s | rejected | socket errors |"
        " p50 | p95 | p99 | max | dups sent / suppressed | lost |\n"
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    rows = []
    for r in results:
        latency = r["latencyMs"]
        dups = "-"
        if "duplicatesSent" in r:
            dups = f"{r['duplicatesSent']} / {r['duplicatesSuppressed']}"
        rows.append(
            f"| {r['name']}: {r['title']} | {r['connections']} | {r.get('runs', 1)}"
            f" | {format_number(r['requests'])} | {format_number(r['throughput'])}"
            f" | {format_number(r['acceptedPerSecond'])}"
            f" | {_rejected(r)} | {format_number(r['socketErrors'])}"
            f" | {format_number(latency.get('p50'), 1, ' ms')}"
            f" | {format_number(latency.get('p95'), 1, ' ms')}"
            f" | {format_number(latency.get('p99'), 1, ' ms')}"
            f" | {format_number(latency.get('max'), 1, ' ms')}"
            f" | {dups} | {format_number(r['lost'])} |"
        )
    return header + "\n".join(rows) + "\n"


def end_to_end_table(results: Sequence[Result]) -> str:
    """receivedAt → terminal for the scenarios that ran the worker."""
    rows = [
        "| scenario | queued | terminal | lost | waited | e2e p50 | e2e p95 | e2e p99 | e2e max |"
        " worker histogram p50 / p95 / p99 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        e2e = r.get("endToEnd")
        if not e2e:
            continue
        latency, histogram = e2e["latencyMs"], e2e["workerHistogramMs"]
        rows.append(
            f"| {r['name']} | {format_number(e2e['queued'])} | {format_number(e2e['terminal'])}"
            f" | {format_number(e2e['lost'])} | {format_number(e2e['waitedSeconds'], 1, ' s')}"
            f" | {format_number(latency.get('p50'), 0, ' ms')}"
            f" | {format_number(latency.get('p95'), 0, ' ms')}"
            f" | {format_number(latency.get('p99'), 0, ' ms')}"
            f" | {format_number(latency.get('max'), 0, ' ms')}"
            f" | {' / '.join(format_number(histogram.get(k), 0, ' ms') for k in _QUANTILES)} |"
        )
    return "\n".join(rows) + "\n"


def process_table(results: Sequence[Result]) -> str:
    """Peak RSS and CPU time of every process, per scenario (first run of each)."""
    rows = ["| scenario | process | peak RSS | CPU time |", "|---|---|---:|---:|"]
    for r in results:
        for process in r.get("processes", []):
            rows.append(
                f"| {r['name']} | {process['label']}"
                f" | {format_number(process['peakRssMB'], 1, ' MB')}"
                f" | {format_number(process['cpuSeconds'], 2, ' s')} |"
            )
    return "\n".join(rows) + "\n"


def plot_latency(
    results: Sequence[Result], path: Path, title: str = "Latency by percentile"
) -> Path:
    """Draw each scenario's percentile curve on one log-log plot (PNG, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(9, 5.5), dpi=110)
    for r in results:
        points = [(p, value) for p, value in r["percentilesMs"] if value is not None and value > 0]
        if not points:
            continue
        xs = [1 / (1 - p / 100) for p, _ in points]
        ys = [value for _, value in points]
        axes.plot(xs, ys, label=f"{r['name']}: {r['title']}", linewidth=1.6)
    axes.set_xscale("log")
    axes.set_yscale("log")
    ticks = [50, 75, 90, 95, 99, 99.9, 99.99]
    axes.set_xticks([1 / (1 - p / 100) for p in ticks])
    axes.set_xticklabels([f"{p:g}%" for p in ticks])
    axes.minorticks_off()
    axes.set_xlim(1 / (1 - 1 / 100), 1 / (1 - 99.99 / 100) * 1.1)
    axes.set_xlabel("percentile")
    axes.set_ylabel("latency (ms, log scale)")
    axes.set_title(title)
    axes.grid(True, which="major", alpha=0.3)
    axes.legend(fontsize=8, loc="upper left")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
