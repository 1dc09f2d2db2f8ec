"""ReplayRequests: the Job, its real command run against real Redis and store, the reported phase.

The emulator runs no Jobs: the test plays the Job controller and the kubelet. It runs the Job's
container command (``courier-gateway`` with the Job's arguments and the Job's environment, its
Secret references resolved) as a real process, then writes the Job's status as the controller
would.
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import uuid
from typing import Any

import pytest

from courier_operator.kube import JOBS, REPLAY_REQUESTS, SECRETS, KubeClient
from tests.conftest import StartGateway
from tests.operator.conftest import NAMESPACE, condition, create_gateway, secret
from tests.support.kube import eventually
from tests.support.servers import RedisServer, StoreServer, wait_for
from tests.support.signing import event
from tests.support.stack import StackEnv, post_events

pytestmark = pytest.mark.timeout(120)


def replay_request(name: str, gateway: str, **spec: Any) -> dict[str, Any]:
    """A ReplayRequest manifest."""
    return {
        "apiVersion": "gateway.courier.dev/v1alpha1",
        "kind": "ReplayRequest",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"gatewayRef": {"name": gateway}, **spec},
    }


async def _request(kubectl: KubeClient, name: str) -> dict[str, Any]:
    live = await kubectl.get(REPLAY_REQUESTS, NAMESPACE, name)
    assert live is not None
    return live


async def _phase(kubectl: KubeClient, name: str, phase: str) -> dict[str, Any] | None:
    live = await _request(kubectl, name)
    return live if (live.get("status") or {}).get("phase") == phase else None


async def _run_job(kubectl: KubeClient, job: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """Run the Job's container as the kubelet would: its args, its env, Secrets resolved."""
    (container,) = job["spec"]["template"]["spec"]["containers"]
    env = {"PATH": os.environ["PATH"]}
    for item in container["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
            continue
        ref = item["valueFrom"]["secretKeyRef"]
        found = await kubectl.get(SECRETS, NAMESPACE, ref["name"])
        assert found is not None, f"the Job refers to a missing Secret {ref['name']}"
        env[item["name"]] = base64.b64decode(found["data"][ref["key"]]).decode()
    command = [sys.executable, "-m", "courier_gateway", *container["args"]]
    return await asyncio.to_thread(
        subprocess.run, command, env=env, capture_output=True, text=True, timeout=60, check=False
    )


async def _finish_job(kubectl: KubeClient, name: str, *, succeeded: bool) -> None:
    """Write the Job status the Job controller writes when its pod ends."""
    kind = "Complete" if succeeded else "Failed"
    status = {
        "startTime": "2026-11-25T10:00:00Z",
        "completionTime": "2026-11-25T10:00:05Z" if succeeded else None,
        "succeeded" if succeeded else "failed": 1,
        "conditions": [
            {
                "type": kind,
                "status": "True",
                "reason": "Done" if succeeded else "BackoffLimitExceeded",
                "message": "",
            }
        ],
    }
    await kubectl.merge_patch(JOBS, NAMESPACE, name, {"status": status}, subresource="status")


async def test_a_replay_request_runs_once_and_reports_its_counts(
    operator: Any,
    kubectl: KubeClient,
    redis_server: RedisServer,
    store_server: StoreServer,
    start: StartGateway,
) -> None:
    stack = StackEnv.create(redis_server, store_server)
    await asyncio.to_thread(start, "ingress", stack.env)
    await asyncio.to_thread(start, "worker", stack.env, wait_ready=False)
    unknown = [event(eventType="shipment.teleported") for _ in range(2)]
    assert [r.status_code for r in post_events(stack.url, unknown)] == [202, 202]
    assert await asyncio.to_thread(stack.wait_terminal, 2, 20)

    await operator()
    await kubectl.create(SECRETS, NAMESPACE, secret("replay-store", uri=store_server.uri))
    await create_gateway(
        kubectl,
        redis_server.url,
        "replayed",
        redis={"urlSecretRef": {"name": "queue"}, "stream": stack.env["QUEUE_STREAM"]},
        mongo={"uriSecretRef": {"name": "replay-store"}, "database": stack.env["MONGO_DB"]},
    )
    selector = {"reasonCodes": ["UNKNOWN_EVENT_TYPE"]}
    await kubectl.create(
        REPLAY_REQUESTS,
        NAMESPACE,
        replay_request("teleported", "replayed", selector=selector, rate=100),
    )
    job = await eventually(lambda: kubectl.get(JOBS, NAMESPACE, "replay-teleported"))
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["args"] == [
        "replay", "--reason", "UNKNOWN_EVENT_TYPE", "--limit", "100", "--rate", "100.0",
        "--request-id", f"{NAMESPACE}/teleported", "--json",
    ]  # fmt: skip
    assert container["image"] == "registry.example/courier-gateway:1.0.0"
    assert job["metadata"]["ownerReferences"][0]["kind"] == "ReplayRequest"
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    pending = await eventually(lambda: _phase(kubectl, "teleported", "Pending"))
    assert pending["status"]["jobName"] == "replay-teleported"

    result = await _run_job(kubectl, job)
    assert result.returncode == 0, result.stderr
    await _finish_job(kubectl, "replay-teleported", succeeded=True)
    done = await eventually(lambda: _phase(kubectl, "teleported", "Succeeded"))
    status = done["status"]
    assert (status["matched"], status["replayed"], status["failed"]) == (2, 2, 0)
    assert condition(done, "Complete")["reason"] == "Completed"
    assert "completionTime" in status and "startTime" in status

    # The replayed events fail again (their type is still unknown): pending once more.
    def failed_again() -> bool:
        query = {"reviewStatus": "pending", "deadLetterCount": 2}
        return stack.count("dead_letter_events", query) == 2

    assert await asyncio.to_thread(wait_for, failed_again, 20)
    # The same request applied again (deleted and re-created): nothing is replayed twice.
    await kubectl.delete(REPLAY_REQUESTS, NAMESPACE, "teleported")
    await eventually(lambda: _gone(kubectl, REPLAY_REQUESTS, "teleported"))
    await eventually(lambda: _gone(kubectl, JOBS, "replay-teleported"))  # the finalizer's work
    await kubectl.create(
        REPLAY_REQUESTS,
        NAMESPACE,
        replay_request("teleported", "replayed", selector=selector, rate=100),
    )
    job = await eventually(lambda: kubectl.get(JOBS, NAMESPACE, "replay-teleported"))
    result = await _run_job(kubectl, job)
    assert result.returncode == 0, result.stderr
    await _finish_job(kubectl, "replay-teleported", succeeded=True)
    again = await eventually(lambda: _phase(kubectl, "teleported", "Succeeded"))
    assert (again["status"]["replayed"], again["status"]["skipped"]) == (0, 2)


async def _gone(kubectl: KubeClient, resource: Any, name: str) -> bool:
    return await kubectl.get(resource, NAMESPACE, name) is None


async def test_a_failed_job_fails_the_request(
    operator: Any, kubectl: KubeClient, redis_server: RedisServer
) -> None:
    await operator()
    await create_gateway(kubectl, redis_server.url, "gw-fail")
    name = f"r-{uuid.uuid4().hex[:6]}"
    await kubectl.create(
        REPLAY_REQUESTS,
        NAMESPACE,
        replay_request(name, "gw-fail", selector={"all": True}, dryRun=True),
    )
    job = await eventually(lambda: kubectl.get(JOBS, NAMESPACE, f"replay-{name}"))
    assert job["spec"]["template"]["spec"]["containers"][0]["args"][-2:] == ["--json", "--dry-run"]
    await _finish_job(kubectl, f"replay-{name}", succeeded=False)
    failed = await eventually(lambda: _phase(kubectl, name, "Failed"))
    assert condition(failed, "Complete")["reason"] == "JobFailed"
    assert "BackoffLimitExceeded" in failed["status"]["message"]


@pytest.mark.parametrize(
    ("spec", "reason", "message"),
    [
        ({"selector": {}}, "InvalidSpec", "choose eventIds, reasonCodes, sources"),
        (
            {"selector": {"since": "2026-11-25T10:00:00Z", "until": "2026-11-25T09:00:00Z"}},
            "InvalidSpec",
            "since must be earlier than until",
        ),
        ({"selector": {"all": True}, "limit": 0}, "InvalidSpec", "spec.limit"),
    ],
)
async def test_an_invalid_request_is_reported_not_crashed_on(
    operator: Any,
    kubectl: KubeClient,
    redis_server: RedisServer,
    spec: dict[str, Any],
    reason: str,
    message: str,
) -> None:
    await operator()
    await create_gateway(kubectl, redis_server.url, "gw-valid")
    name = f"bad-{uuid.uuid4().hex[:6]}"
    await kubectl.create(REPLAY_REQUESTS, NAMESPACE, replay_request(name, "gw-valid", **spec))
    failed = await eventually(lambda: _phase(kubectl, name, "Failed"))
    accepted = condition(failed, "Accepted")
    assert accepted is not None and (accepted["status"], accepted["reason"]) == ("False", reason)
    assert message in accepted["message"]
    assert await kubectl.get(JOBS, NAMESPACE, f"replay-{name}") is None


async def test_a_request_for_a_missing_gateway_fails_with_a_clear_condition(
    operator: Any, kubectl: KubeClient
) -> None:
    await operator()
    await kubectl.create(
        REPLAY_REQUESTS, NAMESPACE, replay_request("orphan", "nowhere", selector={"all": True})
    )
    failed = await eventually(lambda: _phase(kubectl, "orphan", "Failed"))
    accepted = condition(failed, "Accepted")
    assert accepted is not None and accepted["reason"] == "GatewayNotFound"
    assert accepted["message"] == f"CourierGateway nowhere not found in namespace {NAMESPACE}"
    assert await kubectl.get(JOBS, NAMESPACE, "replay-orphan") is None
