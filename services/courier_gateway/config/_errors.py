"""The one exception type that start-up turns into a one-line message and exit code 2."""

from __future__ import annotations

import re

from pydantic import ValidationError

__all__ = ["ConfigError", "describe_validation_error"]

# The user-info part of a URL (``scheme://user:password@``): shown as ``***`` in messages.
_USERINFO = re.compile(r"(?<=://)[^/@\s]*@")


class ConfigError(Exception):
    """A configuration value is missing or invalid; the message names it and what is expected."""


def describe_validation_error(
    error: ValidationError,
    *,
    names: dict[str, str] | None = None,
    secret: frozenset[str] = frozenset(),
) -> str:
    """Render the first problem of a pydantic error as ``NAME: what is wrong (got 'value')``.

    ``names`` maps field names to the names users know (environment variables); a value whose
    path contains a name listed in ``secret`` is never echoed.
    """
    first = error.errors(include_url=False)[0]
    path = [str(part) for part in first["loc"]]
    if path and names is not None:
        path[0] = names.get(path[0], path[0])
    where = ".".join(path) or "(top level)"
    message = first["msg"]
    if first["type"] == "missing":
        message = "is required"
    got = first.get("input")
    if first["type"] != "missing" and not set(path) & secret and isinstance(got, str | int):
        # A URL's credentials are never echoed, only where it points.
        shown = _USERINFO.sub("***@", str(got))
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        message = f"{message} (got {shown!r})"
    return f"{where}: {message}"
