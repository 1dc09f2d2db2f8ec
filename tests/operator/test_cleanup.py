"""``courier-gateway cleanup`` (the chart's pre-delete hook) deletes every gateway and request
while the operator runs, and waits until the operator has removed its finalizer from them."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from courier_operator.handlers import FINALIZER
from courier_operator.kube import COURIER_GATEWAYS, REPLAY_REQUESTS, KubeClient
from tests.operator.conftest import NAMESPACE, create_gateway
from tests.operator.test_operator_process import kubeconfig
from tests.operator.test_replay_requests import replay_request
from tests.support.kube import eventually
from tests.support.servers import RedisServer

pytestmark = pytest.mark.timeout(60)


async def run_cleanup(kube_api: Any, tmp_path: Path, *, wait_seconds: int) -> tuple[int, str]:
    """Run ``courier-gateway cleanup`` as a process against the emulated API."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "courier_gateway", "cleanup", "--timeout", str(wait_seconds),
        env={
            "PATH": os.environ["PATH"],
            "KUBECONFIG": str(kubeconfig(tmp_path / "kubeconfig", str(kube_api.url))),
        },
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=wait_seconds + 20)
    assert process.returncode is not None
    return process.returncode, stderr.decode()


async def _finalized(kubectl: KubeClient, resource: Any, name: str) -> bool:
    live = await kubectl.get(resource, NAMESPACE, name)
    return FINALIZER in ((live or {}).get("metadata", {}).get("finalizers") or [])


async def test_cleanup_deletes_everything_and_waits_for_the_operator(
    operator: Any, kube_api: Any, kubectl: KubeClient, redis_server: RedisServer, tmp_path: Path
) -> None:
    await operator()
    await create_gateway(kubectl, redis_server.url, "doomed")
    request = replay_request("doomed-replay", "doomed", selector={"all": True})
    await kubectl.create(REPLAY_REQUESTS, NAMESPACE, request)
    await eventually(lambda: _finalized(kubectl, COURIER_GATEWAYS, "doomed"))
    await eventually(lambda: _finalized(kubectl, REPLAY_REQUESTS, "doomed-replay"))

    code, stderr = await run_cleanup(kube_api, tmp_path, wait_seconds=20)

    assert code == 0, stderr
    assert await kubectl.get(COURIER_GATEWAYS, NAMESPACE, "doomed") is None
    assert await kubectl.get(REPLAY_REQUESTS, NAMESPACE, "doomed-replay") is None


async def test_cleanup_without_an_operator_reports_what_is_left(
    kube_api: Any, kubectl: KubeClient, redis_server: RedisServer, tmp_path: Path
) -> None:
    gateway = await create_gateway(kubectl, redis_server.url, "stuck")
    # As if an operator had handled it before and then gone away.
    await kubectl.patch(
        COURIER_GATEWAYS, NAMESPACE, "stuck", {"metadata": {"finalizers": [FINALIZER]}}
    )
    assert gateway["metadata"]["name"] == "stuck"
    code, stderr = await run_cleanup(kube_api, tmp_path, wait_seconds=1)
    assert code == 1
    assert "still terminating: is the operator running?" in stderr
    assert "CourierGateway couriers/stuck" in stderr
