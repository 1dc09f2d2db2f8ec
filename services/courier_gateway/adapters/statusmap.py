"""Status maps: a carrier's status vocabulary to the gateway's shipment statuses, as data.

A key is the carrier's value, or a tuple of values joined with ``|`` when the status expression
yields a list (UPS ``[type, code]`` → ``D|FS``). ``*`` in a key matches any text (``D|*``,
``Exception_*``). Exact keys win; wildcard keys are tried in the order they are written, so the
more specific ones go first. A target is a canonical status or ``ignore`` (acknowledged, nothing
queued, e.g. a carrier's "no information yet"). A value no key matches is *unmapped*: the event
is accepted and dead-lettered ``UNMAPPED`` for review, never guessed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["IGNORE", "StatusMap", "StatusMapError", "status_key"]

IGNORE = "ignore"


class StatusMapError(ValueError):
    """A status value that cannot be turned into a key (e.g. an object)."""


def status_key(value: Any) -> str | None:
    """The lookup key of a status value: text, a number, or a list of them joined with ``|``."""
    if value.__class__ is str:
        return str(value)
    if value is None:
        return None
    if isinstance(value, list):
        parts = [_part(part) for part in value]
        return None if all(part == "" for part in parts) else "|".join(parts)
    return _part(value)


def _part(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise StatusMapError(f"a status must be text, a number or a list of them, not {type(value)}")


@dataclass(frozen=True, slots=True)
class _Pattern:
    key: str
    regex: re.Pattern[str]
    target: str


class StatusMap:
    """A compiled status map."""

    __slots__ = ("_cache", "_exact", "_ignore_case", "_patterns", "entries")

    def __init__(self, entries: Mapping[str, str], *, ignore_case: bool = False) -> None:
        self.entries = dict(entries)
        self._ignore_case = ignore_case
        self._exact: dict[str, str] = {}
        patterns: list[_Pattern] = []
        for key, target in entries.items():
            folded = key.lower() if ignore_case else key
            if "*" in key:
                regex = ".*".join(re.escape(piece) for piece in folded.split("*"))
                patterns.append(_Pattern(key, re.compile(f"^{regex}$", re.DOTALL), target))
            else:
                self._exact[folded] = target
        self._patterns = tuple(patterns)
        # Carriers use a few dozen codes: remembering each answer skips the wildcard scan.
        self._cache: dict[str, str | None] = {}

    def lookup(self, key: str) -> str | None:
        """The target for ``key`` (a canonical status or ``ignore``), or ``None``: unmapped."""
        try:
            return self._cache[key]
        except KeyError:
            pass
        found = self._lookup(key)
        if len(self._cache) >= 4096:  # bounded whatever a provider sends
            self._cache.clear()
        self._cache[key] = found
        return found

    def _lookup(self, key: str) -> str | None:
        folded = key.lower() if self._ignore_case else key
        found = self._exact.get(folded)
        if found is not None:
            return found
        for pattern in self._patterns:
            if pattern.regex.match(folded):
                return pattern.target
        return None

    def targets(self) -> Iterable[str]:
        """Every target written in the map."""
        return self.entries.values()
