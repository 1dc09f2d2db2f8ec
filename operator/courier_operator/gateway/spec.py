"""The CourierGateway spec as the operator reads it, with the CRD's defaults and rules.

The API server applies the CRD's defaults and validation before the operator sees an object; the
same rules are repeated here because an object written before a CRD upgrade, or served by an API
without schema support, must still produce a clear condition instead of a crash.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = [
    "GatewaySpec",
    "InvalidSpecError",
    "SourceSpec",
    "check_gateway_name",
    "describe_spec_error",
    "parse_duration",
    "parse_gateway_spec",
]

_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(h|m|s)")
_DURATION = re.compile(r"^(?:[0-9]+(?:\.[0-9]+)?(?:h|m|s))+$")
_UNITS = {"h": 3600, "m": 60, "s": 1}


class InvalidSpecError(ValueError):
    """The spec breaks a rule; the message names the field."""


def parse_duration(text: str) -> timedelta:
    """A Go-style duration (``720h``, ``1h30m``, ``45s``) as a timedelta."""
    if not _DURATION.match(text):
        raise ValueError(f"{text!r} is not a duration like 720h, 30m or 45s")
    seconds = sum(float(n) * _UNITS[unit] for n, unit in _DURATION_PART.findall(text))
    return timedelta(seconds=seconds)


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class SecretKeyRef(_Model):
    """A key of a Secret in the gateway's namespace (``url`` unless given)."""

    name: str = Field(min_length=1)
    key: str = Field("url", pattern=r"^[-._a-zA-Z0-9]+$")


class MongoSecretKeyRef(SecretKeyRef):
    """The Secret key holding the MongoDB URI (``uri`` unless given)."""

    key: str = Field("uri", pattern=r"^[-._a-zA-Z0-9]+$")


class DownstreamSecretKeyRef(SecretKeyRef):
    """The Secret key holding the downstream signing secret (``secret`` unless given)."""

    key: str = Field("secret", pattern=r"^[-._a-zA-Z0-9]+$")


class Resources(_Model):
    """Container resources, passed through as given."""

    requests: dict[str, str | int] = Field(default_factory=dict)
    limits: dict[str, str | int] = Field(default_factory=dict)

    def manifest(self) -> dict[str, Any]:
        """The ``resources`` of a container; an empty part is ``None``, so it is removed."""
        return {key: value or None for key, value in self.model_dump().items()}


class SeccompProfile(_Model):
    """Seccomp of the pods: the restricted profile allows only these two."""

    type: Literal["RuntimeDefault", "Localhost"]
    localhostProfile: str | None = None  # noqa: N815


class PodSecurity(_Model):
    """Pod security overrides that stay within the restricted Pod Security Standard."""

    runAsUser: Annotated[int, Field(ge=1)] | None = None  # noqa: N815
    runAsGroup: Annotated[int, Field(ge=0)] | None = None  # noqa: N815
    fsGroup: Annotated[int, Field(ge=0)] | None = None  # noqa: N815
    fsGroupChangePolicy: Literal["Always", "OnRootMismatch"] | None = None  # noqa: N815
    supplementalGroups: list[Annotated[int, Field(ge=0)]] | None = None  # noqa: N815
    seccompProfile: SeccompProfile | None = None  # noqa: N815


class SpreadConstraint(_Model):
    """A topology spread constraint (core/v1), checked for the fields the operator relies on."""

    model_config = ConfigDict(extra="allow", frozen=True)

    maxSkew: Annotated[int, Field(ge=1)]  # noqa: N815
    topologyKey: str = Field(min_length=1)  # noqa: N815
    whenUnsatisfiable: Literal["DoNotSchedule", "ScheduleAnyway"]  # noqa: N815
    labelSelector: dict[str, Any] | None = None  # noqa: N815


class PodSpec(_Model):
    """Scheduling and metadata of one component's pods (``spec.ingress.pod``, ``spec.worker.pod``).

    Passed through as Kubernetes defines them; affinity and tolerations are not re-validated here
    (the API server does it when the Deployment is written, and the condition says so).
    """

    annotations: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    nodeSelector: dict[str, str] = Field(default_factory=dict)  # noqa: N815
    affinity: dict[str, Any] | None = None
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    topologySpreadConstraints: list[SpreadConstraint] | None = None  # noqa: N815
    priorityClassName: str | None = Field(None, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")  # noqa: N815
    securityContext: PodSecurity = Field(default_factory=PodSecurity)  # noqa: N815


class IngressSpec(_Model):
    """How the HTTP ingress runs."""

    replicas: Annotated[int, Field(ge=1, le=100)] = 2
    processes: Annotated[int, Field(ge=1, le=64)] = 1
    maxBodyBytes: Annotated[int, Field(ge=1024, le=16_777_216)] = 262_144  # noqa: N815
    serviceType: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"  # noqa: N815
    resources: Resources = Field(default_factory=Resources)
    pod: PodSpec = Field(default_factory=PodSpec)


class WorkerSpec(_Model):
    """How the worker runs and scales."""

    minReplicas: Annotated[int, Field(ge=1, le=100)] = 1  # noqa: N815
    maxReplicas: Annotated[int, Field(ge=1, le=100)] = 10  # noqa: N815
    concurrency: Annotated[int, Field(ge=1, le=1000)] = 10
    targetLagPerReplica: Annotated[int, Field(ge=1, le=10_000_000)] = 1000  # noqa: N815
    scaleDownStabilizationSeconds: Annotated[int, Field(ge=0, le=86400)] = 300  # noqa: N815
    resources: Resources = Field(default_factory=Resources)
    pod: PodSpec = Field(default_factory=PodSpec)

    @model_validator(mode="after")
    def _bounds(self) -> WorkerSpec:
        if self.minReplicas > self.maxReplicas:
            raise ValueError("minReplicas must not exceed maxReplicas")
        return self


# host:port of a sentinel: a DNS name or an IP (IPv6 in brackets), a port 1-65535. No commas:
# the list reaches the pods comma-joined (REDIS_SENTINELS).
SENTINEL_ADDRESS = (
    r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([-A-Za-z0-9._]*[A-Za-z0-9])?)"
    r":([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$"
)


class RedisSpec(_Model):
    """Where the queue lives: one Redis, a primary watched by Sentinel, or a Redis Cluster."""

    mode: Literal["standalone", "sentinel", "cluster"] = "standalone"
    #: Required unless ``mode`` is sentinel, where it only supplies credentials, database, TLS.
    urlSecretRef: SecretKeyRef | None = None  # noqa: N815
    sentinels: list[Annotated[str, Field(max_length=260, pattern=SENTINEL_ADDRESS)]] = Field(
        default_factory=list, max_length=16
    )
    sentinelMaster: str = Field("mymaster", pattern=r"^[A-Za-z0-9._-]{1,128}$")  # noqa: N815
    stream: str = Field("courier-events", pattern=r"^[A-Za-z0-9:._-]{1,128}$")
    partitions: Annotated[int, Field(ge=1, le=256)] = 1
    minReplicas: Annotated[int, Field(ge=0, le=16)] = 0  # noqa: N815

    @model_validator(mode="after")
    def _topology(self) -> RedisSpec:
        # The CRD's CEL rules on spec.redis, in the same order and words.
        if self.mode == "sentinel" and not self.sentinels:
            raise ValueError("sentinels are required when mode is sentinel")
        if self.mode != "sentinel" and self.sentinels:
            raise ValueError("sentinels are only used when mode is sentinel")
        if self.mode != "sentinel" and self.urlSecretRef is None:
            raise ValueError("urlSecretRef is required unless mode is sentinel")
        return self


class MongoSpec(_Model):
    """Where the shipments live."""

    uriSecretRef: MongoSecretKeyRef  # noqa: N815
    database: str = Field("courier_gateway", pattern=r"^[A-Za-z0-9_-]{1,63}$")


class DownstreamSpec(_Model):
    """Where processed events are delivered."""

    url: str | None = Field(None, pattern=r"^https?://\S+$")
    signingSecretRef: DownstreamSecretKeyRef | None = None  # noqa: N815
    timeoutMs: Annotated[int, Field(ge=10, le=120_000)] = 5000  # noqa: N815


class RetrySpec(_Model):
    """The worker's retry policy."""

    maxAttempts: Annotated[int, Field(ge=1, le=100)] = 5  # noqa: N815
    baseDelayMs: Annotated[int, Field(ge=1, le=3_600_000)] = 1000  # noqa: N815
    maxDelayMs: Annotated[int, Field(ge=1, le=86_400_000)] = 300_000  # noqa: N815
    jitter: Annotated[float, Field(ge=0, le=1)] = 0.2


class RateLimitSpec(_Model):
    """A source's token bucket."""

    perSecond: Annotated[float, Field(gt=0, le=1_000_000)]  # noqa: N815
    burst: Annotated[int, Field(ge=1, le=10_000_000)]


class RotationSpec(_Model):
    """Automatic key rotation of a source."""

    enabled: bool = False
    interval: str = "720h"
    overlap: str = "24h"

    @model_validator(mode="after")
    def _durations(self) -> RotationSpec:
        interval, overlap = parse_duration(self.interval), parse_duration(self.overlap)
        if self.enabled and overlap >= interval:
            raise ValueError("overlap must be shorter than interval")
        return self

    @property
    def interval_delta(self) -> timedelta:
        """The interval as a timedelta."""
        return parse_duration(self.interval)

    @property
    def overlap_delta(self) -> timedelta:
        """The overlap as a timedelta."""
        return parse_duration(self.overlap)


class SourceSpec(_Model):
    """A source that may post events, and its keys' rotation."""

    name: str = Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")
    scheme: Literal["v1", "standard-webhooks", "legacy-body"] = "v1"
    #: A provider's adapter (``fedex``, ``ship24``, or one of ``spec.adapters``), not a scheme.
    adapter: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    rateLimit: RateLimitSpec | None = None  # noqa: N815
    rotation: RotationSpec = Field(default_factory=RotationSpec)

    @model_validator(mode="after")
    def _scheme_or_adapter(self) -> SourceSpec:
        # The API server defaults scheme to v1, so only another scheme conflicts.
        if self.adapter is not None and self.scheme != "v1":
            raise ValueError("give scheme or adapter, not both")
        return self


class AdaptersSpec(_Model):
    """Custom adapters: a ConfigMap of adapter YAML files (one per key), mounted as ADAPTERS_DIR."""

    configMapName: str = Field(pattern=r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")  # noqa: N815


class SigningSpec(_Model):
    """Signature checking for every source."""

    toleranceSeconds: Annotated[int, Field(ge=1, le=86400)] = 300  # noqa: N815
    sources: list[SourceSpec] = Field(min_length=1, max_length=32)

    @model_validator(mode="after")
    def _unique(self) -> SigningSpec:
        names = [source.name for source in self.sources]
        if len(names) != len(set(names)):
            raise ValueError("source names must be unique")
        return self


class GatewaySpec(_Model):
    """``spec`` of a CourierGateway."""

    # None: the operator's own image (OPERATOR_IMAGE), filled in by :func:`parse_gateway_spec`.
    image: str | None = Field(None, min_length=1, max_length=512, pattern=r"^\S+$")
    imagePullPolicy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"  # noqa: N815
    imagePullSecrets: list[dict[str, str]] = Field(default_factory=list)  # noqa: N815
    serviceAccountName: str | None = None  # noqa: N815
    logLevel: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"  # noqa: N815
    ingress: IngressSpec = Field(default_factory=IngressSpec)
    worker: WorkerSpec = Field(default_factory=WorkerSpec)
    redis: RedisSpec
    mongo: MongoSpec
    downstream: DownstreamSpec = Field(default_factory=DownstreamSpec)
    retry: RetrySpec = Field(default_factory=RetrySpec)
    signing: SigningSpec
    adapters: AdaptersSpec | None = None


_GATEWAY_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$")


def check_gateway_name(name: str) -> None:
    """Raise :class:`InvalidSpecError` unless ``name`` can name Services and label values."""
    if not _GATEWAY_NAME.match(name):
        raise InvalidSpecError(
            f"metadata.name: {name!r} is not a valid gateway name (at most 40 lowercase letters,"
            " digits and '-', starting with a letter: it names a Service and labels)"
        )


def describe_spec_error(error: ValidationError) -> str:
    """The first problem of a spec, as ``spec.<field path>: <what is wrong>``."""
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    return f"spec.{where}: {message}" if where else f"spec: {message}"


def parse_gateway_spec(spec: Any, *, default_image: str | None = None) -> GatewaySpec:
    """Validate ``spec``; raise :class:`InvalidSpecError` naming the first bad field.

    ``default_image`` (the operator's own) stands in for an empty ``spec.image``.
    """
    try:
        parsed = GatewaySpec.model_validate(spec or {})
    except ValidationError as error:
        raise InvalidSpecError(describe_spec_error(error)) from None
    if parsed.image is None and default_image:
        parsed = parsed.model_copy(update={"image": default_image})
    return parsed
