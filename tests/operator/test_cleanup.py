"""Uninstalling the chart: what stays, and the opt-in cleanup of the chart's own gateway.

``helm uninstall`` is played against the emulated API with the operator running: the chart is
rendered offline, what an install would put in the cluster for the operator (the chart's
CourierGateway, the store Secrets) is created, a user creates a gateway of their own, then the
pre-delete hooks run (their Job's container command as a real process, with a kubeconfig for
the emulated API) and every release object without ``helm.sh/resource-policy: keep`` is deleted,
as Helm does.

- With the defaults (``cleanup.enabled: false``) no hook runs and both gateways stay, working.
- With ``cleanup.enabled: true`` the hook deletes the chart's gateway only and waits until the
  operator has released it; the user's gateway stays.
- Without an operator, the cleanup command reports what is stuck and exits 1.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from courier_operator.handlers import FINALIZER
from courier_operator.kube import COURIER_GATEWAYS, DEPLOYMENTS, SECRETS, KubeClient
from tests.operator.conftest import NAMESPACE, create_gateway
from tests.operator.test_operator_process import kubeconfig
from tests.support.kube import eventually
from tests.support.servers import RedisServer

pytestmark = pytest.mark.timeout(90)

ROOT = Path(__file__).resolve().parents[2]
RELEASE = "courier-gateway"
KEEP = "helm.sh/resource-policy"


def render(**values: Any) -> list[dict[str, Any]]:
    """The chart's objects for an install into the test namespace, hooks included."""
    merged = yaml.safe_load((ROOT / "k8s" / "dev-values.yaml").read_text())
    merged.update(values)
    with helm.Chart.load(ROOT / "charts" / "courier-gateway") as chart:
        manifests = chart.render(merged, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return [
        doc
        for template, text in sorted(manifests.items())
        if not template.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def hook(doc: dict[str, Any]) -> str | None:
    return (doc["metadata"].get("annotations") or {}).get("helm.sh/hook")


async def run_command(
    args: list[str], kube_api: Any, tmp_path: Path, timeout: float
) -> tuple[int, str]:
    """A container's ``courier-gateway`` command as a process, logged in to the emulated API."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "courier_gateway", *args,
        env={
            "PATH": os.environ["PATH"],
            "KUBECONFIG": str(kubeconfig(tmp_path / "kubeconfig", str(kube_api.url))),
        },
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=timeout)
    assert process.returncode is not None
    return process.returncode, stderr.decode()


async def install(kubectl: KubeClient, objects: list[dict[str, Any]], redis_url: str) -> list[Any]:
    """Create what the install would and the operator reads; return (resource, doc) created."""
    created = []
    for doc in objects:
        if doc["kind"] == "Secret":
            if doc["metadata"]["name"].endswith("-redis"):
                doc = {**doc, "stringData": {"url": redis_url}}
            await kubectl.create(SECRETS, NAMESPACE, doc)
            created.append((SECRETS, doc))
        elif doc["kind"] == "CourierGateway":
            await kubectl.create(COURIER_GATEWAYS, NAMESPACE, doc)
            created.append((COURIER_GATEWAYS, doc))
    return created


async def uninstall(
    kubectl: KubeClient,
    objects: list[dict[str, Any]],
    created: list[Any],
    kube_api: Any,
    tmp_path: Path,
) -> None:
    """``helm uninstall``: pre-delete hook Jobs, then the release objects not kept."""
    for job in [doc for doc in objects if doc["kind"] == "Job" and hook(doc) == "pre-delete"]:
        (container,) = job["spec"]["template"]["spec"]["containers"]
        code, stderr = await run_command(container["args"], kube_api, tmp_path, timeout=60)
        assert code == 0, stderr
    for resource, doc in created:
        if hook(doc) or (doc["metadata"].get("annotations") or {}).get(KEEP) == "keep":
            continue
        await kubectl.delete(resource, NAMESPACE, doc["metadata"]["name"])


async def _finalized(kubectl: KubeClient, name: str) -> bool:
    live = await kubectl.get(COURIER_GATEWAYS, NAMESPACE, name)
    return FINALIZER in ((live or {}).get("metadata", {}).get("finalizers") or [])


@pytest.mark.parametrize("cleanup", [False, True], ids=["default", "cleanup-enabled"])
async def test_uninstall_leaves_the_users_gateway_in_place(
    cleanup: bool,
    operator: Any,
    kube_api: Any,
    kubectl: KubeClient,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    values = {"cleanup": {"enabled": True}} if cleanup else {}
    objects = render(**values)
    assert any(hook(doc) == "pre-delete" for doc in objects) is cleanup
    (chart_gateway,) = [doc for doc in objects if doc["kind"] == "CourierGateway"]
    chart_name = chart_gateway["metadata"]["name"]
    await operator()
    created = await install(kubectl, objects, redis_server.url)
    await create_gateway(kubectl, redis_server.url, "mine")
    for name in (chart_name, "mine"):
        await eventually(lambda name=name: _finalized(kubectl, name), timeout=15)
        await eventually(lambda name=name: kubectl.get(DEPLOYMENTS, NAMESPACE, f"{name}-worker"))

    await uninstall(kubectl, objects, created, kube_api, tmp_path)

    mine = await kubectl.get(COURIER_GATEWAYS, NAMESPACE, "mine")
    assert mine is not None and not mine["metadata"].get("deletionTimestamp")
    assert await kubectl.get(DEPLOYMENTS, NAMESPACE, "mine-worker") is not None
    chart_left = await kubectl.get(COURIER_GATEWAYS, NAMESPACE, chart_name)
    if cleanup:
        assert chart_left is None  # deleted by the hook, released by the operator
    else:
        assert chart_left is not None and not chart_left["metadata"].get("deletionTimestamp")


async def test_cleanup_without_an_operator_reports_what_is_left(
    kube_api: Any, kubectl: KubeClient, redis_server: RedisServer, tmp_path: Path
) -> None:
    await create_gateway(kubectl, redis_server.url, "stuck")
    # As if an operator had handled it before and then gone away.
    await kubectl.merge_patch(
        COURIER_GATEWAYS, NAMESPACE, "stuck", {"metadata": {"finalizers": [FINALIZER]}}
    )
    args = ["cleanup", "--namespace", NAMESPACE, "--gateway", "stuck", "--timeout", "1"]
    code, stderr = await run_command(args, kube_api, tmp_path, timeout=30)
    assert code == 1
    assert "still terminating: is the operator running?" in stderr
    assert "CourierGateway couriers/stuck" in stderr
