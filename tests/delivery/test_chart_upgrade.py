"""Upgrading a release of the previous chart to this one: the CRDs upgrade, nothing breaks.

The previous chart is the one of :data:`PREVIOUS` (the chart as released before the CRDs moved
into templates), taken from git history. Both are rendered offline (Helm's own code): the old
one as installed, the new one as ``helm upgrade`` renders it. What is checked:

- the new release carries every CRD the old one installed (from its ``crds/`` directory, which
  Helm never upgraded), as templates Helm now upgrades, marked ``helm.sh/resource-policy: keep``;
  each is a valid CustomResourceDefinition, still serves every version the old one served, and
  keeps the same storage version (no silent storage migration);
- every custom resource the old chart created and every sample of the old ``k8s/samples/`` is
  still valid under the new schemas (stored objects stay readable and writable);
- every object the upgrade renders is valid (Kubernetes 1.30 schemas, custom resources against
  the new CRDs), and the custom resources are ordinary release objects again (no install hook);
- docs/deploy.md tells how to let Helm adopt the CRDs the old chart left unmanaged, naming each.
"""

from __future__ import annotations

import subprocess
import tarfile
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.delivery.conftest import CHART, NAMESPACE, RELEASE, ROOT
from tests.support.crds import validate_custom_resource

# The last commit with the chart whose CRDs lived in crds/ (what installed releases run).
PREVIOUS = "0bfbcdd063bc4d7bc35749e7091a71a6741bcfdd"
KEEP = {"helm.sh/resource-policy": "keep"}
VALUES: dict[str, Any] = {
    "redis": {"existingSecret": "courier-redis"},
    "mongo": {"existingSecret": "courier-mongo"},
    "gateway": {"enabled": True},
    "monitoring": {"podMonitor": {"enabled": True}},
}


@pytest.fixture(scope="module")
def previous(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The previous release's chart and samples, from git history."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", PREVIOUS, "charts/courier-gateway", "k8s/samples"],
        cwd=ROOT, capture_output=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    folder = tmp_path_factory.mktemp("previous")
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder


@pytest.fixture(scope="module")
def previous_chart(previous: Path) -> Iterator[helm.Chart]:
    with helm.Chart.load(previous / "charts" / "courier-gateway") as chart:
        yield chart


def _objects(manifests: dict[str, str]) -> list[dict[str, Any]]:
    return [
        doc
        for template, text in sorted(manifests.items())
        if not template.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


@pytest.fixture(scope="module")
def old(previous: Path, previous_chart: helm.Chart) -> dict[str, list[dict[str, Any]]]:
    """The previous release: its crds/ (installed once), its templates, its samples."""
    crds = [doc for crd in previous_chart.crds for doc in yaml.safe_load_all(crd["data"]) if doc]
    rendered = previous_chart.render(VALUES, name=RELEASE, namespace=NAMESPACE, is_install=True)
    samples = [
        doc
        for path in sorted((previous / "k8s" / "samples").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]
    return {"crds": crds, "objects": _objects(rendered), "samples": samples}


@pytest.fixture(scope="module")
def new() -> list[dict[str, Any]]:
    """This chart as `helm upgrade` renders it over the previous release."""
    with helm.Chart.load(CHART) as chart:
        assert chart.crds == [], "CRDs live in templates now (crds/ is never upgraded by Helm)"
        rendered = chart.render(VALUES, name=RELEASE, namespace=NAMESPACE, is_upgrade=True)
    return _objects(rendered)


def _crds(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        doc["metadata"]["name"]: doc for doc in objects if doc["kind"] == "CustomResourceDefinition"
    }


def test_the_upgrade_carries_every_old_crd_as_a_kept_release_object(
    old: dict[str, list[dict[str, Any]]], new: list[dict[str, Any]]
) -> None:
    before = {doc["metadata"]["name"]: doc for doc in old["crds"]}
    after = _crds(new)
    assert len(before) == 4
    assert set(after) >= set(before)
    for name, crd in after.items():
        kubernetes_validate.validate(crd, "1.30.0", strict=True)
        assert crd["metadata"]["annotations"] == KEEP, name
        assert crd["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm", name
    for name, previous in before.items():
        versions = {v["name"]: v for v in after[name]["spec"]["versions"]}
        for version in previous["spec"]["versions"]:
            if version.get("served"):
                assert versions[version["name"]]["served"], (name, version["name"])
            assert bool(version.get("storage")) == bool(versions[version["name"]].get("storage"))
        assert after[name]["spec"]["scope"] == previous["spec"]["scope"]
        assert after[name]["spec"]["names"] == previous["spec"]["names"]


def _stored_objects(old: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    groups = {crd["spec"]["group"] for crd in old["crds"]}
    created = [doc for doc in old["objects"] if doc["apiVersion"].split("/")[0] in groups]
    samples = [doc for doc in old["samples"] if doc["apiVersion"].split("/")[0] in groups]
    return created + samples


def test_objects_stored_under_the_old_crds_stay_valid_under_the_new_ones(
    old: dict[str, list[dict[str, Any]]], new: list[dict[str, Any]]
) -> None:
    stored = _stored_objects(old)
    kinds = {doc["kind"] for doc in stored}
    assert {"CourierGateway", "ClusterKopfPeering", "ReplayRequest"} <= kinds
    new_crds = list(_crds(new).values())
    for doc in stored:
        validate_custom_resource(doc, among=old["crds"])  # they were valid then
        try:
            validate_custom_resource(doc, among=new_crds)
        except jsonschema.ValidationError as error:
            pytest.fail(f"{doc['kind']} {doc['metadata']['name']}: {error.message}")


def test_every_object_of_the_upgrade_is_valid(new: list[dict[str, Any]]) -> None:
    new_crds = list(_crds(new).values())
    groups = {crd["spec"]["group"] for crd in new_crds}
    for doc in new:
        group = doc["apiVersion"].rpartition("/")[0]
        if group in groups:
            validate_custom_resource(doc, among=new_crds)
            # Upgrades adopt them as ordinary release objects: no install hook any more.
            assert "helm.sh/hook" not in (doc["metadata"].get("annotations") or {}), doc["kind"]
        elif group != "monitoring.coreos.com":
            kubernetes_validate.validate(doc, "1.30.0", strict=True)
    gateway = next(doc for doc in new if doc["kind"] == "CourierGateway")
    assert gateway["metadata"]["annotations"] == KEEP


def test_a_first_install_creates_the_custom_resources_after_their_crds() -> None:
    """Helm maps every object before applying any: on the first install the chart's own custom
    resources are post-install hooks, carrying the ownership metadata a later upgrade adopts."""
    with helm.Chart.load(CHART) as chart:
        rendered = _objects(
            chart.render(VALUES, name=RELEASE, namespace=NAMESPACE, is_install=True)
        )
        without_crds = _objects(
            chart.render(
                {**VALUES, "crds": {"install": False}},
                name=RELEASE,
                namespace=NAMESPACE,
                is_install=True,
            )
        )
    custom = [doc for doc in rendered if doc["kind"] in ("CourierGateway", "ClusterKopfPeering")]
    assert len(custom) == 2
    for doc in custom:
        annotations = doc["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == "post-install"
        assert annotations["meta.helm.sh/release-name"] == RELEASE
        assert annotations["meta.helm.sh/release-namespace"] == NAMESPACE
        assert doc["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    # CRDs owned elsewhere are there before the release: nothing to wait for.
    assert _crds(without_crds) == {}
    for doc in without_crds:
        assert "helm.sh/hook" not in (doc["metadata"].get("annotations") or {}) or doc["kind"] in (
            "Pod",
            "Job",
        )


def test_the_upgrade_guide_adopts_each_crd_the_old_chart_left_unmanaged(
    old: dict[str, list[dict[str, Any]]],
) -> None:
    guide = (ROOT / "docs" / "deploy.md").read_text().split("## Upgrade", 1)[1].split("\n## ", 1)[0]
    for crd in old["crds"]:
        assert crd["metadata"]["name"] in guide, crd["metadata"]["name"]
    for command in (
        "meta.helm.sh/release-name=",
        "meta.helm.sh/release-namespace=",
        "app.kubernetes.io/managed-by=Helm",
    ):
        assert command in guide
