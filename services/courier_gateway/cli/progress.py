"""A progress line on the terminal for long command-line work (a replay of thousands).

tqdm draws it: small, well kept, and about 20 ms to import (rich's progress bars cost several
times that on every start of the command). The line goes to standard error and only when that
is a terminal, so piped or ``--json`` output never contains it.
"""

from __future__ import annotations

import os
import sys
from types import TracebackType
from typing import Any

__all__ = ["Progress"]


def _size() -> tuple[int, int]:
    """The terminal's columns and lines; 80 x 24 when it reports none (a terminal of size 0,
    as a freshly opened pseudo-terminal has, would make tqdm hide the line)."""
    try:
        size = os.get_terminal_size(sys.stderr.fileno())
    except (OSError, ValueError):
        return 80, 24
    return size.columns or 80, size.lines or 24


class Progress:
    """Counts items done out of an expected total; a no-op when stderr is not a terminal."""

    def __init__(self, description: str, *, total: int | None, unit: str = "event") -> None:
        self._bar: Any = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            columns, lines = _size()

            self._bar = tqdm(
                total=total,
                desc=description,
                unit=f" {unit}s",
                file=sys.stderr,
                leave=False,
                ncols=columns,
                nrows=lines,
            )

    def advance(self, count: int = 1) -> None:
        """Record ``count`` more items done."""
        if self._bar is not None:
            self._bar.update(count)

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.close()
