"""``courier-gateway operator`` as a real process: kubeconfig login, JSON logs, health, SIGTERM.

The process finds the emulated API through a kubeconfig file (as it would find a real cluster
outside one), reconciles a gateway, answers its liveness probe, and stops cleanly on SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from courier_gateway.devstack.processes import free_port
from courier_operator.kube import DEPLOYMENTS, KubeClient
from tests.operator.conftest import NAMESPACE, create_gateway
from tests.support.kube import eventually
from tests.support.servers import RedisServer

pytestmark = pytest.mark.timeout(60)


def kubeconfig(path: Path, server: str) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "emulated", "cluster": {"server": server}}],
        "users": [{"name": "tester", "user": {"token": "not-checked-by-the-emulator"}}],
        "contexts": [{"name": "emulated", "context": {"cluster": "emulated", "user": "tester"}}],
        "current-context": "emulated",
    }
    path.write_text(yaml.safe_dump(config))
    return path


async def test_the_operator_process_logs_json_serves_health_and_stops_on_sigterm(
    kube_api: Any, kubectl: KubeClient, redis_server: RedisServer, tmp_path: Path
) -> None:
    health = free_port()
    env = {
        "PATH": os.environ["PATH"],
        "KUBECONFIG": str(kubeconfig(tmp_path / "kubeconfig", str(kube_api.url))),
        "OPERATOR_PEERING": "standalone",
        "OPERATOR_HEALTH_PORT": str(health),
        "OPERATOR_INTERVAL_SECONDS": "0.5",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "courier_gateway", "operator",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await create_gateway(kubectl, redis_server.url, "from-process")
        await eventually(lambda: kubectl.get(DEPLOYMENTS, NAMESPACE, "from-process-worker"))

        async def healthy() -> bool:
            try:
                async with httpx.AsyncClient(timeout=1) as http:
                    response = await http.get(f"http://127.0.0.1:{health}/healthz")
            except httpx.HTTPError:
                return False
            return response.status_code == 200

        await eventually(healthy)
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), timeout=15)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert code == 0
    assert process.stderr is not None
    lines = (await process.stderr.read()).decode().splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert records
    for record in records:
        assert {"ts", "level", "logger", "msg"} <= record.keys()
    messages = [record["msg"] for record in records]
    assert "operator starting" in messages
    assert any("key" in message and "created" in message for message in messages)
