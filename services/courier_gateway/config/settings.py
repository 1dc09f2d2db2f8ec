"""The settings object: every environment variable the gateway reads, validated at start-up.

One object serves every role so the README's configuration table has a single source of truth.
Values a role cannot run without (for example ``REDIS_URL`` for the ingress) are optional here and
demanded by :meth:`Settings.require`, so ``courier-gateway sign`` works without a Redis URL.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from courier_gateway import __version__
from courier_gateway.config._errors import ConfigError, describe_validation_error

__all__ = ["Settings", "parse_addresses"]

_SECRET_VARIABLES = frozenset({"SIGNING_SECRET", "DOWNSTREAM_SIGNING_SECRET"})


def parse_addresses(text: str) -> list[tuple[str, int]]:
    """``host:port,host:port`` as pairs; ``ValueError`` naming the first bad one."""
    addresses: list[tuple[str, int]] = []
    for item in (part.strip() for part in text.split(",")):
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"expected host:port[,host:port...], got {item[:60]!r}")
        addresses.append((host.strip("[]"), int(port)))
    return addresses


class Settings(BaseModel):
    """Validated configuration; build it with :meth:`Settings.from_env`.

    Field aliases are the environment variable names; the defaults here are the ones the README's
    configuration table lists.
    """

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    api_host: str = Field("127.0.0.1", alias="API_HOST", min_length=1)
    api_port: Annotated[int, Field(ge=1, le=65535)] = Field(3000, alias="API_PORT")
    redis_url: str | None = Field(None, alias="REDIS_URL")
    redis_mode: Literal["standalone", "sentinel", "cluster"] = Field(
        "standalone", alias="REDIS_MODE"
    )
    redis_sentinels: str | None = Field(None, alias="REDIS_SENTINELS")
    redis_sentinel_master: str = Field(
        "mymaster", alias="REDIS_SENTINEL_MASTER", pattern=r"^[A-Za-z0-9._-]{1,128}$"
    )
    queue_partitions: Annotated[int, Field(ge=1, le=256)] = Field(1, alias="QUEUE_PARTITIONS")
    enqueue_min_replicas: Annotated[int, Field(ge=0, le=16)] = Field(
        0, alias="ENQUEUE_MIN_REPLICAS"
    )
    mongo_uri: str | None = Field(None, alias="MONGO_URI")
    mongo_db: str = Field("courier_gateway", alias="MONGO_DB", pattern=r"^[A-Za-z0-9_-]{1,63}$")
    signing_secret: SecretStr | None = Field(None, alias="SIGNING_SECRET")
    signature_tolerance_seconds: Annotated[int, Field(ge=1, le=86400)] = Field(
        300, alias="SIGNATURE_TOLERANCE_SECONDS"
    )
    sources_file: Path | None = Field(None, alias="SOURCES_FILE")
    adapters_dir: Path | None = Field(None, alias="ADAPTERS_DIR")
    trusted_proxy_header: str | None = Field(
        None, alias="TRUSTED_PROXY_HEADER", pattern=r"^[A-Za-z0-9-]{1,100}$"
    )
    max_body_bytes: Annotated[int, Field(ge=1024, le=16 * 1024 * 1024)] = Field(
        262144, alias="MAX_BODY_BYTES"
    )
    ingress_workers: Annotated[int, Field(ge=1, le=64)] = Field(1, alias="INGRESS_WORKERS")
    enqueue_timeout_ms: Annotated[int, Field(ge=10, le=60000)] = Field(
        2000, alias="ENQUEUE_TIMEOUT_MS"
    )
    intake_retry_after_seconds: Annotated[int, Field(ge=1, le=3600)] = Field(
        2, alias="INTAKE_RETRY_AFTER_SECONDS"
    )
    dedup_hint_ttl_seconds: Annotated[int, Field(ge=0, le=7 * 86400)] = Field(
        3600, alias="DEDUP_HINT_TTL_SECONDS"
    )
    secrets_reload_seconds: Annotated[float, Field(ge=0.1, le=60)] = Field(
        1.0, alias="SECRETS_RELOAD_SECONDS"
    )
    queue_stream: str = Field(
        "courier-events", alias="QUEUE_STREAM", pattern=r"^[A-Za-z0-9:._-]{1,128}$"
    )
    shutdown_grace_seconds: Annotated[float, Field(ge=0, le=600)] = Field(
        15.0, alias="SHUTDOWN_GRACE_SECONDS"
    )
    shutdown_delay_seconds: Annotated[float, Field(ge=0, le=120)] = Field(
        0.0, alias="SHUTDOWN_DELAY_SECONDS"
    )
    request_head_timeout_seconds: Annotated[float, Field(gt=0, le=300)] = Field(
        10.0, alias="REQUEST_HEAD_TIMEOUT_SECONDS"
    )
    request_body_timeout_seconds: Annotated[float, Field(gt=0, le=600)] = Field(
        30.0, alias="REQUEST_BODY_TIMEOUT_SECONDS"
    )
    max_header_bytes: Annotated[int, Field(ge=1024, le=16384)] = Field(
        8192, alias="MAX_HEADER_BYTES"
    )
    max_connections: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        4096, alias="MAX_CONNECTIONS"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", alias="LOG_LEVEL")
    # Read by the OpenTelemetry exporter itself; checked here so a typo stops the start-up.
    otel_exporter_otlp_protocol: Literal["", "http/protobuf", "grpc"] = Field(
        "", alias="OTEL_EXPORTER_OTLP_PROTOCOL"
    )
    otel_exporter_otlp_traces_protocol: Literal["", "http/protobuf", "grpc"] = Field(
        "", alias="OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
    )

    # Worker.
    worker_concurrency: Annotated[int, Field(ge=1, le=1000)] = Field(10, alias="WORKER_CONCURRENCY")
    worker_idle_timeout_ms: Annotated[int, Field(ge=500, le=3_600_000)] = Field(
        30000, alias="WORKER_IDLE_TIMEOUT_MS"
    )
    worker_drain_timeout_ms: Annotated[int, Field(ge=0, le=3_600_000)] = Field(
        30000, alias="WORKER_DRAIN_TIMEOUT_MS"
    )
    worker_id: str | None = Field(None, alias="WORKER_ID", pattern=r"^[A-Za-z0-9._-]{1,64}$")
    worker_metrics_port: Annotated[int, Field(ge=0, le=65535)] = Field(
        9100, alias="WORKER_METRICS_PORT"
    )
    stream_trim_interval_seconds: Annotated[float, Field(ge=0.1, le=3600)] = Field(
        10.0, alias="STREAM_TRIM_INTERVAL_SECONDS"
    )
    store_timeout_ms: Annotated[int, Field(ge=100, le=120_000)] = Field(
        5000, alias="STORE_TIMEOUT_MS"
    )
    retry_max_attempts: Annotated[int, Field(ge=1, le=100)] = Field(5, alias="RETRY_MAX_ATTEMPTS")
    retry_base_delay_ms: Annotated[int, Field(ge=1, le=3_600_000)] = Field(
        1000, alias="RETRY_BASE_DELAY_MS"
    )
    retry_max_delay_ms: Annotated[int, Field(ge=1, le=86_400_000)] = Field(
        300_000, alias="RETRY_MAX_DELAY_MS"
    )
    retry_jitter: Annotated[float, Field(ge=0, le=1)] = Field(0.2, alias="RETRY_JITTER")
    defer_max_seconds: Annotated[int, Field(ge=1, le=365 * 86400)] = Field(
        86400, alias="DEFER_MAX_SECONDS"
    )

    # Downstream delivery (optional).
    downstream_url: str | None = Field(None, alias="DOWNSTREAM_URL")
    downstream_signing_secret: SecretStr | None = Field(None, alias="DOWNSTREAM_SIGNING_SECRET")
    downstream_timeout_ms: Annotated[int, Field(ge=10, le=120_000)] = Field(
        5000, alias="DOWNSTREAM_TIMEOUT_MS"
    )
    breaker_failure_threshold: Annotated[int, Field(ge=1, le=1000)] = Field(
        5, alias="BREAKER_FAILURE_THRESHOLD"
    )
    breaker_cooldown_seconds: Annotated[float, Field(ge=0.1, le=3600)] = Field(
        30.0, alias="BREAKER_COOLDOWN_SECONDS"
    )

    # Operator (``courier-gateway operator``).
    operator_namespaces: str = Field(
        "", alias="OPERATOR_NAMESPACES", pattern=r"^[a-z0-9]([-a-z0-9,]*[a-z0-9])?$"
    )
    operator_peering: str = Field(
        "courier-gateway", alias="OPERATOR_PEERING", pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
    )
    operator_interval_seconds: Annotated[float, Field(ge=0.1, le=3600)] = Field(
        10.0, alias="OPERATOR_INTERVAL_SECONDS"
    )
    operator_health_port: Annotated[int, Field(ge=0, le=65535)] = Field(
        8080, alias="OPERATOR_HEALTH_PORT"
    )
    operator_image: str = Field(
        # The operator's own version: gateways run what the operator was built with.
        f"ghcr.io/courier-gateway/courier-gateway:{__version__}",
        alias="OPERATOR_IMAGE",
        pattern=r"^\S{1,512}$",
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("expected a URL starting with redis://, rediss:// or unix://")
        return value

    @field_validator("redis_sentinels")
    @classmethod
    def _sentinel_addresses(cls, value: str | None) -> str | None:
        if value is not None:
            parse_addresses(value)
        return value

    @field_validator("mongo_uri")
    @classmethod
    def _mongo_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("mongodb://", "mongodb+srv://")):
            raise ValueError("expected a URI starting with mongodb:// or mongodb+srv://")
        return value

    @field_validator("downstream_url")
    @classmethod
    def _http_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("expected a URL starting with http:// or https://")
        return value

    @field_validator("signing_secret", "downstream_signing_secret")
    @classmethod
    def _secret_not_blank(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().strip()) < 8:
            raise ValueError("must be at least 8 characters")
        return value

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and validate the settings; raise :class:`ConfigError` naming the bad variable.

        Empty variables count as unset, as they do for most twelve-factor tools.
        """
        source = os.environ if environ is None else environ
        names = {name: field.alias for name, field in cls.model_fields.items() if field.alias}
        values = {alias: source[alias] for alias in names.values() if source.get(alias, "") != ""}
        try:
            return cls.model_validate(values)
        except ValidationError as error:
            raise ConfigError(
                describe_validation_error(error, names=names, secret=_SECRET_VARIABLES)
            ) from None

    @property
    def sentinels(self) -> list[tuple[str, int]]:
        """``REDIS_SENTINELS`` as (host, port) pairs (empty when unset)."""
        return parse_addresses(self.redis_sentinels) if self.redis_sentinels else []

    def require_redis(self) -> None:
        """Raise :class:`ConfigError` unless the chosen ``REDIS_MODE`` has what it needs.

        Standalone and cluster connect to ``REDIS_URL`` (in cluster mode: any node, the others
        are discovered); sentinel mode asks ``REDIS_SENTINELS`` for the primary, and takes only
        credentials, database and TLS from an optional ``REDIS_URL``.
        """
        if self.redis_mode == "sentinel":
            if not self.redis_sentinels:
                raise ConfigError("REDIS_SENTINELS: is required when REDIS_MODE is sentinel")
        else:
            self.require("REDIS_URL")
        if self.redis_mode == "cluster" and self.redis_url and self.redis_url.startswith("unix"):
            raise ConfigError("REDIS_URL: a Redis Cluster is reached over TCP, not a unix socket")

    def require(self, *variables: str) -> None:
        """Raise :class:`ConfigError` unless every named variable has a value."""
        fields = {field.alias: name for name, field in type(self).model_fields.items()}
        for variable in variables:
            if getattr(self, fields[variable]) is None:
                raise ConfigError(f"{variable}: is required")

    @classmethod
    def variables(cls) -> dict[str, object]:
        """Every variable with its default, in declaration order (for docs and their test)."""
        return {str(field.alias): field.default for field in cls.model_fields.values()}
