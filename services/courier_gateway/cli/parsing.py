"""Argument parsing shared by the commands: one-line usage errors and the common value types.

Usage errors (a wrong or contradictory argument) are labelled as such and end with exit code 2,
like configuration errors, but are told apart from them: the fix is in the command line, not in
the environment. This module imports nothing heavy, so ``--help`` and the refusal of a second
``courier-gateway dev`` stay fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import datetime
from typing import NoReturn

__all__ = [
    "CommandParser",
    "UsageError",
    "moment",
    "positive",
]


class UsageError(Exception):
    """The command line is wrong; the message names the argument and what is expected."""


class CommandParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line: ``PROG: usage error: MESSAGE``."""

    def error(self, message: str) -> NoReturn:
        """Print the problem on one line (with where to find the options) and exit 2."""
        sys.stderr.write(f"{self.prog}: usage error: {message} (see {self.prog} --help)\n")
        raise SystemExit(2)


def moment(text: str) -> datetime:
    """An RFC 3339 / ISO 8601 time with a zone, e.g. ``2026-11-25T10:00:00Z``."""
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an RFC 3339 time (e.g. 2026-11-25T10:00:00Z)"
        ) from None
    if parsed.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone (add Z or +00:00)")
    return parsed


def positive(kind: type[int] | type[float]) -> Callable[[str], int | float]:
    """An argument type: a number of ``kind`` greater than 0."""

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0")
        return value

    return parse
