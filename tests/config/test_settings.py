"""Start-up validation of the environment: a bad value stops the ingress with one clear line.

Proved here, with ``courier-gateway ingress`` run as a real process on a controlled environment:
every malformed, out-of-range or missing variable ends the process with exit code 2 and exactly
one line on stderr that names the variable, never a traceback, and never the value of
``SIGNING_SECRET``. At unit level: :meth:`Settings.from_env` yields every documented default,
treats empty variables as unset, and :meth:`Settings.require` names what is missing.

The processes are independent, so they run concurrently once per module and each test checks
its own outcome; this keeps the module fast without weakening any check.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from courier_gateway.config import ConfigError, Settings

# A distinctive secret: no output of any failing start may contain it.
SECRET = "s3cret-Value-never-shown-7f3a"
SHORT_SECRET = "tiny-7c"

VALID = {
    # Port 1 is never contacted: every case fails before a connection is attempted.
    "REDIS_URL": "redis://127.0.0.1:1/0",
    "SIGNING_SECRET": SECRET,
}

# case id -> (environment changes, the variable the error must name); None removes a variable.
CASES: dict[str, tuple[dict[str, str | None], str]] = {
    "port-not-a-number": ({"API_PORT": "abc"}, "API_PORT"),
    "port-too-high": ({"API_PORT": "70000"}, "API_PORT"),
    "redis-missing": ({"REDIS_URL": None}, "REDIS_URL"),
    "redis-empty": ({"REDIS_URL": ""}, "REDIS_URL"),
    "redis-not-redis": ({"REDIS_URL": "http://x"}, "REDIS_URL"),
    "mongo-not-mongo": ({"MONGO_URI": "foo"}, "MONGO_URI"),
    "redis-mode-unknown": ({"REDIS_MODE": "replicated"}, "REDIS_MODE"),
    "sentinels-missing": ({"REDIS_MODE": "sentinel"}, "REDIS_SENTINELS"),
    "sentinels-not-addresses": (
        {"REDIS_MODE": "sentinel", "REDIS_SENTINELS": "10.0.0.1:26379,sentinel-b"},
        "REDIS_SENTINELS",
    ),
    "partitions-zero": ({"QUEUE_PARTITIONS": "0"}, "QUEUE_PARTITIONS"),
    "min-replicas-negative": ({"ENQUEUE_MIN_REPLICAS": "-1"}, "ENQUEUE_MIN_REPLICAS"),
    "tolerance-zero": ({"SIGNATURE_TOLERANCE_SECONDS": "0"}, "SIGNATURE_TOLERANCE_SECONDS"),
    "body-limit-one-byte": ({"MAX_BODY_BYTES": "1"}, "MAX_BODY_BYTES"),
    "workers-zero": ({"INGRESS_WORKERS": "0"}, "INGRESS_WORKERS"),
    "enqueue-timeout-negative": ({"ENQUEUE_TIMEOUT_MS": "-5"}, "ENQUEUE_TIMEOUT_MS"),
    "log-level-unknown": ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
    "otlp-protocol-unknown": (
        {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ),
    "secret-missing": ({"SIGNING_SECRET": None}, "SIGNING_SECRET"),
    "secret-too-short": ({"SIGNING_SECRET": SHORT_SECRET}, "SIGNING_SECRET"),
}

DEFAULTS: dict[str, object] = {
    "API_HOST": "127.0.0.1",
    "API_PORT": 3000,
    "REDIS_URL": None,
    "REDIS_MODE": "standalone",
    "REDIS_SENTINELS": None,
    "REDIS_SENTINEL_MASTER": "mymaster",
    "QUEUE_PARTITIONS": 1,
    "ENQUEUE_MIN_REPLICAS": 0,
    "MONGO_URI": None,
    "MONGO_DB": "courier_gateway",
    "SIGNING_SECRET": None,
    "SIGNATURE_TOLERANCE_SECONDS": 300,
    "SOURCES_FILE": None,
    "ADAPTERS_DIR": None,
    "TRUSTED_PROXY_HEADER": None,
    "MAX_BODY_BYTES": 262144,
    "INGRESS_WORKERS": 1,
    "ENQUEUE_TIMEOUT_MS": 2000,
    "INTAKE_RETRY_AFTER_SECONDS": 2,
    "DEDUP_HINT_TTL_SECONDS": 3600,
    "SECRETS_RELOAD_SECONDS": 1.0,
    "QUEUE_STREAM": "courier-events",
    "SHUTDOWN_GRACE_SECONDS": 15.0,
    "SHUTDOWN_DELAY_SECONDS": 0.0,
    "REQUEST_HEAD_TIMEOUT_SECONDS": 10.0,
    "REQUEST_BODY_TIMEOUT_SECONDS": 30.0,
    "MAX_HEADER_BYTES": 8192,
    "MAX_CONNECTIONS": 4096,
    "LOG_LEVEL": "INFO",
    "OTEL_EXPORTER_OTLP_PROTOCOL": "",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "",
    "WORKER_CONCURRENCY": 10,
    "WORKER_IDLE_TIMEOUT_MS": 30000,
    "WORKER_DRAIN_TIMEOUT_MS": 30000,
    "WORKER_ID": None,
    "WORKER_METRICS_PORT": 9100,
    "STREAM_TRIM_INTERVAL_SECONDS": 10.0,
    "STORE_TIMEOUT_MS": 5000,
    "RETRY_MAX_ATTEMPTS": 5,
    "RETRY_BASE_DELAY_MS": 1000,
    "RETRY_MAX_DELAY_MS": 300000,
    "RETRY_JITTER": 0.2,
    "DEFER_MAX_SECONDS": 86400,
    "DOWNSTREAM_URL": None,
    "DOWNSTREAM_SIGNING_SECRET": None,
    "DOWNSTREAM_TIMEOUT_MS": 5000,
    "BREAKER_FAILURE_THRESHOLD": 5,
    "BREAKER_COOLDOWN_SECONDS": 30.0,
    "OPERATOR_NAMESPACES": "",
    "OPERATOR_PEERING": "courier-gateway",
    "OPERATOR_INTERVAL_SECONDS": 10.0,
    "OPERATOR_HEALTH_PORT": 8080,
    "OPERATOR_IMAGE": "ghcr.io/courier-gateway/courier-gateway:0.1.0",
}


def run_ingress(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``courier-gateway ingress`` with exactly ``env`` plus PATH; it must exit by itself."""
    return subprocess.run(
        [sys.executable, "-m", "courier_gateway", "ingress"],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_config_error(result: subprocess.CompletedProcess[str], *mentions: str) -> str:
    """Exit 2, one stderr line naming every item of ``mentions``, no traceback; return the line."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    for mention in mentions:
        assert mention in lines[0], lines[0]
    return lines[0]


def attribute(variable: str) -> str:
    """The :class:`Settings` attribute read from environment variable ``variable``."""
    for name, field in Settings.model_fields.items():
        if field.alias == variable:
            return name
    raise AssertionError(f"no setting reads {variable}")


@pytest.fixture(scope="module")
def outcomes() -> dict[str, subprocess.CompletedProcess[str]]:
    """Every case of ``CASES`` run as its own ingress process, concurrently."""

    def environment(changes: dict[str, str | None]) -> dict[str, str]:
        env = {**VALID, **changes}
        return {name: value for name, value in env.items() if value is not None}

    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {
            case: pool.submit(run_ingress, environment(changes))
            for case, (changes, _) in CASES.items()
        }
        return {case: future.result() for case, future in futures.items()}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_or_missing_variable_stops_the_ingress(
    outcomes: dict[str, subprocess.CompletedProcess[str]], case: str
) -> None:
    result = outcomes[case]
    _, variable = CASES[case]
    line = assert_config_error(result, variable)
    assert line.startswith(f"courier-gateway: configuration error: {variable}: "), line
    assert result.stdout == ""
    for secret in (SECRET, SHORT_SECRET):
        assert secret not in result.stderr


def test_bad_value_is_quoted_so_the_operator_sees_what_was_read(outcomes) -> None:
    assert "(got 'abc')" in outcomes["port-not-a-number"].stderr
    assert "(got 'LOUD')" in outcomes["log-level-unknown"].stderr


def test_short_signing_secret_says_what_is_expected(outcomes) -> None:
    assert "at least 8 characters" in outcomes["secret-too-short"].stderr


def test_missing_signing_secret_mentions_the_sources_file_alternative(outcomes) -> None:
    assert "SOURCES_FILE" in outcomes["secret-missing"].stderr


def test_defaults_are_the_documented_ones() -> None:
    settings = Settings.from_env({})
    actual = {variable: getattr(settings, attribute(variable)) for variable in DEFAULTS}
    assert actual == DEFAULTS
    assert Settings.variables() == DEFAULTS
    # A new setting must be added to DEFAULTS above, so its default is pinned by a test.
    assert list(Settings.variables()) == list(DEFAULTS)


def test_empty_strings_count_as_unset() -> None:
    settings = Settings.from_env(dict.fromkeys(DEFAULTS, ""))
    assert settings == Settings.from_env({})
    with pytest.raises(ConfigError, match=r"^REDIS_URL: is required$"):
        settings.require("REDIS_URL")
    with pytest.raises(ConfigError, match=r"^SIGNING_SECRET: is required$"):
        settings.require("SIGNING_SECRET")


def test_values_are_read_and_converted() -> None:
    settings = Settings.from_env(
        {
            "API_HOST": "0.0.0.0",
            "API_PORT": "8080",
            "REDIS_URL": "rediss://cache:6380/1",
            "MONGO_URI": "mongodb+srv://cluster.example",
            "SIGNING_SECRET": SECRET,
            "SOURCES_FILE": "/etc/courier/sources.yaml",
            "SECRETS_RELOAD_SECONDS": "0.5",
            "LOG_LEVEL": "debug",
            "UNRELATED": "ignored",
        }
    )
    assert settings.api_host == "0.0.0.0"
    assert settings.api_port == 8080
    assert settings.redis_url == "rediss://cache:6380/1"
    assert settings.mongo_uri == "mongodb+srv://cluster.example"
    assert settings.signing_secret is not None
    assert settings.signing_secret.get_secret_value() == SECRET
    assert SECRET not in repr(settings)
    assert settings.sources_file == Path("/etc/courier/sources.yaml")
    assert settings.secrets_reload_seconds == 0.5
    assert settings.log_level == "DEBUG"
    settings.require("REDIS_URL", "MONGO_URI", "SIGNING_SECRET")


def test_from_env_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_PORT", "4321")
    monkeypatch.setenv("QUEUE_STREAM", "")
    settings = Settings.from_env()
    assert settings.api_port == 4321
    assert settings.queue_stream == "courier-events"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("API_PORT", "0"),
        ("API_PORT", "65536"),
        ("MONGO_DB", "has space"),
        ("QUEUE_STREAM", "bad/stream"),
        ("SECRETS_RELOAD_SECONDS", "0"),
        ("SHUTDOWN_GRACE_SECONDS", "-1"),
        ("DEDUP_HINT_TTL_SECONDS", "nope"),
        ("INTAKE_RETRY_AFTER_SECONDS", "0"),
    ],
)
def test_from_env_error_names_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({variable: value})
    assert str(caught.value).startswith(f"{variable}: ")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("secret", ["abc1234", "   xy9   ", "        "])
def test_from_env_never_echoes_the_signing_secret(secret: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"SIGNING_SECRET": secret})
    message = str(caught.value)
    assert message.startswith("SIGNING_SECRET: ")
    assert "at least 8 characters" in message
    assert "got" not in message
    if secret.strip():
        assert secret.strip() not in message


@pytest.mark.parametrize(
    ("variable", "value"),
    [("REDIS_URL", "http://courier:hunter22@redis:6379"), ("MONGO_URI", "mongo://a:hunter22@db")],
)
def test_a_refused_url_is_quoted_without_its_credentials(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({variable: value})
    message = str(refused.value)
    assert message.startswith(f"{variable}: ")
    assert "hunter22" not in message
    assert "***@" in message  # where it points is still shown
