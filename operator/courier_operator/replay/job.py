"""The Job that carries out a ReplayRequest: ``courier-gateway replay`` in the gateway's image.

The request id is ``<namespace>/<name>`` of the ReplayRequest: the replay skips entries already
replayed under that id, so a Job that runs twice (a retried pod, a re-created request with the
same name) replays nothing twice.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from courier_operator.gateway.spec import GatewaySpec, describe_spec_error
from courier_operator.gateway.workloads import (
    CONTAINER_SECURITY,
    adapters_volume,
    pod_security,
    queue_env,
    scheduling,
)
from courier_operator.objects import MANAGED_BY, owner_reference

__all__ = ["InvalidRequestError", "ReplaySpec", "job_name", "parse_replay_spec", "replay_job"]

REQUEST_LABEL = "gateway.courier.dev/replay-request"


class InvalidRequestError(ValueError):
    """The request's spec breaks a rule; the message names the field."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Selector(_Model):
    """Which pending dead letters: every given criterion must match."""

    eventIds: list[str] = Field(default_factory=list, max_length=1000)  # noqa: N815
    reasonCodes: list[str] = Field(default_factory=list, max_length=50)  # noqa: N815
    sources: list[str] = Field(default_factory=list, max_length=32)
    since: datetime | None = None
    until: datetime | None = None
    all: bool = False

    @model_validator(mode="after")
    def _chosen(self) -> Selector:
        chosen = self.eventIds or self.reasonCodes or self.sources or self.since or self.until
        if not chosen and not self.all:
            raise ValueError("choose eventIds, reasonCodes, sources, since/until, or all=true")
        for moment in (self.since, self.until):
            if moment is not None and moment.tzinfo is None:
                raise ValueError("since and until need a time zone (e.g. 2026-11-25T10:00:00Z)")
        if self.since and self.until and self.since >= self.until:
            raise ValueError("since must be earlier than until")
        return self


class GatewayRef(_Model):
    """The CourierGateway, in the request's namespace."""

    name: str = Field(min_length=1, max_length=253)


class ReplaySpec(_Model):
    """``spec`` of a ReplayRequest."""

    gatewayRef: GatewayRef  # noqa: N815
    selector: Selector
    limit: int = Field(100, ge=1, le=100_000)
    rate: float = Field(50.0, gt=0, le=10_000)
    dryRun: bool = False  # noqa: N815
    discard: bool = False
    activeDeadlineSeconds: int = Field(3600, ge=10, le=86400)  # noqa: N815


def parse_replay_spec(spec: Any) -> ReplaySpec:
    """Validate ``spec``; raise :class:`InvalidRequestError` naming the first bad field."""
    try:
        return ReplaySpec.model_validate(spec or {})
    except ValidationError as error:
        raise InvalidRequestError(describe_spec_error(error)) from None


def job_name(request: dict[str, Any]) -> str:
    """``replay-<name>``, shortened with a digest when it would pass 63 characters."""
    name = f"replay-{request['metadata']['name']}"
    if len(name) <= 63:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[:54].rstrip('-.')}-{digest}"


def request_id(request: dict[str, Any]) -> str:
    """The replay's idempotency id: ``<namespace>/<name>``."""
    return f"{request['metadata']['namespace']}/{request['metadata']['name']}"


def replay_arguments(request: dict[str, Any], spec: ReplaySpec) -> list[str]:
    """The ``courier-gateway`` arguments of the Job's container."""
    args = ["replay"]
    selector = spec.selector
    args += [arg for event_id in selector.eventIds for arg in ("--event-id", event_id)]
    args += [arg for reason in selector.reasonCodes for arg in ("--reason", reason)]
    args += [arg for source in selector.sources for arg in ("--source", source)]
    if selector.since:
        args += ["--since", selector.since.isoformat()]
    if selector.until:
        args += ["--until", selector.until.isoformat()]
    if selector.all:
        args.append("--all")
    args += ["--limit", str(spec.limit), "--rate", str(spec.rate)]
    args += ["--request-id", request_id(request), "--json"]
    if spec.dryRun:
        args.append("--dry-run")
    if spec.discard:
        args.append("--discard")
    return args


def replay_job(
    request: dict[str, Any], spec: ReplaySpec, gateway: dict[str, Any], gateway_spec: GatewaySpec
) -> dict[str, Any]:
    """The Job manifest, owned by the ReplayRequest."""
    labels = {
        "app.kubernetes.io/name": "courier-gateway",
        "app.kubernetes.io/instance": gateway["metadata"]["name"],
        "app.kubernetes.io/component": "replay",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        # The Job's name, not the request's: a label value holds at most 63 characters. The
        # operator finds the request through the Job's owner reference.
        REQUEST_LABEL: job_name(request),
    }
    mongo_ref = gateway_spec.mongo.uriSecretRef
    env = [
        # The gateway's queue as its pods see it: replayed copies go to the partition its
        # workers read, confirmed by as many replicas as the ingress asks for.
        *queue_env(gateway_spec),
        {"name": "MONGO_DB", "value": gateway_spec.mongo.database},
        {"name": "LOG_LEVEL", "value": gateway_spec.logLevel},
        {
            "name": "MONGO_URI",
            "valueFrom": {"secretKeyRef": {"name": mongo_ref.name, "key": mongo_ref.key}},
        },
    ]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]  # noqa: S108 - private
    volumes: list[dict[str, Any]] = [
        {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}}
    ]
    custom = adapters_volume(gateway_spec)
    if custom is not None:
        # UNMAPPED dead letters are re-mapped with the custom adapters as they are now.
        volumes.append(custom[0])
        mounts.append(custom[1])
        env.append(custom[2])
    container = {
        "name": "replay",
        "image": gateway_spec.image,
        "imagePullPolicy": gateway_spec.imagePullPolicy,
        "args": replay_arguments(request, spec),
        "env": env,
        "securityContext": CONTAINER_SECURITY,
        "resources": {
            "requests": {"cpu": "50m", "memory": "96Mi"},
            "limits": {"memory": "256Mi"},
        },
        "volumeMounts": mounts,
    }
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": pod_security(gateway_spec.worker.pod),
        "containers": [container],
        # The root filesystem is read-only, as in the gateway's pods.
        "volumes": volumes,
        # Where the worker may run, the replay may too (it talks to the same stores).
        **{key: value for key, value in scheduling(gateway_spec.worker.pod).items() if value},
    }
    if gateway_spec.imagePullSecrets:
        pod["imagePullSecrets"] = [{"name": s["name"]} for s in gateway_spec.imagePullSecrets]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(request),
            "namespace": request["metadata"]["namespace"],
            "labels": labels,
            "ownerReferences": [owner_reference(request)],
        },
        "spec": {
            # One attempt: a failed replay is reported, and re-running is a new decision.
            "backoffLimit": 0,
            "activeDeadlineSeconds": spec.activeDeadlineSeconds,
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }


Phase = Literal["Pending", "Running", "Succeeded", "Failed"]


def job_phase(job: dict[str, Any]) -> tuple[Phase, str]:
    """The request's phase as the Job's status tells it, and a message."""
    status = job.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") == "Complete":
            return "Succeeded", "the replay job completed"
        if condition.get("type") == "Failed":
            reason = condition.get("reason") or "Failed"
            return "Failed", f"the replay job failed ({reason}): {condition.get('message', '')}"
    if status.get("succeeded"):
        return "Succeeded", "the replay job completed"
    if status.get("failed"):
        return "Failed", "the replay job's pod failed"
    if status.get("active") or status.get("startTime"):
        return "Running", "the replay job is running"
    return "Pending", "the replay job is waiting for its pod"
