"""Key rotation without a restart: keys in a source's ``secretsDir`` are re-read as they change.

The directory is laid out the way Kubernetes mounts a Secret (key files are symlinks into a
timestamped folder behind ``..data``, swapped atomically), so the test exercises what a real
rotation by the operator does.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import yaml

from courier_gateway.config.sources import Scheme
from tests.conftest import StartGateway, base_env
from tests.support.servers import RedisServer, wait_for
from tests.support.signing import event, signed

OLD = "whsec_" + "b2xkLWtleS1vbGQta2V5LW9sZC1rZXktb2xkIQ=="
NEW = "whsec_" + "bmV3LWtleS1uZXcta2V5LW5ldy1rZXktbmV3IQ=="


def mount_secret(directory: Path, keys: dict[str, str], generation: int) -> None:
    """Publish ``keys`` the way the kubelet does: write a new folder, then swap ``..data``."""
    folder = directory / f"..2026_11_25_{generation:04d}"
    folder.mkdir()
    for key_id, value in keys.items():
        (folder / key_id).write_text(value)
    link = directory / "..data_tmp"
    link.symlink_to(folder.name)
    link.rename(directory / "..data")
    for key_id in keys:
        entry = directory / key_id
        if not entry.is_symlink():
            entry.symlink_to(f"..data/{key_id}")
    for entry in directory.iterdir():
        if not entry.name.startswith(".") and entry.name not in keys:
            entry.unlink()


def post(url: str, secret: str) -> int:
    body, headers = signed(event(source="dhl"), secret, scheme=Scheme.STANDARD_WEBHOOKS)
    return httpx.post(f"{url}/v1/events/dhl", content=body, headers=headers, timeout=5).status_code


def test_rotation_adds_then_retires_a_key_without_restart(
    tmp_path: Path, start: StartGateway, redis_server: RedisServer
) -> None:
    secrets_dir = tmp_path / "dhl-keys"
    secrets_dir.mkdir()
    mount_secret(secrets_dir, {"k-old": OLD}, 1)
    sources = tmp_path / "sources.yaml"
    sources.write_text(
        yaml.safe_dump(
            {"sources": {"dhl": {"scheme": "standard-webhooks", "secretsDir": str(secrets_dir)}}}
        )
    )
    ingress = start(
        "ingress",
        base_env(redis_server.url, SOURCES_FILE=str(sources), SECRETS_RELOAD_SECONDS="1"),
    )
    pid = ingress.child.process.pid
    assert post(ingress.url, OLD) == 202
    assert post(ingress.url, NEW) == 401

    # Overlap: the new key is added beside the old one; both are accepted.
    mount_secret(secrets_dir, {"k-old": OLD, "k-new": NEW}, 2)
    assert wait_for(lambda: post(ingress.url, NEW) == 202, timeout=5)
    assert post(ingress.url, OLD) == 202

    # Retirement: the old key file disappears; within 5 s it is refused.
    mount_secret(secrets_dir, {"k-new": NEW}, 3)
    removed_at = time.monotonic()
    assert wait_for(lambda: post(ingress.url, OLD) == 401, timeout=5)
    assert time.monotonic() - removed_at < 5
    assert post(ingress.url, NEW) == 202
    assert ingress.child.process.pid == pid and ingress.child.process.poll() is None
    assert '"keyIds":["k-new"]' in ingress.logs()


def test_a_broken_key_file_keeps_the_other_keys(
    tmp_path: Path, start: StartGateway, redis_server: RedisServer
) -> None:
    secrets_dir = tmp_path / "keys"
    secrets_dir.mkdir()
    (secrets_dir / "good").write_text(OLD)
    sources = tmp_path / "sources.yaml"
    sources.write_text(
        yaml.safe_dump(
            {"sources": {"dhl": {"scheme": "standard-webhooks", "secretsDir": str(secrets_dir)}}}
        )
    )
    ingress = start("ingress", base_env(redis_server.url, SOURCES_FILE=str(sources)))
    (secrets_dir / "broken").write_text("not-a-whsec-secret")
    assert wait_for(lambda: "skipping a signing key file" in ingress.logs(), timeout=5)
    assert post(ingress.url, OLD) == 202
    os.remove(secrets_dir / "broken")
