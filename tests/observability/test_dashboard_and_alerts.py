"""The shipped Grafana dashboard and Prometheus alerts work against the gateway's real metrics.

What is proved:

- ``promtool check rules`` accepts ``charts/courier-gateway/files/alerts.yaml`` and
  ``promtool test rules`` passes ``alerts_test.yaml``, which has, for every alert, a case where it
  fires and one where it stays silent; every alert has a severity, a summary, a description and
  a ``runbook_url`` whose anchor is a heading of ``docs/runbook.md``.
- Every metric name, label matcher, ``by (...)`` label and legend label used by the dashboard and
  the alerts exists in the metric catalogue (``courier_gateway.observability.metrics``).
- Against a real Prometheus scraping a real ingress (``INGRESS_WORKERS=2``, multiprocess metrics)
  and a real worker, after real traffic (accepted, duplicate, 401, 503 ``INTAKE_UNAVAILABLE``,
  retries, dead letters): every expression of every dashboard target and every alert evaluates
  without error and returns data, the counters Prometheus sees match the traffic sent, and the
  same Prometheus loads the alert rules and evaluates them without errors.

An alert expression returns data only while it fires (a comparison, or ``absent()``), so for
the "returns data" check each alert expression is reduced to its series expressions: the
operands of a top-level ``and``/``or``/``unless`` are taken separately, a top-level comparison
is replaced by its non-literal sides, and ``absent(x)`` by its argument ``x`` (which returns
data exactly while the alert is silent, as it is here: a worker consumes). The full alert
expressions are evaluated too, for a successful evaluation only.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from courier_gateway.devstack.processes import Child, free_port, start_child, wait_until
from courier_gateway.observability import metrics, worker_metrics
from tests.conftest import StartGateway
from tests.support.downstream import Downstream, Received
from tests.support.servers import RedisServer, StoreServer, wait_for
from tests.support.signing import event, signed
from tests.support.stack import StackEnv, post_events

ROOT = Path(__file__).resolve().parents[2]
FILES = ROOT / "charts" / "courier-gateway" / "files"
ALERTS = FILES / "alerts.yaml"
DASHBOARD = FILES / "dashboard.json"
ALERT_TESTS = Path(__file__).with_name("alerts_test.yaml")
RUNBOOK = ROOT / "docs" / "runbook.md"
RUNBOOK_URL = "https://github.com/courier-gateway/courier-gateway/blob/main/docs/runbook.md#"

ALERT_NAMES = {
    "CourierGatewayDeadLettersGrowing",
    "CourierGatewayQueueLagHigh",
    "CourierGatewaySignatureFailureSpike",
    "CourierGatewayIntakeUnavailable",
    "CourierGatewayNoWorkerConsuming",
    "CourierGatewayDownstreamBreakerOpen",
    "CourierGatewayDeferralsAging",
}

# Labels the scrape adds through the chart's PodMonitor/ServiceMonitor: which gateway a series
# belongs to. Alerts and the dashboard aggregate by them.
TARGET_LABELS = ("namespace", "app_kubernetes_io_instance")
GATEWAY = {"namespace": "couriers", "app_kubernetes_io_instance": "parcels"}

# Grafana's built-in interval variables, as a short scrape would need them.
GRAFANA_BUILTINS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1m"}


def tool(name: str) -> str:
    binary = shutil.which(name)
    assert binary, f"{name} is not installed (make test installs it)"
    return binary


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return document


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in items:
        yield panel
        yield from panels(panel.get("panels", []))  # rows may hold collapsed panels


def dashboard_targets() -> list[tuple[str, str]]:
    """``(panel title, expression)`` of every target, Grafana variables substituted."""
    return [
        (panel["title"], substitute(target["expr"]))
        for panel in panels(dashboard()["panels"])
        for target in panel.get("targets", [])
    ]


def substitute(expr: str) -> str:
    """Replace Grafana variables: built-in intervals, and template variables by their "All"."""
    values = dict(GRAFANA_BUILTINS)
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "datasource":
            continue
        value = variable.get("allValue") or ".*"
        name = variable["name"]
        values.update({f"${{{name}}}": value, f"${name}": value, f"[[{name}]]": value})
    for name in sorted(values, key=len, reverse=True):
        expr = expr.replace(name, values[name])
    assert "$" not in expr, f"unsubstituted variable in {expr}"
    return expr


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces to '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def runbook_anchors() -> set[str]:
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    in_code = False
    for line in RUNBOOK.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        match = re.match(r"#{1,6} (.+)", line)
        if match and not in_code:
            base = slug(match.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            anchors.add(base if count == 0 else f"{base}-{count}")
    return anchors


# --- Reducing an alert expression to the series it is built from -------------------------------


def _mask(expr: str) -> str:
    """``expr`` with everything inside brackets or quotes blanked: only the top level shows."""
    out: list[str] = []
    depth = 0
    quote: str | None = None
    escaped = False
    for char in expr:
        if quote is not None:
            out.append(" ")
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = None
            continue
        if char in "\"'`":
            quote = char
            out.append(" ")
        elif char in "([{":
            depth += 1
            out.append(" ")
        elif char in ")]}":
            depth -= 1
            out.append(" ")
        else:
            out.append(char if depth == 0 else " ")
    return "".join(out)


def _unwrap(expr: str) -> str:
    expr = expr.strip()
    while expr.startswith("(") and expr.endswith(")") and not _mask(expr).strip():
        expr = expr[1:-1].strip()
    return expr


def _is_number(expr: str) -> bool:
    return re.fullmatch(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?", expr.strip()) is not None


def series_expressions(expr: str) -> list[str]:
    """The sub-expressions of an alert expression that return data while it does not fire."""
    expr = _unwrap(expr)
    masked = _mask(expr)
    cuts = [m.span() for m in re.finditer(r"\b(and|or|unless)\b", masked)]
    if cuts:
        bounds = [0, *(edge for span in cuts for edge in span), len(expr)]
        parts = [expr[bounds[i] : bounds[i + 1]] for i in range(0, len(bounds), 2)]
        modifier = r"^\s*(on|ignoring)\s*\([^)]*\)"
        return [s for part in parts for s in series_expressions(re.sub(modifier, "", part))]
    absent = re.fullmatch(r"(absent(?:_over_time)?)\s*\((.*)\)", expr, flags=re.DOTALL)
    if absent and not _mask(expr)[absent.end(1) :].strip():  # one call spanning the whole
        return [absent.group(2).strip()]
    comparison = re.search(r"==|!=|>=|<=|>|<", masked)
    if comparison:
        left, right = expr[: comparison.start()], expr[comparison.end() :]
        right = re.sub(r"^\s*bool\b", "", right)
        return [
            s for side in (left, right) if not _is_number(side) for s in series_expressions(side)
        ]
    return [expr]


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("absent(up == 1)", ["up == 1"]),
        ("absent(a) or absent(b)", ["a", "b"]),
        ("sum(max by (s) (lag)) > 1000", ["sum(max by (s) (lag))"]),
        (
            "(a / b) > 0.2\nand\nsum by (x) (rate(c[5m])) > 0.1",
            ["a / b", "sum by (x) (rate(c[5m]))"],
        ),
        ('x{a=~"b>c"} / y > bool 0.05', ['x{a=~"b>c"} / y']),
        ("a unless on (ns) b", ["a", "b"]),
    ],
)
def test_series_expressions_reduce_a_condition_to_its_series(
    expr: str, expected: list[str]
) -> None:
    assert [s.strip() for s in series_expressions(expr)] == expected


# --- Static checks ------------------------------------------------------------------------------


def test_promtool_accepts_the_rules() -> None:
    result = run(tool("promtool"), "check", "rules", str(ALERTS.relative_to(ROOT)))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass() -> None:
    result = run(tool("promtool"), "test", "rules", str(ALERT_TESTS.relative_to(ROOT)))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_unit_tested_both_ways_and_links_its_runbook_section() -> None:
    tests = yaml.safe_load(ALERT_TESTS.read_text())
    assert tests["rule_files"] == ["../../charts/courier-gateway/files/alerts.yaml"]
    firing: set[str] = set()
    silent: set[str] = set()
    for case in tests["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    anchors = runbook_anchors()
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names))
    assert set(names) == ALERT_NAMES
    for rule in alert_rules():
        name = rule["alert"]
        assert name in firing, f"{name}: no unit test where it fires"
        assert name in silent, f"{name}: no unit test where it stays silent"
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        annotations = rule["annotations"]
        assert annotations["summary"].strip() and annotations["description"].strip(), name
        url = annotations["runbook_url"]
        assert url.startswith(RUNBOOK_URL), url
        assert url.removeprefix(RUNBOOK_URL) in anchors, f"{name}: no runbook heading for {url}"
    assert set(firing | silent) <= set(names), "unit tests name an alert that does not exist"


def test_every_alert_is_per_gateway_and_tested_with_a_healthy_gateway_beside() -> None:
    """Each alert groups by namespace and gateway, and a unit test runs two gateways at once
    where the alert fires for the unhealthy one only."""
    for rule in alert_rules():
        groupings = re.findall(r"\b(?:by|on)\s*\(([^)]*)\)", rule["expr"])
        assert groupings, rule["alert"]
        for grouping in groupings:
            names = {part.strip() for part in grouping.split(",")}
            assert set(TARGET_LABELS) <= names, f"{rule['alert']}: by ({grouping})"
    tests = yaml.safe_load(ALERT_TESTS.read_text())
    covered = set()
    for case in tests["tests"]:
        gateways = {
            tuple(
                re.search(rf'{label}="([^"]*)"', item["series"]).group(1) for label in TARGET_LABELS
            )
            for item in case["input_series"]
        }
        for check in case.get("alert_rule_test", []):
            fired = {
                (
                    alert["exp_labels"]["namespace"],
                    alert["exp_labels"]["app_kubernetes_io_instance"],
                )
                for alert in check.get("exp_alerts") or []
            }
            if len(gateways) >= 2 and len(fired) == 1 and fired < gateways:
                covered.add(check["alertname"])
    assert covered == ALERT_NAMES


def catalogue() -> dict[str, tuple[str, ...]]:
    """Every series name the gateway exports, with its label names."""
    names: dict[str, tuple[str, ...]] = {}
    for module in (metrics, worker_metrics):
        for attribute in module.__all__:
            metric = getattr(module, attribute)
            if not isinstance(metric, MetricWrapperBase):
                continue
            name, labels = metric._name, tuple(metric._labelnames)
            if metric._type == "counter":
                names[f"{name}_total"] = labels
            elif metric._type == "histogram":
                names.update(
                    {
                        f"{name}_bucket": (*labels, "le"),
                        f"{name}_sum": labels,
                        f"{name}_count": labels,
                    }
                )
            else:
                names[name] = labels
    return names


def test_every_metric_and_label_used_exists() -> None:
    known = catalogue()
    expressions = [(title, expr) for title, expr in dashboard_targets()] + [
        (rule["alert"], rule["expr"]) for rule in alert_rules()
    ]
    legends = {
        substitute(target["expr"]): target.get("legendFormat", "")
        for panel in panels(dashboard()["panels"])
        for target in panel.get("targets", [])
    }
    for where, expr in expressions:
        used = re.findall(r"\bcourier_gateway_\w+", expr)
        assert used, f"{where}: no gateway metric in {expr}"
        unknown = set(used) - set(known)
        assert not unknown, f"{where}: no such metric {unknown}"
        labels = {label for name in used for label in known[name]} | set(TARGET_LABELS)
        for name, matchers in re.findall(r"\b(courier_gateway_\w+)\{([^}]*)\}", expr):
            for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers):
                assert label in (*known[name], *TARGET_LABELS), (
                    f"{where}: {name} has no label {label!r}"
                )
        for grouping in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
            for label in filter(None, (part.strip() for part in grouping.split(","))):
                assert label in labels, f"{where}: grouping by unknown label {label!r}"
        for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", legends.get(expr, "")):
            assert label in labels, f"{where}: legend uses unknown label {label!r}"


def test_dashboard_shape() -> None:
    document = dashboard()
    assert document["uid"] == "courier-gateway"
    assert 36 <= document["schemaVersion"] <= 41
    variables = {v["name"]: v for v in document["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    # One gateway or several: a namespace and a gateway variable, and every query uses both.
    assert "app_kubernetes_io_instance" in variables["gateway"]["definition"]
    assert variables["gateway"]["multi"] and variables["gateway"]["includeAll"]
    for panel in panels(document["panels"]):
        for target in panel.get("targets", []):
            for selector in re.findall(r"courier_gateway_\w+\{([^}]*)\}", target["expr"]):
                assert 'namespace=~"$namespace"' in selector, target["expr"]
                assert 'app_kubernetes_io_instance=~"$gateway"' in selector, target["expr"]
            assert "app_kubernetes_io_instance" in target["legendFormat"], panel["title"]
    ids = [panel["id"] for panel in panels(document["panels"])]
    assert len(ids) == len(set(ids))
    for panel in panels(document["panels"]):
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        for source in [panel["datasource"], *(t["datasource"] for t in panel["targets"])]:
            assert source == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
    titles = " | ".join(panel["title"] for panel in panels(document["panels"])).lower()
    for topic in [
        "intake requests by outcome",
        "intake latency",
        "signature failures",
        "queue lag",
        "processing by outcome",
        "retries scheduled",
        "dead letters",
        "end-to-end latency",
        "breaker",
        "in flight",
        "oldest deferral",
    ]:
        assert topic in titles, f"no panel for {topic}"


# --- A real Prometheus against a real ingress and worker -----------------------------------------


class Prometheus:
    """A ``prometheus`` process scraping the given targets every second, with our alert rules."""

    def __init__(self, directory: Path, targets: dict[str, str]) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "evaluation_interval": "1s",
            },
            "rule_files": [str(ALERTS)],
            # The labels the chart's monitors give every target of a gateway's pods.
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [target], "labels": GATEWAY}]}
                for job, target in targets.items()
            ],
        }
        config_file = directory / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(config))
        self.log = directory / "prometheus.log"
        self.child: Child = start_child(
            "prometheus",
            [
                tool("prometheus"),
                f"--config.file={config_file}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            log_file=self.log,
        )

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def query(self, expr: str) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        answer: dict[str, Any] = response.json()
        return answer

    def values(self, expr: str, label: str) -> dict[str, float]:
        """``{label value: sample value}`` of an instant vector."""
        return {
            series["metric"].get(label, ""): float(series["value"][1])
            for series in self.query(expr).get("data", {}).get("result", [])
        }

    def rules(self) -> list[dict[str, Any]]:
        groups = httpx.get(f"{self.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
        return [rule for group in groups for rule in group["rules"]]


def must_have_data() -> list[tuple[str, str]]:
    """``(where, expression)`` pairs that must each return data from the running stack."""
    checks = [(f"dashboard: {title}", expr) for title, expr in dashboard_targets()]
    for variable in dashboard()["templating"]["list"]:
        query = variable.get("definition", "")
        match = re.fullmatch(r"label_values\((\w+(?:\{[^}]*\})?),\s*(\w+)\)", query)
        if match:  # label_values(metric, label): the metric has series with that label
            metric, label = match.groups()
            metric = substitute(metric)
            checks.append((f"variable ${variable['name']}", f"count by ({label}) ({metric})"))
    for rule in alert_rules():
        parts = series_expressions(rule["expr"])
        assert parts, rule["alert"]
        checks += [(f"alert {rule['alert']} (series)", part) for part in parts]
    return checks


EXPECTED_INTAKE = {
    "accepted": 12.0,
    "duplicate": 2.0,
    "invalid_signature": 3.0,
    "intake_unavailable": 1.0,
}


def expression_problems(prometheus: Prometheus) -> list[str]:
    """Every series expression returns data; every full alert expression evaluates."""
    found: list[str] = []
    for where, expr in must_have_data():
        answer = prometheus.query(expr)
        if answer.get("status") != "success":
            found.append(f"{where}: {answer.get('error')} in {expr}")
        elif not answer["data"]["result"]:
            found.append(f"{where}: no data for {expr}")
    for rule in alert_rules():
        answer = prometheus.query(rule["expr"])
        if answer.get("status") != "success":
            found.append(f"alert {rule['alert']}: {answer.get('error')}")
    return found


def traffic_problems(prometheus: Prometheus) -> list[str]:
    """Both targets are scraped and what Prometheus counts is what the test sent."""
    found: list[str] = []
    up = prometheus.values("up", "job")
    if up != {"ingress": 1.0, "worker": 1.0}:
        found.append(f"scrapes failing: up = {up}")
    # Summed over the two ingress processes by the multiprocess collector.
    intake = prometheus.values(
        "sum by (outcome) (courier_gateway_intake_requests_total)", "outcome"
    )
    # Series primed at zero (every outcome exists from the start) are not traffic.
    intake = {outcome: value for outcome, value in intake.items() if value}
    if intake != EXPECTED_INTAKE:
        found.append(f"intake requests {intake}, sent {EXPECTED_INTAKE}")
    outcomes = prometheus.values(
        "sum by (outcome) (courier_gateway_worker_outcomes_total)", "outcome"
    )
    # The event refused with 503 may still be written once Redis resumes: 8 or 9 processed.
    if not (
        outcomes.get("processed", 0) >= 8
        and outcomes.get("retried") == 2.0
        and outcomes.get("dead_lettered") == 4.0
    ):
        found.append(f"worker outcomes {outcomes}")
    pending = prometheus.values("max(courier_gateway_dead_letters_pending)", "")
    if pending != {"": 4.0}:
        found.append(f"dead letters pending {pending}")
    return found


def rule_problems(prometheus: Prometheus) -> list[str]:
    """Prometheus loaded every alert and evaluates it cleanly; two states are known here."""
    found: list[str] = []
    states = {r["name"]: r for r in prometheus.rules() if r["type"] == "alerting"}
    if set(states) != {rule["alert"] for rule in alert_rules()}:
        found.append(f"rules loaded by Prometheus: {sorted(states)}")
    for name, rule in states.items():
        if rule["health"] != "ok":
            found.append(f"rule {name}: health {rule['health']} {rule.get('lastError')}")
    # A worker consumes; the dead-letter backlog grew from 0 to 4 (firing needs 5 minutes).
    expected = {
        "CourierGatewayNoWorkerConsuming": "inactive",
        "CourierGatewayDeadLettersGrowing": "pending",
    }
    for name, state in expected.items():
        if states.get(name, {}).get("state") != state:
            found.append(f"{name} is {states.get(name, {}).get('state')}, not {state}")
    return found


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A private Redis: the test pauses its writes to provoke real 503s."""
    server = RedisServer(tmp_path / "redis")
    server.directory.mkdir()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def send_traffic(stack: StackEnv, redis_server: RedisServer, failing: set[str]) -> None:
    """One 503, 12 accepted (8 good, 2 unknown event types, 2 the downstream refuses),
    2 duplicates and 3 bad signatures."""
    with httpx.Client(timeout=10) as http:
        # 503 INTAKE_UNAVAILABLE: Redis holds every write longer than ENQUEUE_TIMEOUT_MS.
        pauser = redis_server.client()
        pauser.execute_command("CLIENT", "PAUSE", "3000", "WRITE")
        try:
            [unavailable] = post_events(stack.url, [event()], http)
        finally:
            pauser.execute_command("CLIENT", "UNPAUSE")
            pauser.close()
        assert unavailable.status_code == 503, unavailable.text
        assert unavailable.json()["errorCode"] == "INTAKE_UNAVAILABLE"

        good = [event() for _ in range(8)]
        teleported = [event(eventType="shipment.teleported") for _ in range(2)]
        refused_downstream = [event() for _ in range(2)]
        failing.update(f"courier:{document['eventId']}" for document in refused_downstream)
        accepted = post_events(stack.url, good + teleported + refused_downstream, http)
        assert [r.status_code for r in accepted] == [202] * 12
        duplicates = post_events(stack.url, good[:2], http)
        assert [r.json()["duplicate"] for r in duplicates] == [True, True]
        for _ in range(3):
            body, headers = signed(event(), "not-the-courier-secret")
            response = http.post(f"{stack.url}/v1/events/courier", content=body, headers=headers)
            assert response.status_code == 401


def test_every_expression_returns_data_from_a_real_prometheus(
    own_redis: RedisServer, start: StartGateway, store_server: StoreServer, tmp_path: Path
) -> None:
    failing: set[str] = set()  # idempotency keys the downstream answers 503

    def respond(request: Received, count: int) -> tuple[int, dict[str, str]]:
        return (503 if request.headers.get("idempotency-key") in failing else 200), {}

    downstream = Downstream(respond=respond).start()
    prometheus: Prometheus | None = None
    try:
        worker_port = free_port()
        stack = StackEnv.create(
            own_redis,
            store_server,
            INGRESS_WORKERS="2",
            WORKER_METRICS_PORT=str(worker_port),
            **downstream.env(),
            RETRY_BASE_DELAY_MS="100",
            RETRY_MAX_ATTEMPTS="2",  # 4 downstream failures in a row at most: the breaker's
            ENQUEUE_TIMEOUT_MS="300",  # threshold is 5, so it stays closed and nothing defers
        )
        start("ingress", stack.env)
        start("worker", stack.env, wait_ready=False)  # its /ready is on WORKER_METRICS_PORT
        worker_url = f"http://127.0.0.1:{worker_port}"

        def worker_ready() -> bool:
            try:
                return httpx.get(f"{worker_url}/ready", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        assert wait_for(worker_ready, timeout=20, interval=0.1)
        scraper = prometheus = Prometheus(
            tmp_path / "prometheus",
            {"ingress": stack.url.removeprefix("http://"), "worker": f"127.0.0.1:{worker_port}"},
        )
        assert wait_until(scraper.ready, timeout=20, child=scraper.child), scraper.log.read_text()
        # Prometheus sees the quiet stack first, as it would in production: the alert on a
        # growing dead-letter backlog compares with the backlog before the traffic.
        assert wait_for(
            lambda: (
                scraper.values("count_over_time(up[1m]) >= 2", "job").keys()
                == {"ingress", "worker"}
            ),
            timeout=15,
            interval=0.2,
        )

        send_traffic(stack, own_redis, failing)
        assert stack.wait_terminal(12, timeout=30)
        assert stack.count("dead_letter_events") == 4  # 2 UNKNOWN_EVENT_TYPE, 2 RETRIES_EXHAUSTED

        def problems() -> list[str]:
            return [
                *expression_problems(scraper),
                *traffic_problems(scraper),
                *rule_problems(scraper),
            ]

        # A few scrapes after the traffic: new series need two samples inside a rate window.
        wait_for(lambda: not problems(), timeout=30, interval=1)
        found = problems()
        assert not found, "\n".join(found)
    finally:
        if prometheus is not None:
            prometheus.child.stop(timeout=10)
        downstream.stop()
