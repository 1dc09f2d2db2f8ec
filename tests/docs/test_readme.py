"""The README's configuration table is the settings object, variable for variable and default
for default, so the docs cannot drift from the code; and the two commands stand at the top."""

from __future__ import annotations

import re
from pathlib import Path

from courier_gateway.config import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def configuration_rows() -> dict[str, str]:
    text = README.read_text()
    section = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([A-Z0-9_]+)` \| ([^|]+) \|", section, flags=re.MULTILINE)
    return {name: default.strip() for name, default in rows}


def test_every_variable_is_documented_with_its_default() -> None:
    documented = configuration_rows()
    variables = Settings.variables()
    assert sorted(documented) == sorted(variables)
    for name, default in variables.items():
        if default is None:
            assert not documented[name].startswith("`"), name
        else:
            shown = default.value if hasattr(default, "value") else default
            assert documented[name] == f"`{shown}`", name


def test_the_two_commands_are_at_the_top() -> None:
    head = README.read_text()[:1200]
    assert "make dev" in head and "make test" in head
