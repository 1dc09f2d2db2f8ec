"""Golden cases: a provider's documented sample (and variants) and the canonical events expected.

Each ``golden/<adapter>.json`` holds a list of cases ``{"name", "body", "expect"}``; ``body`` is the
JSON the provider sends (``"sample"`` means the adapter's own sample), and ``expect`` is either
``{"events": [...], "unmapped": [...], "ignored": [...]}`` or ``{"error": "<message>"}``.
The expectations were written from the providers' documentation and checked by hand; rewrite
them only after reading the diff (``python -m tests.adapters.golden_support --write`` prints it).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from courier_gateway.adapters.adapter import Adapter
from courier_gateway.adapters.loader import builtin_registry
from courier_gateway.adapters.mapping import PayloadError
from courier_gateway.adapters.report import mapping_report

GOLDEN = Path(__file__).parent / "golden"
SOURCE = "carrier"


def body_of(adapter: Adapter, case: dict[str, Any]) -> bytes:
    """The raw body of a case."""
    if case["body"] == "sample":
        assert adapter.document.sample is not None
        return adapter.document.sample.encode()
    return json.dumps(case["body"]).encode()


def outcome(adapter: Adapter, body: bytes) -> dict[str, Any]:
    """What the adapter makes of ``body``, in the golden files' form."""
    try:
        mapping = adapter.map_body(body, source=SOURCE, default_source="courier")
    except PayloadError as error:
        return {"error": str(error)}
    return mapping_report(mapping)


def cases(name: str) -> list[dict[str, Any]]:
    """The golden cases of one adapter."""
    loaded: list[dict[str, Any]] = json.loads((GOLDEN / f"{name}.json").read_text())
    return loaded


def _write() -> None:
    registry = builtin_registry()
    for path in sorted(GOLDEN.glob("*.json")):
        adapter = registry.get(path.stem)
        assert adapter is not None, path
        loaded = cases(path.stem)
        for case in loaded:
            got = outcome(adapter, body_of(adapter, case))
            if got != case.get("expect"):
                sys.stdout.write(f"--- {path.stem} / {case['name']}\n{json.dumps(got, indent=1)}\n")
                case["expect"] = got
        path.write_text(json.dumps(loaded, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__" and "--write" in sys.argv:
    _write()
