"""Signing-key rotation: a new key beside the old, the old removed after the overlap.

The last test runs a real ingress on the files of the rotating Secret, mirrored the way the
kubelet updates a mounted Secret (a new ``..data`` directory swapped in by one rename), and
sends requests signed with both keys all through the overlap.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from courier_gateway.config import Scheme
from courier_operator.kube import COURIER_GATEWAYS, SECRETS, KubeClient
from tests.conftest import StartGateway, base_env
from tests.operator.conftest import NAMESPACE, create_gateway
from tests.support.kube import eventually
from tests.support.servers import RedisServer
from tests.support.signing import event, signed

pytestmark = pytest.mark.timeout(90)

ACTIVE = "gateway.courier.dev/active-key"


async def _keys(kubectl: KubeClient, name: str) -> dict[str, str]:
    live = await kubectl.get(SECRETS, NAMESPACE, name)
    data = (live or {}).get("data") or {}
    return {key: base64.b64decode(value).decode() for key, value in data.items()}


async def _secret(kubectl: KubeClient, name: str) -> dict[str, Any]:
    live = await kubectl.get(SECRETS, NAMESPACE, name)
    assert live is not None
    return live


def _reasons(kube_api: Any, reason: str) -> list[str]:
    return [
        str(obj.get("message"))
        for (resource, _namespace, _name), obj in kube_api.objects.items()
        if resource.plural == "events" and obj.get("reason") == reason
    ]


async def test_rotation_adds_a_key_then_retires_the_old_one_after_the_overlap(
    operator: Any, kube_api: Any, kubectl: KubeClient, redis_server: RedisServer
) -> None:
    await operator()
    rotation = {"enabled": True, "interval": "3s", "overlap": "1s"}
    await create_gateway(
        kubectl,
        redis_server.url,
        "rot",
        signing={"sources": [{"name": "dhl", "rotation": rotation}]},
    )
    first = await eventually(lambda: _keys(kubectl, "rot-source-dhl"))
    (old,) = first

    both = await eventually(lambda: _two_keys(kubectl, "rot-source-dhl"), timeout=6)
    (new,) = set(both) - {old}
    secret = await _secret(kubectl, "rot-source-dhl")
    assert secret["metadata"]["annotations"][ACTIVE] == new
    assert secret["metadata"]["annotations"]["gateway.courier.dev/previous-key"] == old

    async def status_shows_rotation() -> dict[str, Any] | None:
        live = await kubectl.get(COURIER_GATEWAYS, NAMESPACE, "rot")
        signing = ((live or {}).get("status") or {}).get("signing") or {}
        return signing if signing.get("activeKeyId") == new else None

    signing = await eventually(status_shows_rotation)
    (source,) = signing["sources"]
    assert source["previousKeyId"] == old
    assert "previousKeyExpiresAt" in signing and "lastRotationTime" in signing
    assert source["nextRotationTime"] > source["lastRotationTime"]

    async def old_retired() -> bool:
        keys = await _keys(kubectl, "rot-source-dhl")
        return old not in keys and new in keys

    await eventually(old_retired, timeout=4)

    async def events_posted() -> bool:
        # kopf posts Events from a queue of its own, a moment after the handler asked.
        rotated = any(new in message for message in _reasons(kube_api, "KeyRotated"))
        return rotated and any(old in message for message in _reasons(kube_api, "KeyRetired"))

    await eventually(events_posted, timeout=5)


async def _two_keys(kubectl: KubeClient, name: str) -> dict[str, str] | None:
    keys = await _keys(kubectl, name)
    return keys if len(keys) == 2 else None


async def test_an_annotation_rotates_at_once_and_only_once(
    operator: Any, kube_api: Any, kubectl: KubeClient, redis_server: RedisServer
) -> None:
    await operator()
    await create_gateway(
        kubectl, redis_server.url, "manual", signing={"sources": [{"name": "ups"}]}
    )
    (old,) = await eventually(lambda: _keys(kubectl, "manual-source-ups"))

    annotation = {"metadata": {"annotations": {"gateway.courier.dev/rotate-keys": "incident-42"}}}
    await kubectl.merge_patch(COURIER_GATEWAYS, NAMESPACE, "manual", annotation)
    keys = await eventually(lambda: _two_keys(kubectl, "manual-source-ups"))
    assert old in keys  # kept for the default overlap (24h): couriers switch in their own time

    await asyncio.sleep(1.5)  # several maintenance passes with the same annotation
    assert len(await _keys(kubectl, "manual-source-ups")) == 2
    rotations = [m for m in _reasons(kube_api, "KeyRotated") if "source ups" in m]
    assert len(rotations) == 1
    assert "requested by annotation" in rotations[0]


class _Kubelet:
    """Mirrors a Secret into a directory the way the kubelet updates a mounted Secret."""

    def __init__(self, kubectl: KubeClient, name: str, directory: Path) -> None:
        self.kubectl, self.name, self.directory = kubectl, name, directory
        self.generation = 0
        self.shown: dict[str, str] = {}
        self.retired: dict[str, str] = {}

    async def sync(self) -> None:
        keys = await _keys(self.kubectl, self.name)
        if keys == self.shown:
            return
        self.generation += 1
        payload = self.directory / f"..{self.generation}"
        payload.mkdir()
        for key, value in keys.items():
            (payload / key).write_text(value)
        link = self.directory / "..data_tmp"
        link.symlink_to(payload.name)
        os.replace(link, self.directory / "..data")  # the one atomic switch
        for key in keys:
            entry = self.directory / key
            if not entry.is_symlink():
                entry.symlink_to(f"..data/{key}")
        for key in set(self.shown) - set(keys):
            (self.directory / key).unlink()
            self.retired[key] = self.shown[key]
        for old in self.directory.glob("..[0-9]*"):
            if old != payload:
                shutil.rmtree(old)
        self.shown = keys


async def test_requests_signed_with_either_key_pass_during_the_overlap(
    operator: Any,
    kubectl: KubeClient,
    redis_server: RedisServer,
    start: StartGateway,
    tmp_path: Path,
) -> None:
    await operator()
    rotation = {"enabled": True, "interval": "7s", "overlap": "5s"}  # room for a loaded machine
    await create_gateway(
        kubectl,
        redis_server.url,
        "live",
        signing={"sources": [{"name": "dhl", "scheme": "v1", "rotation": rotation}]},
    )
    (old,) = await eventually(lambda: _keys(kubectl, "live-source-dhl"))
    keys_dir = tmp_path / "dhl"
    keys_dir.mkdir()
    kubelet = _Kubelet(kubectl, "live-source-dhl", keys_dir)
    await kubelet.sync()
    sources = tmp_path / "sources.yaml"
    sources.write_text(f"sources:\n  dhl:\n    scheme: v1\n    secretsDir: {keys_dir}\n")
    ingress = await asyncio.to_thread(
        start,
        "ingress",
        base_env(redis_server.url, SOURCES_FILE=str(sources), SECRETS_RELOAD_SECONDS="0.2"),
    )

    async with httpx.AsyncClient(base_url=ingress.url, timeout=5) as http:

        async def post(secret: str) -> int:
            body, headers = signed(event(source="dhl"), secret, scheme=Scheme.V1)
            response = await http.post("/v1/events/dhl", content=body, headers=headers)
            return response.status_code

        assert await post(kubelet.shown[old]) == 202
        answers: list[tuple[str, int]] = []
        rotated_at: float | None = None
        new: str | None = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            await kubelet.sync()
            keys = kubelet.shown
            if new is None and len(keys) == 2:
                (new,) = set(keys) - {old}
                rotated_at = time.monotonic()
            if new is not None and old not in keys:
                break
            answers.append(("old", await post(keys[old])))
            # A courier switches once the new key has had time to reach the ingress.
            if new is not None and rotated_at and time.monotonic() - rotated_at > 0.6:
                answers.append(("new", await post(keys[new])))
            await asyncio.sleep(0.1)
        assert new is not None, "no rotation happened"
        assert old not in kubelet.shown, "the old key was not retired"
        assert sum(1 for kind, _ in answers if kind == "new") >= 5
        assert [answer for answer in answers if answer[1] != 202] == []

        # Once the old key is gone from the files, the ingress refuses it (within its reload).
        retired = kubelet.retired[old]
        assert await eventually(lambda: _refused(post, retired), timeout=3)
        assert await post(kubelet.shown[new]) == 202


async def _refused(post: Any, secret: str) -> bool:
    return bool(await post(secret) == 401)
