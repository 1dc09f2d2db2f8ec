"""``SOURCES_FILE`` validation at start-up, and live re-reading of key directories.

Proved here: every malformed sources file stops ``courier-gateway ingress`` (a real process) with
exit code 2 and one stderr line naming the file's path and the offending field (for example
``sources.dhl.scheme``), without a traceback and without echoing a secret. Directly against
:func:`load_sources` and :class:`KeyRing`: a key file added to a ``secretsDir`` becomes active on
reload, a deleted one stops being accepted, a broken one is skipped while the others stay active,
and hidden entries such as Kubernetes' ``..data`` bookkeeping are ignored.
"""

from __future__ import annotations

import base64
import copy
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from courier_gateway.config import ConfigError, KeyRing, Scheme, Settings, load_sources
from tests.support.sources import COURIER_SECRET, DHL_SECRET, LEGACY_SECRET, LIMITED_SECRET

REDIS_URL = "redis://127.0.0.1:1/0"  # never contacted: every case fails before connecting

BASE: dict[str, Any] = {
    "sources": {
        "courier": {"scheme": "v1", "secrets": [{"id": "k1", "value": COURIER_SECRET}]},
        "dhl": {"scheme": "standard-webhooks", "secrets": [{"id": "dhl-1", "value": DHL_SECRET}]},
        "legacy": {"scheme": "legacy-body", "secrets": [{"id": "old", "value": LEGACY_SECRET}]},
        "fedex": {
            "scheme": "v1",
            "secrets": [{"id": "fx", "value": LIMITED_SECRET}],
            "rateLimit": {"perSecond": 5, "burst": 5},
        },
    }
}
ALL_SECRETS = (COURIER_SECRET, DHL_SECRET, LEGACY_SECRET, LIMITED_SECRET)
DHL_KEY = base64.b64encode(b"dhl-test-key-32-bytes-long-00000").decode()

Content = dict[str, Any] | str


def changed(edit: Callable[[dict[str, Any]], object]) -> Callable[[Path], Content]:
    """A case whose sources file is ``BASE`` with ``edit`` applied to its ``sources`` mapping."""

    def build(_directory: Path) -> Content:
        document = copy.deepcopy(BASE)
        edit(document["sources"])
        return document

    return build


def with_key_dir(directory: Path) -> Content:
    """``courier`` reads its keys from a directory holding one key file that is too short."""
    keys = directory / "keys"
    keys.mkdir()
    (keys / "k1").write_text("short")
    document = copy.deepcopy(BASE)
    document["sources"]["courier"] = {"scheme": "v1", "secretsDir": str(keys)}
    return document


def missing_key_dir(directory: Path) -> Content:
    document = copy.deepcopy(BASE)
    document["sources"]["dhl"] = {
        "scheme": "standard-webhooks",
        "secretsDir": str(directory / "no-such-dir"),
    }
    return document


def rename(sources: dict[str, Any], old: str, new: str) -> None:
    sources[new] = sources.pop(old)


# case id -> (how to build the file, what the one line must mention besides the file's path)
CASES: dict[str, tuple[Callable[[Path], Content], tuple[str, ...]]] = {
    "unknown-scheme": (
        changed(lambda s: s["dhl"].update(scheme="v2")),
        ("sources.dhl.scheme", "'v2'"),
    ),
    "neither-secrets-nor-dir": (
        changed(lambda s: s["dhl"].pop("secrets")),
        ("sources.dhl", "secretsDir"),
    ),
    "bad-key-id": (
        changed(lambda s: s["courier"]["secrets"][0].update(id="bad id!")),
        ("sources.courier.secrets.0.id",),
    ),
    "duplicate-key-ids": (
        changed(lambda s: s["courier"]["secrets"].append({"id": "k1", "value": "another-secret"})),
        ("sources.courier", "unique"),
    ),
    "whsec-prefix-missing": (
        changed(lambda s: s["dhl"]["secrets"][0].update(value=DHL_KEY)),
        ("sources.dhl.secrets.0.value", "whsec_"),
    ),
    "whsec-not-base64": (
        changed(lambda s: s["dhl"]["secrets"][0].update(value="whsec_not*base64!")),
        ("sources.dhl.secrets.0.value", "base64"),
    ),
    "whsec-key-too-short": (
        changed(lambda s: s["dhl"]["secrets"][0].update(value="whsec_c2hvcnQ=")),
        ("sources.dhl.secrets.0.value", "16 bytes"),
    ),
    "v1-secret-too-short": (
        changed(lambda s: s["courier"]["secrets"][0].update(value="abc")),
        ("sources.courier.secrets.0.value", "8 characters"),
    ),
    "secrets-dir-missing": (missing_key_dir, ("sources.dhl.secretsDir", "not a directory")),
    "secrets-dir-bad-key-file": (
        with_key_dir,
        ("sources.courier.secretsDir", "k1", "8 characters"),
    ),
    "invalid-yaml": (
        lambda _d: "sources:\n  courier: {scheme: v1, secrets: [{id: k1, value: x}]\n",
        ("not valid YAML",),
    ),
    "unknown-field": (
        changed(lambda s: s["dhl"].update(colour="yellow")),
        ("sources.dhl.colour",),
    ),
    "unknown-top-level-field": (
        lambda _d: {**copy.deepcopy(BASE), "version": 2},
        ("version",),
    ),
    "bad-source-name": (
        changed(lambda s: rename(s, "dhl", "DHL")),
        ("sources.DHL", "lowercase"),
    ),
    "rate-limit-zero": (
        changed(lambda s: s["fedex"]["rateLimit"].update(perSecond=0)),
        ("sources.fedex.rateLimit.perSecond",),
    ),
    "rate-limit-burst-missing": (
        changed(lambda s: s["fedex"]["rateLimit"].pop("burst")),
        ("sources.fedex.rateLimit.burst", "required"),
    ),
}


def run_ingress(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``courier-gateway ingress`` with exactly ``env`` plus PATH; it must exit by itself."""
    return subprocess.run(
        [sys.executable, "-m", "courier_gateway", "ingress"],
        env={"PATH": os.environ["PATH"], "REDIS_URL": REDIS_URL, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def write(path: Path, content: Content) -> Path:
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    return path


def assert_config_error(result: subprocess.CompletedProcess[str], *mentions: str) -> str:
    """Exit 2, one stderr line naming every item of ``mentions``, no traceback; return the line."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    for mention in mentions:
        assert mention in lines[0], lines[0]
    for secret in ALL_SECRETS:
        assert secret not in result.stderr + result.stdout
    return lines[0]


@pytest.fixture(scope="module")
def outcomes(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, tuple[Path, subprocess.CompletedProcess[str]]]:
    """Every case of ``CASES`` written to its own file and run as an ingress, concurrently."""
    files: dict[str, Path] = {}
    for case, (build, _) in CASES.items():
        directory = tmp_path_factory.mktemp(case)
        files[case] = write(directory / "sources.yaml", build(directory))
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {
            case: pool.submit(run_ingress, {"SOURCES_FILE": str(path)})
            for case, path in files.items()
        }
        return {case: (files[case], future.result()) for case, future in futures.items()}


@pytest.mark.parametrize("case", list(CASES))
def test_invalid_sources_file_stops_the_ingress(outcomes, case: str) -> None:
    path, result = outcomes[case]
    line = assert_config_error(result, *CASES[case][1])
    assert line.startswith(f"courier-gateway: configuration error: SOURCES_FILE {path}: "), line


def test_unreadable_sources_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    assert_config_error(run_ingress({"SOURCES_FILE": str(path)}), str(path), "cannot be read")


def test_courier_in_the_file_and_in_signing_secret_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "sources.yaml", BASE)
    result = run_ingress({"SOURCES_FILE": str(path), "SIGNING_SECRET": "env-secret-value-123"})
    line = assert_config_error(result, "SIGNING_SECRET", "'courier'", "SOURCES_FILE")
    assert "env-secret-value-123" not in line


def test_a_secret_of_the_wrong_type_is_not_echoed(tmp_path: Path) -> None:
    # YAML reads an all-digit secret as a number; the error must still not print the secret.
    document = copy.deepcopy(BASE)
    document["sources"]["courier"]["secrets"][0]["value"] = 918273645546372819
    path = write(tmp_path / "sources.yaml", document)
    line = assert_config_error(
        run_ingress({"SOURCES_FILE": str(path)}), str(path), "sources.courier.secrets.0.value"
    )
    assert "918273645546372819" not in line


# --- load_sources and KeyRing, in process ---------------------------------------------------


def settings_for(path: Path, **env: str) -> Settings:
    return Settings.from_env({"SOURCES_FILE": str(path), **env})


def dir_source(tmp_path: Path, keys: dict[str, str], *, scheme: str = "v1", **extra: Any) -> Path:
    """A sources file whose ``courier`` source reads ``keys`` from ``tmp_path/keys``."""
    directory = tmp_path / "keys"
    directory.mkdir()
    for key_id, value in keys.items():
        (directory / key_id).write_text(value)
    spec = {"scheme": scheme, "secretsDir": str(directory), **extra}
    return write(tmp_path / "sources.yaml", {"sources": {"courier": spec}})


def key_ids(ring: KeyRing, name: str = "courier") -> list[str]:
    source = ring.get(name)
    assert source is not None
    return [key.id for key in source.keys]


def test_load_sources_builds_every_source_with_its_settings(tmp_path: Path) -> None:
    path = write(tmp_path / "sources.yaml", BASE)
    sources = load_sources(settings_for(path, SIGNATURE_TOLERANCE_SECONDS="120"))
    assert sorted(sources) == ["courier", "dhl", "fedex", "legacy"]
    assert sources["dhl"].scheme is Scheme.STANDARD_WEBHOOKS
    assert sources["dhl"].keys[0].secret == b"dhl-test-key-32-bytes-long-00000"
    assert sources["legacy"].scheme is Scheme.LEGACY_BODY
    assert sources["courier"].keys[0].secret == COURIER_SECRET.encode()
    assert sources["courier"].tolerance_seconds == 120
    assert sources["courier"].rate_limit is None
    assert sources["fedex"].rate_limit is not None
    assert (sources["fedex"].rate_limit.per_second, sources["fedex"].rate_limit.burst) == (5, 5)


def test_signing_secret_alone_defines_the_courier_source() -> None:
    sources = load_sources(Settings.from_env({"SIGNING_SECRET": COURIER_SECRET}))
    assert list(sources) == ["courier"]
    assert sources["courier"].scheme is Scheme.V1
    assert [(key.id, key.secret) for key in sources["courier"].keys] == [
        ("default", COURIER_SECRET.encode())
    ]


def test_signing_secret_adds_courier_next_to_other_file_sources(tmp_path: Path) -> None:
    document = copy.deepcopy(BASE)
    del document["sources"]["courier"]
    path = write(tmp_path / "sources.yaml", document)
    sources = load_sources(settings_for(path, SIGNING_SECRET=COURIER_SECRET))
    assert sorted(sources) == ["courier", "dhl", "fedex", "legacy"]


def test_no_source_at_all_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "sources.yaml", {"sources": {}})
    with pytest.raises(ConfigError, match=r"^SIGNING_SECRET: is required"):
        load_sources(settings_for(path))


def test_key_files_are_read_stripped_and_merged_after_inline_keys(tmp_path: Path) -> None:
    path = dir_source(
        tmp_path,
        {"k2": "dir-secret-two\n", "k1": "dir-secret-one"},
        secrets=[{"id": "k1", "value": "inline-secret-1"}],
    )
    ring = KeyRing(load_sources(settings_for(path)))
    source = ring.get("courier")
    assert source is not None
    # The inline k1 wins over the file k1; a mounted file's trailing newline is not key material.
    assert [(key.id, key.secret) for key in source.keys] == [
        ("k1", b"inline-secret-1"),
        ("k2", b"dir-secret-two"),
    ]


def test_added_key_file_becomes_active_on_reload(tmp_path: Path) -> None:
    path = dir_source(tmp_path, {"k1": "dir-secret-one"})
    ring = KeyRing(load_sources(settings_for(path)))
    assert key_ids(ring) == ["k1"]
    assert ring.reload() is False
    (tmp_path / "keys" / "k2").write_text("dir-secret-two")
    assert ring.reload() is True
    assert key_ids(ring) == ["k1", "k2"]
    assert ring.reload() is False


def test_changed_key_file_content_is_picked_up(tmp_path: Path) -> None:
    path = dir_source(tmp_path, {"k1": "dir-secret-one"})
    ring = KeyRing(load_sources(settings_for(path)))
    (tmp_path / "keys" / "k1").write_text("dir-secret-rotated")
    assert ring.reload() is True
    source = ring.get("courier")
    assert source is not None
    assert [key.secret for key in source.keys] == [b"dir-secret-rotated"]


def test_deleted_key_file_is_removed_on_reload(tmp_path: Path) -> None:
    path = dir_source(tmp_path, {"k1": "dir-secret-one", "k2": "dir-secret-two"})
    ring = KeyRing(load_sources(settings_for(path)))
    (tmp_path / "keys" / "k1").unlink()
    assert ring.reload() is True
    assert key_ids(ring) == ["k2"]


def test_broken_key_file_at_reload_is_skipped_and_others_stay(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = dir_source(tmp_path, {"k1": "dir-secret-one", "k2": "dir-secret-two"})
    ring = KeyRing(load_sources(settings_for(path)))
    keys = tmp_path / "keys"
    (keys / "k3").write_text("short")  # too short for a v1 key
    (keys / "k2").write_bytes(b"\xff\xfe not utf-8 at all")
    (keys / "bad name").write_text("dir-secret-bad-name")
    with caplog.at_level(logging.WARNING, logger="courier_gateway.config.sources"):
        assert ring.reload() is True
    assert key_ids(ring) == ["k1"]
    problems = [record.problem for record in caplog.records]  # type: ignore[attr-defined]
    assert len(problems) == 3
    assert any("k3" in problem for problem in problems)
    assert all("dir-secret" not in problem for problem in problems)
    # The same problems are not logged again on every reload.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="courier_gateway.config.sources"):
        assert ring.reload() is False
    assert caplog.records == []
    # Once repaired, the key is active again.
    (keys / "k3").write_text("dir-secret-three")
    assert ring.reload() is True
    assert key_ids(ring) == ["k1", "k3"]


def test_hidden_entries_and_kubernetes_bookkeeping_are_ignored(tmp_path: Path) -> None:
    """The kubelet's layout: ``k1 -> ..data/k1``, ``..data -> ..<timestamp>/``, swapped at once."""
    directory = tmp_path / "keys"
    directory.mkdir()

    def publish(generation: int, keys: dict[str, str]) -> None:
        folder = directory / f"..2026_01_01_00_00_0{generation}.12345"
        folder.mkdir()
        for key_id, value in keys.items():
            (folder / key_id).write_text(value)
        link = directory / "..data_tmp"
        link.symlink_to(folder.name)
        link.rename(directory / "..data")
        for key_id in keys:
            if not (directory / key_id).is_symlink():
                (directory / key_id).symlink_to(f"..data/{key_id}")

    publish(1, {"k1": DHL_SECRET})
    (directory / ".hidden").write_text("not a key at all")
    spec = {"scheme": "standard-webhooks", "secretsDir": str(directory)}
    path = write(tmp_path / "sources.yaml", {"sources": {"dhl": spec}})
    ring = KeyRing(load_sources(settings_for(path)))
    assert key_ids(ring, "dhl") == ["k1"]

    new = "whsec_" + base64.b64encode(b"a-brand-new-key-of-32-bytes-0000").decode()
    publish(2, {"k1": DHL_SECRET, "k2": new})
    assert ring.reload() is True
    assert key_ids(ring, "dhl") == ["k1", "k2"]

    # k1 leaves the Secret: its symlink now dangles until the kubelet removes it.
    publish(3, {"k2": new})
    assert ring.reload() is True
    assert key_ids(ring, "dhl") == ["k2"]
    (directory / "k1").unlink()
    assert ring.reload() is False
