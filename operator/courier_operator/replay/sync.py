"""Following a ReplayRequest: validate it, run its Job once, report what the Job did.

A request ends ``Succeeded`` or ``Failed`` and is then left alone. The counts come from the
summary ``courier-gateway replay`` leaves in the gateway's Redis under the request id (the Job's
logs are not something an operator should have to parse).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import orjson

from courier_gateway.queue.state import replay_summary_key
from courier_operator.conditions import Condition, merge_conditions
from courier_operator.context import OperatorContext
from courier_operator.gateway.keys import iso
from courier_operator.gateway.reconcile import REDIS_ERRORS, queue_client
from courier_operator.gateway.spec import InvalidSpecError, parse_gateway_spec
from courier_operator.kube import COURIER_GATEWAYS, JOBS, REPLAY_REQUESTS
from courier_operator.objects import in_sync, prune
from courier_operator.replay.job import (
    InvalidRequestError,
    job_name,
    job_phase,
    parse_replay_spec,
    replay_job,
    request_id,
)

__all__ = ["delete_replay_job", "sync_replay"]

log = logging.getLogger(__name__)

_TERMINAL = ("Succeeded", "Failed")
# How long a finished Job's counts are waited for while Redis cannot be read.
_SUMMARY_PATIENCE = timedelta(minutes=5)
_COUNTS = ("matched", "replayed", "discarded", "skipped", "failed")


async def sync_replay(ctx: OperatorContext, namespace: str, name: str) -> None:
    """Move one ReplayRequest forward; safe to call at any time, any number of times."""
    async with ctx.lock(f"replay:{namespace}", name):
        request = await ctx.client.get(REPLAY_REQUESTS, namespace, name)
        if request is None or request["metadata"].get("deletionTimestamp"):
            return
        status = request.get("status") or {}
        if status.get("phase") in _TERMINAL:
            return
        new_status = await _advance(ctx, request, status)
        await _write(ctx, request, new_status)


async def _advance(
    ctx: OperatorContext, request: dict[str, Any], status: dict[str, Any]
) -> dict[str, Any]:
    namespace = request["metadata"]["namespace"]
    name = job_name(request)
    now = iso(ctx.now())
    job = await ctx.client.get(JOBS, namespace, name)
    if job is not None and not _owned_by(job, request):
        # The Job of an earlier request with this name, still being deleted: wait for it.
        message = f"waiting for Job {name} of an earlier request with this name to be deleted"
        return _progress(request, status, name, phase="Pending", message=message, now=now)
    if job is None:
        if status.get("jobName"):
            message = f"Job {name} was deleted before it finished"
            return _finished(
                request, status, phase="Failed", reason="JobDeleted", message=message,
                summary={}, now=now,
            )  # fmt: skip
        created = await _create_job(ctx, request, status)
        if isinstance(created, tuple):  # refused: (reason, message)
            return _rejected(ctx, request, status, *created)
        job = created
    # From here on the Job is followed whatever happens to the gateway: the replay runs anyway.
    phase, message = job_phase(job)
    if phase not in _TERMINAL:
        return _progress(request, status, name, phase=phase, message=message, now=now)
    summary, unreadable = await _summary(ctx, request)
    if summary is None and unreadable and _recently_finished(job, ctx):
        # Redis is briefly unreachable: try again on the next pass rather than lose the counts.
        return _progress(
            request, status, name, phase="Running", message=f"{message}; reading its summary",
            now=now,
        )  # fmt: skip
    reason = "Completed" if phase == "Succeeded" else "JobFailed"
    if summary is None:
        message += "; no summary was recorded (counts unknown)"
    base = _started(request, status, name, now)
    finished = _finished(
        request, base, phase=phase, reason=reason, message=message, summary=summary or {}, now=now
    )
    ctx.post_event(request, "Normal" if phase == "Succeeded" else "Warning", reason, message)
    return finished


async def _create_job(
    ctx: OperatorContext, request: dict[str, Any], status: dict[str, Any]
) -> dict[str, Any] | tuple[str, str]:
    """Validate the request and its gateway, then create the Job; or (reason, message)."""
    namespace = request["metadata"]["namespace"]
    try:
        spec = parse_replay_spec(request.get("spec"))
    except InvalidRequestError as error:
        return "InvalidSpec", str(error)
    gateway = await ctx.client.get(COURIER_GATEWAYS, namespace, spec.gatewayRef.name)
    if gateway is None:
        return (
            "GatewayNotFound",
            f"CourierGateway {spec.gatewayRef.name} not found in namespace {namespace}",
        )
    try:
        gateway_spec = parse_gateway_spec(gateway.get("spec"), default_image=ctx.default_image)
    except InvalidSpecError as error:
        return "GatewayInvalid", f"CourierGateway {spec.gatewayRef.name} is invalid: {error}"
    name = job_name(request)
    # Applied once: the Job is only ever read afterwards (its pod template is immutable).
    job = await ctx.client.apply(JOBS, replay_job(request, spec, gateway, gateway_spec))
    ctx.post_event(request, "Normal", "JobCreated", f"replay Job {name} created")
    return job


def _owned_by(job: dict[str, Any], request: dict[str, Any]) -> bool:
    uid = request["metadata"].get("uid")
    owners = job.get("metadata", {}).get("ownerReferences") or []
    return any(owner.get("uid") == uid for owner in owners)


def _recently_finished(job: dict[str, Any], ctx: OperatorContext) -> bool:
    status = job.get("status") or {}
    ended = status.get("completionTime") or next(
        (
            item.get("lastTransitionTime")
            for item in status.get("conditions") or []
            if item.get("type") in ("Complete", "Failed") and item.get("status") == "True"
        ),
        None,
    )
    if not isinstance(ended, str):
        return True
    try:
        moment = datetime.fromisoformat(ended.replace("Z", "+00:00"))
    except ValueError:
        return True
    return ctx.now() - moment < _SUMMARY_PATIENCE


def _started(
    request: dict[str, Any], status: dict[str, Any], name: str, now: str
) -> dict[str, Any]:
    return dict(
        status,
        requestId=request_id(request),
        jobName=name,
        startTime=status.get("startTime") or now,
    )


def _progress(
    request: dict[str, Any],
    status: dict[str, Any],
    name: str,
    *,
    phase: str,
    message: str,
    now: str,
) -> dict[str, Any]:
    conditions = [
        Condition("Accepted", True, "JobCreated", f"Job {name} runs the replay"),
        Condition("Complete", False, phase, message),
    ]
    base = _started(request, status, name, now)
    return _with_conditions(request, dict(base, phase=phase, message=message), conditions, now)


def _rejected(
    ctx: OperatorContext, request: dict[str, Any], status: dict[str, Any], reason: str, message: str
) -> dict[str, Any]:
    log.warning("replay request rejected: %s", message)
    ctx.post_event(request, "Warning", reason, message)
    now = iso(ctx.now())
    conditions = [
        Condition("Accepted", False, reason, message),
        Condition("Complete", True, reason, message),
    ]
    return _with_conditions(
        request, dict(status, phase="Failed", message=message, completionTime=now), conditions, now
    )


def _finished(
    request: dict[str, Any],
    status: dict[str, Any],
    *,
    phase: str,
    reason: str,
    message: str,
    summary: dict[str, Any],
    now: str,
) -> dict[str, Any]:
    counts = {key: int(summary[key]) for key in _COUNTS if isinstance(summary.get(key), int)}
    conditions = [
        Condition("Accepted", True, "JobCreated", f"Job {status.get('jobName')} ran the replay"),
        Condition("Complete", True, reason, message),
    ]
    finished = dict(status, phase=phase, message=message, completionTime=now, **counts)
    return _with_conditions(request, finished, conditions, now)


def _with_conditions(
    request: dict[str, Any], status: dict[str, Any], conditions: list[Condition], now: str
) -> dict[str, Any]:
    generation = request["metadata"].get("generation")
    previous = (request.get("status") or {}).get("conditions")
    status["conditions"] = merge_conditions(previous, conditions, now=now, generation=generation)
    if generation is not None:
        status["observedGeneration"] = generation
    return status


async def _summary(
    ctx: OperatorContext, request: dict[str, Any]
) -> tuple[dict[str, Any] | None, bool]:
    """The replay's summary, and whether it could not be read (rather than being absent)."""
    namespace = request["metadata"]["namespace"]
    gateway_name = ((request.get("spec") or {}).get("gatewayRef") or {}).get("name", "")
    gateway = await ctx.client.get(COURIER_GATEWAYS, namespace, gateway_name)
    if gateway is None:
        log.warning("replay summary not read: gateway %s is gone", gateway_name)
        return None, False
    try:
        gateway_spec = parse_gateway_spec(gateway.get("spec"), default_image=ctx.default_image)
    except InvalidSpecError:
        return None, False
    redis, problem = await queue_client(ctx, namespace, gateway_spec)
    if redis is None:
        log.warning("replay summary not read: %s", problem)
        return None, False
    key = replay_summary_key(gateway_spec.redis.stream, request_id(request))
    try:
        raw = await redis.get(key)
    except REDIS_ERRORS as error:
        log.warning("replay summary not read yet: %s", error)
        return None, True
    if raw is None:
        return None, False
    summary: dict[str, Any] = orjson.loads(raw)
    return summary, False


async def _write(ctx: OperatorContext, request: dict[str, Any], status: dict[str, Any]) -> None:
    """Apply the whole status, unless it is already so."""
    meta = request["metadata"]
    manifest = {"metadata": {"name": meta["name"], "namespace": meta["namespace"]}}
    manifest["status"] = prune(status)
    if in_sync(request, manifest, subresource="status"):
        return
    await ctx.client.apply(REPLAY_REQUESTS, manifest, subresource="status")


async def delete_replay_job(ctx: OperatorContext, request: dict[str, Any]) -> None:
    """Delete the request's Job and its pods (the request is being deleted)."""
    namespace = request["metadata"]["namespace"]
    if await ctx.client.delete(JOBS, namespace, job_name(request)):
        log.info("replay job deleted with its request", extra={"job": job_name(request)})
