"""Reconciling a CourierGateway: owned objects, signing keys, worker scale and status.

:func:`reconcile` is the one entry point. It is safe to run at any time and any number of times:
it reads the live objects, writes only what differs from the desired state, and writes the
status only when it changed. Handlers for create, update and resume call it; a timer calls it
with ``observe_queue=True`` to also read the queue lag, scale the worker and rotate keys; a watch
on the owned Deployments calls it when one is edited, which is how hand-made drift is undone.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from redis.exceptions import RedisClusterException, RedisError

from courier_gateway.config import ConfigError
from courier_gateway.queue.state import QueueState, read_queue_state
from courier_gateway.queue.topology import AsyncRedis
from courier_operator.conditions import Condition, merge_conditions
from courier_operator.context import OperatorContext, QueueAddress
from courier_operator.gateway.keys import ROTATE_ANNOTATION, KeyStatus, iso, plan_keys
from courier_operator.gateway.scaling import ScaleDecision, decide
from courier_operator.gateway.spec import (
    GatewaySpec,
    InvalidSpecError,
    SecretKeyRef,
    check_gateway_name,
    parse_gateway_spec,
)
from courier_operator.gateway.workloads import (
    ingress_deployment,
    pod_disruption_budget,
    service,
    source_secret_name,
    sources_configmap,
    worker_deployment,
)
from courier_operator.kube import (
    CONFIGMAPS,
    COURIER_GATEWAYS,
    DEPLOYMENTS,
    POD_DISRUPTION_BUDGETS,
    SECRETS,
    SERVICES,
    ApiError,
)
from courier_operator.objects import ensure, in_sync, prune

__all__ = ["REDIS_ERRORS", "queue_client", "read_secret_value", "reconcile"]

log = logging.getLogger(__name__)

#: What reading a gateway's queue may raise when its Redis cannot answer. A Cluster client that
#: reaches none of its nodes raises ``RedisClusterException``, which is not a ``RedisError``.
REDIS_ERRORS: tuple[type[Exception], ...] = (RedisError, RedisClusterException, OSError)


@dataclass
class _Observed:
    """What one pass found, for the status."""

    secrets_problem: str | None = None
    keys: list[KeyStatus] = field(default_factory=list)
    deployments: dict[str, dict[str, Any]] = field(default_factory=dict)
    queue: QueueState | None = None
    queue_problem: str | None = None
    scale: ScaleDecision | None = None
    worker_replicas: int = 0


async def reconcile(
    ctx: OperatorContext, namespace: str, name: str, *, observe_queue: bool
) -> None:
    """Bring one gateway's objects and status to what its spec asks for."""
    async with ctx.lock(namespace, name):
        gateway = await ctx.client.get(COURIER_GATEWAYS, namespace, name)
        if gateway is None or gateway["metadata"].get("deletionTimestamp"):
            return  # deleted: its objects go with it (owner references)
        now = ctx.now()
        try:
            check_gateway_name(name)
            spec = parse_gateway_spec(gateway.get("spec"), default_image=ctx.default_image)
        except InvalidSpecError as error:
            await _write_status(ctx, gateway, _invalid_status(gateway, str(error), now))
            return
        observed = _Observed()
        await _check_connection_secrets(ctx, gateway, spec, observed)
        await _sync_keys(ctx, gateway, spec, observed, now)
        await ensure(ctx.client, CONFIGMAPS, sources_configmap(gateway, spec))
        await ensure(ctx.client, SERVICES, service(gateway, spec))
        for component in ("ingress", "worker"):
            await ensure(
                ctx.client, POD_DISRUPTION_BUDGETS, pod_disruption_budget(gateway, component)
            )
        _, observed.deployments["ingress"] = await ensure(
            ctx.client, DEPLOYMENTS, ingress_deployment(gateway, spec)
        )
        observed.worker_replicas = _current_workers(gateway, spec)
        if observe_queue:
            await _scale(ctx, gateway, spec, observed, now)
        _, observed.deployments["worker"] = await ensure(
            ctx.client, DEPLOYMENTS, worker_deployment(gateway, spec, observed.worker_replicas)
        )
        await _write_status(ctx, gateway, _status(gateway, spec, observed, now, observe_queue))


def _current_workers(gateway: dict[str, Any], spec: GatewaySpec) -> int:
    # The scaler's last decision lives in the status; the Deployment may have been edited.
    desired = (gateway.get("status") or {}).get("worker", {}).get("desiredReplicas")
    current = int(desired) if isinstance(desired, int) else spec.worker.minReplicas
    return min(spec.worker.maxReplicas, max(spec.worker.minReplicas, current))


async def read_secret_value(
    ctx: OperatorContext, namespace: str, ref: SecretKeyRef
) -> tuple[str | None, str | None]:
    """The decoded value, or None and a message naming what is missing."""
    secret = await ctx.client.get(SECRETS, namespace, ref.name)
    if secret is None:
        return None, f"Secret {ref.name} not found"
    raw = (secret.get("data") or {}).get(ref.key)
    if raw is None:
        return None, f"Secret {ref.name} has no key {ref.key!r}"
    try:
        return base64.b64decode(raw).decode(), None
    except (ValueError, UnicodeDecodeError):
        return None, f"Secret {ref.name} key {ref.key!r} is not valid base64 text"


async def queue_client(
    ctx: OperatorContext, namespace: str, spec: GatewaySpec
) -> tuple[AsyncRedis | None, str | None]:
    """The operator's client for the gateway's queue, connected as its pods connect (the same
    mode, URL, sentinels and master); or None and a message saying what is missing."""
    redis = spec.redis
    url: str | None = None
    if redis.urlSecretRef is not None:
        url, problem = await read_secret_value(ctx, namespace, redis.urlSecretRef)
        if url is None:
            return None, problem
    address = QueueAddress(redis.mode, url, tuple(redis.sentinels), redis.sentinelMaster)
    try:
        return ctx.redis(address), None
    except ConfigError as error:
        return None, f"Redis settings not usable: {error}"


async def _check_connection_secrets(
    ctx: OperatorContext, gateway: dict[str, Any], spec: GatewaySpec, observed: _Observed
) -> None:
    namespace = gateway["metadata"]["namespace"]
    # The Redis URL's Secret is optional in sentinel mode.
    refs: list[SecretKeyRef | None] = [spec.redis.urlSecretRef, spec.mongo.uriSecretRef]
    if spec.downstream.signingSecretRef is not None:
        refs.append(spec.downstream.signingSecretRef)
    for ref in refs:
        if ref is None:
            continue
        _, problem = await read_secret_value(ctx, namespace, ref)
        if problem:
            observed.secrets_problem = problem
            return


async def _sync_keys(
    ctx: OperatorContext,
    gateway: dict[str, Any],
    spec: GatewaySpec,
    observed: _Observed,
    now: datetime,
) -> None:
    namespace = gateway["metadata"]["namespace"]
    token = (gateway["metadata"].get("annotations") or {}).get(ROTATE_ANNOTATION)
    for source in spec.signing.sources:
        name = source_secret_name(gateway, source.name)
        secret = await ctx.client.get(SECRETS, namespace, name)
        status, changes = plan_keys(gateway, source, secret, now, token)
        # Each write names the version it was planned on: two replicas rotating at once (a
        # peering hand-over) get a 409 for the second, which re-plans on the next pass. A new
        # Secret is applied without a version; a second replica's apply then only repeats it.
        version = (secret or {}).get("metadata", {}).get("resourceVersion")
        for change in changes:
            manifest = change.manifest
            if version:
                manifest = {
                    **manifest,
                    "metadata": {**manifest["metadata"], "resourceVersion": version},
                }
            try:
                written = await ctx.client.apply(SECRETS, manifest)
            except ApiError as error:
                if error.status != 409:
                    raise
                break  # written meanwhile by someone else: the next pass reads it
            version = written.get("metadata", {}).get("resourceVersion")
            log.info(
                change.message, extra={"gateway": f"{namespace}/{gateway['metadata']['name']}"}
            )
            ctx.post_event(gateway, "Normal", change.reason, change.message)
        observed.keys.append(status)


async def _scale(
    ctx: OperatorContext,
    gateway: dict[str, Any],
    spec: GatewaySpec,
    observed: _Observed,
    now: datetime,
) -> None:
    namespace = gateway["metadata"]["namespace"]
    redis, problem = await queue_client(ctx, namespace, spec)
    if redis is None:
        observed.queue_problem = problem
        return
    try:
        # Summed over every partition the queue has had (its registry), on any topology.
        observed.queue = await read_queue_state(redis, spec.redis.stream)
    except REDIS_ERRORS as error:
        observed.queue_problem = f"Redis unreachable: {type(error).__name__}: {error}"[:300]
        return
    scaling = (gateway.get("status") or {}).get("scaling") or {}
    candidate = scaling.get("scaleDownCandidate")
    since = _parse_time(candidate.get("since")) if candidate else None
    current = observed.worker_replicas
    decision = decide(
        current=current,
        lag=observed.queue.lag,
        target_per_replica=spec.worker.targetLagPerReplica,
        minimum=spec.worker.minReplicas,
        maximum=spec.worker.maxReplicas,
        window=timedelta(seconds=spec.worker.scaleDownStabilizationSeconds),
        candidate=candidate,
        candidate_since=since,
        now=now,
    )
    observed.scale = decision
    if decision.replicas != current:
        message = (
            f"worker replicas {current} -> {decision.replicas}: lag {observed.queue.lag},"
            f" target {spec.worker.targetLagPerReplica} per replica,"
            f" bounds {spec.worker.minReplicas}..{spec.worker.maxReplicas}"
        )
        log.info(message, extra={"gateway": f"{namespace}/{gateway['metadata']['name']}"})
        ctx.post_event(gateway, "Normal", "Scaled", message)
        observed.worker_replicas = decision.replicas


def _parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _replicas(deployment: dict[str, Any]) -> tuple[int, int, bool]:
    """Desired and ready replicas, and whether a rollout is still going on."""
    desired = int(deployment.get("spec", {}).get("replicas", 0))
    status = deployment.get("status") or {}
    ready = int(status.get("readyReplicas") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    generation = deployment["metadata"].get("generation")
    seen = status.get("observedGeneration")
    rolling = (
        ready < desired or updated < desired or (generation is not None and seen != generation)
    )
    return desired, ready, rolling


def _status(
    gateway: dict[str, Any],
    spec: GatewaySpec,
    observed: _Observed,
    now: datetime,
    observe_queue: bool,
) -> dict[str, Any]:
    previous = gateway.get("status") or {}
    generation = gateway["metadata"].get("generation")
    ingress_desired, ingress_ready, ingress_rolling = _replicas(observed.deployments["ingress"])
    worker_desired, worker_ready, worker_rolling = _replicas(observed.deployments["worker"])
    secrets_ok = observed.secrets_problem is None and all(k.active_key_id for k in observed.keys)
    conditions = [
        _ready_condition(secrets_ok, observed, ingress_ready, worker_ready),
        Condition(
            "Progressing",
            ingress_rolling or worker_rolling,
            "RollingOut" if ingress_rolling or worker_rolling else "RolloutComplete",
            f"ingress {ingress_ready}/{ingress_desired} ready,"
            f" worker {worker_ready}/{worker_desired} ready",
        ),
        Condition(
            "SecretsSynced",
            secrets_ok,
            "Synced" if secrets_ok else "SecretNotFound",
            observed.secrets_problem
            or f"{len(observed.keys)} source(s) with an active key; connection secrets present",
        ),
        _scaled_condition(spec, observed, previous, observe_queue),
    ]
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "conditions": merge_conditions(
            previous.get("conditions"), conditions, now=iso(now), generation=generation
        ),
        "ingress": {
            "desiredReplicas": ingress_desired,
            "readyReplicas": ingress_ready,
            "summary": f"{ingress_ready}/{ingress_desired}",
        },
        "worker": {
            "desiredReplicas": worker_desired,
            "readyReplicas": worker_ready,
            "summary": f"{worker_ready}/{worker_desired}",
        },
        "signing": _signing_status(observed.keys),
    }
    if observe_queue:
        if observed.queue is not None:
            queue: dict[str, Any] = {
                "lag": observed.queue.lag,
                "undelivered": observed.queue.undelivered,
                "pending": observed.queue.pending,
                "retriesScheduled": observed.queue.retries_scheduled,
                "observedAt": iso(now),
            }
            if observed.queue.dead_letters_pending is not None:
                queue["deadLettersPending"] = observed.queue.dead_letters_pending
            status["queue"] = queue
        status["scaling"] = _scaling_status(spec, observed, previous, now)
    else:
        for key in ("queue", "scaling"):
            if key in previous:
                status[key] = previous[key]
    return status


def _ready_condition(
    secrets_ok: bool, observed: _Observed, ingress_ready: int, worker_ready: int
) -> Condition:
    if not secrets_ok:
        return Condition("Ready", False, "SecretsNotSynced", observed.secrets_problem or "keys")
    if ingress_ready < 1:
        return Condition("Ready", False, "IngressNotReady", "no ingress pod is ready")
    if worker_ready < 1:
        return Condition("Ready", False, "WorkerNotReady", "no worker pod is ready")
    return Condition("Ready", True, "Ready", "the ingress and the worker are serving")


def _scaled_condition(
    spec: GatewaySpec, observed: _Observed, previous: dict[str, Any], observe_queue: bool
) -> Condition:
    if not observe_queue:
        for item in previous.get("conditions") or []:
            if item.get("type") == "Scaled":
                status = {"True": True, "False": False}.get(item.get("status", ""))
                return Condition("Scaled", status, item.get("reason", ""), item.get("message", ""))
        return Condition("Scaled", None, "NotObservedYet", "the queue lag has not been read yet")
    if observed.scale is None or observed.queue is None:
        return Condition("Scaled", False, "LagUnavailable", observed.queue_problem or "unknown")
    decision = observed.scale
    return Condition(
        "Scaled",
        decision.reason != "Stabilizing",
        decision.reason,
        f"lag {observed.queue.lag}, target {spec.worker.targetLagPerReplica} per replica,"
        f" recommended {decision.recommended}, running {observed.worker_replicas}"
        f" (bounds {spec.worker.minReplicas}..{spec.worker.maxReplicas})",
    )


def _scaling_status(
    spec: GatewaySpec, observed: _Observed, previous: dict[str, Any], now: datetime
) -> dict[str, Any]:
    before = previous.get("scaling") or {}
    if observed.scale is None or observed.queue is None:
        return dict(before, reason="LagUnavailable")
    decision = observed.scale
    scaling: dict[str, Any] = {
        "recommendedReplicas": decision.recommended,
        "lag": observed.queue.lag,
        "targetLagPerReplica": spec.worker.targetLagPerReplica,
        "reason": decision.reason,
    }
    last = iso(now) if decision.changed else before.get("lastScaleTime")
    if last:
        scaling["lastScaleTime"] = last
    if decision.candidate is not None:
        scaling["scaleDownCandidate"] = {
            "replicas": decision.candidate["replicas"],
            # Milliseconds: a window of a few seconds must not lose up to one to rounding.
            "since": iso(decision.candidate["since"], precise=True),
        }
    return scaling


def _signing_status(keys: list[KeyStatus]) -> dict[str, Any]:
    signing: dict[str, Any] = {"sources": [key.as_status() for key in keys]}
    if keys:
        # The columns show the first source; the list has every source.
        first = signing["sources"][0]
        for name in ("activeKeyId", "previousKeyExpiresAt"):
            if name in first:
                signing[name] = first[name]
        rotations = [key.last_rotation for key in keys if key.last_rotation]
        if rotations:
            signing["lastRotationTime"] = iso(max(rotations))
    return signing


def _invalid_status(gateway: dict[str, Any], message: str, now: datetime) -> dict[str, Any]:
    previous = gateway.get("status") or {}
    generation = gateway["metadata"].get("generation")
    conditions = [
        Condition("Ready", False, "InvalidSpec", message),
        Condition("Progressing", False, "InvalidSpec", message),
        Condition("SecretsSynced", None, "InvalidSpec", message),
        Condition("Scaled", None, "InvalidSpec", message),
    ]
    return dict(
        previous,
        observedGeneration=generation,
        conditions=merge_conditions(
            previous.get("conditions"), conditions, now=iso(now), generation=generation
        ),
    )


async def _write_status(
    ctx: OperatorContext, gateway: dict[str, Any], status: dict[str, Any]
) -> None:
    """Apply the whole status (fields left out are removed), unless it is already so."""
    meta = gateway["metadata"]
    manifest = {"metadata": {"name": meta["name"], "namespace": meta["namespace"]}}
    manifest["status"] = prune(status)
    if in_sync(gateway, manifest, subresource="status"):
        return
    try:
        await ctx.client.apply(COURIER_GATEWAYS, manifest, subresource="status")
    except ApiError as error:
        log.warning("status not written: %s", error)
