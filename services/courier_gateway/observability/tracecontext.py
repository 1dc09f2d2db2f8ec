"""Request ids: the caller's ``x-request-id``, when usable, names the request in logs and responses.

Without one, the W3C trace id does (see :mod:`courier_gateway.observability.tracing`), so logs
and traces share one key. A malformed ``x-request-id`` or ``traceparent`` is ignored rather than
refused: tracing headers must never cost a courier its delivery.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["request_id", "single"]

_REQUEST_ID = re.compile(r"^[\x21-\x7e]{1,128}$")


def single(values: Sequence[str]) -> str | None:
    """The header's value when it was sent exactly once."""
    return values[0].strip() if len(values) == 1 else None


def request_id(values: Sequence[str]) -> str | None:
    """A usable ``x-request-id`` (1-128 printable characters), else ``None``."""
    given = single(values)
    return given if given and _REQUEST_ID.match(given) else None
