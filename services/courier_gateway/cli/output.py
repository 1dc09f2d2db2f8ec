"""How the operator commands print: aligned tables for people, JSON for programs.

Times are printed in one format everywhere (RFC 3339, UTC, milliseconds; see ``timestamps``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["print_json", "table"]


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], *, empty: str) -> str:
    """Columns padded to their widest cell; ``empty`` when there are no rows."""
    if not rows:
        return empty
    cells = [[str(value) for value in row] for row in rows]
    widths = [
        max(len(header), *(len(row[index]) for row in cells))
        for index, header in enumerate(headers)
    ]

    def line(values: Sequence[str]) -> str:
        padded = [value.ljust(width) for value, width in zip(values, widths, strict=True)]
        return "  ".join(padded).rstrip()

    return "\n".join([line(list(headers)), *(line(row) for row in cells)])


def print_json(document: Any) -> None:
    """Write ``document`` as indented JSON on standard output."""
    import orjson

    sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
