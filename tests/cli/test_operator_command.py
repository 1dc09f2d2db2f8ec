"""``courier-gateway operator`` refuses bad settings with one line naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("OPERATOR_INTERVAL_SECONDS", "0"),
        ("OPERATOR_NAMESPACES", "Bad_Namespace"),
        ("OPERATOR_HEALTH_PORT", "70000"),
        ("OPERATOR_PEERING", "-peer"),
    ],
)
def test_bad_operator_settings_exit_2_naming_the_variable(variable: str, value: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "courier_gateway", "operator"],
        env={"PATH": os.environ["PATH"], variable: value},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"courier-gateway: configuration error: {variable}:"), line
