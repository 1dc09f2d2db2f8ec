"""``courier-gateway operator`` as a real process: kubeconfig login (a token, or an exec plugin
whose credentials expire and are renewed), JSON logs, health, SIGTERM.

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
    log = tmp_path / "operator.log"
    # A file, not a pipe: a pipe read only at the end fills up and blocks the operator.
    with log.open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "courier_gateway", "operator",
            env=env, stdout=asyncio.subprocess.DEVNULL, stderr=output,
        )  # fmt: skip
    try:
        await create_gateway(kubectl, redis_server.url, "from-process")
        # A fresh process on a loaded machine: generous.
        await eventually(
            lambda: kubectl.get(DEPLOYMENTS, NAMESPACE, "from-process-worker"), timeout=30
        )

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
    lines = log.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert records
    for record in records:
        assert {"ts", "level", "logger", "msg"} <= record.keys()
    messages = [record["msg"] for record in records]
    assert "operator starting" in messages
    assert any("key" in message and "created" in message for message in messages)


EXEC_PLUGIN = """
import json, sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

counter = Path(sys.argv[1])
issued = int(counter.read_text()) + 1 if counter.exists() else 1
counter.write_text(str(issued))
expires = datetime.now(timezone.utc) + timedelta(seconds=float(sys.argv[2]))
status = {"token": f"exec-token-{issued}"}
status["expirationTimestamp"] = expires.strftime("%Y-%m-%dT%H:%M:%SZ")
print(json.dumps({
    "apiVersion": "client.authentication.k8s.io/v1beta1",
    "kind": "ExecCredential",
    "status": status,
}))
"""


def _bearers(kube_api: Any, agent_prefix: str) -> set[str]:
    found = set()
    for request in list(kube_api):
        headers = {name.lower(): value for name, value in request.headers.items()}
        if headers.get("user-agent", "").startswith(agent_prefix):
            found.add(headers.get("authorization", ""))
    return found


async def test_an_exec_plugin_logs_the_operator_in_and_its_expiry_renews_the_credentials(
    kube_api: Any, kubectl: KubeClient, redis_server: RedisServer, tmp_path: Path
) -> None:
    """A kubeconfig user with an exec plugin (as EKS and GKE use): kopf and the operator's own
    client both send its token, and both move to a new one once it expires (each when it next
    talks to the API)."""
    plugin = tmp_path / "plugin.py"
    plugin.write_text(EXEC_PLUGIN)
    config = yaml.safe_load(kubeconfig(tmp_path / "kubeconfig", str(kube_api.url)).read_text())
    config["users"][0]["user"] = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": sys.executable,
            "args": [str(plugin), str(tmp_path / "issued"), "3"],
            "interactiveMode": "Never",
        }
    }
    (tmp_path / "kubeconfig").write_text(yaml.safe_dump(config))
    env = {
        "PATH": os.environ["PATH"],
        "KUBECONFIG": str(tmp_path / "kubeconfig"),
        "OPERATOR_PEERING": "standalone",
        "OPERATOR_HEALTH_PORT": "0",
        "OPERATOR_INTERVAL_SECONDS": "0.5",
    }
    log = tmp_path / "operator.log"
    # A file, not a pipe: a pipe nobody reads fills up and blocks the operator's logging.
    with log.open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "courier_gateway", "operator",
            env=env, stdout=asyncio.subprocess.DEVNULL, stderr=output,
        )  # fmt: skip
    try:
        await create_gateway(kubectl, redis_server.url, "exec-login")
        await eventually(
            lambda: kubectl.get(DEPLOYMENTS, NAMESPACE, "exec-login-worker"), timeout=40
        )
        assert _bearers(kube_api, "kopf") & _bearers(kube_api, "courier-gateway-operator")

        # Past the 3 s expiry: the operator's client (busy with the timer) renews its token by
        # itself; kopf renews when it next needs the API: handling a new gateway.
        await asyncio.sleep(4)
        await create_gateway(kubectl, redis_server.url, "exec-login-2")

        async def renewed() -> bool:
            return all(
                len(_bearers(kube_api, agent)) >= 2
                for agent in ("kopf", "courier-gateway-operator")
            )

        try:
            await eventually(renewed, timeout=40, interval=0.5)
        except AssertionError:
            seen = {a: _bearers(kube_api, a) for a in ("kopf", "courier-gateway-operator")}
            tail = log.read_text()[-3000:]
            raise AssertionError(f"tokens seen: {seen}; operator log tail: {tail}") from None
        sent = _bearers(kube_api, "kopf") | _bearers(kube_api, "courier-gateway-operator")
        assert all(value.startswith("Bearer exec-token-") for value in sent), sent
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout=15)
        except TimeoutError:
            process.kill()
            await process.wait()
