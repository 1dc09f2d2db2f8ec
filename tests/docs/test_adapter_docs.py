"""The adapter docs stay true: the README describes every built-in adapter with its whole status
map and its unconfirmed details, and docs/adapters.md names every built-in and every field of the
adapter document."""

from __future__ import annotations

from pathlib import Path

import pytest

from courier_gateway.adapters import builtin_registry
from courier_gateway.adapters.model import AdapterDocument, EventSpec

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
GUIDE = (ROOT / "docs" / "adapters.md").read_text()
PROVIDERS = sorted(a.name for a in builtin_registry() if not a.canonical)


def _section(name: str) -> str:
    start = README.index(f"### `{name}` — ")
    end = README.index("\n#", start + 1)
    return README[start:end]


@pytest.mark.parametrize("name", PROVIDERS)
def test_readme_describes_each_built_in_with_its_status_map(name: str) -> None:
    adapter = builtin_registry().get(name)
    assert adapter is not None and adapter.document.event is not None
    section = _section(name)
    for key, target in adapter.document.event.status.map.items():
        assert f"`{key}` → `{target}`" in section, (name, key)
    for detail in adapter.document.unconfirmed:
        assert detail in section
    assert "Provider setup" in section
    assert f"**Answer**: {adapter.success_status}" in section


def test_the_guide_covers_every_field_and_built_in() -> None:
    for field in [*AdapterDocument.model_fields, *EventSpec.model_fields]:
        name = "as" if field == "as_" else field
        assert name in GUIDE, field
    for adapter in builtin_registry():
        assert f"`{adapter.name}`" in GUIDE, adapter.name
