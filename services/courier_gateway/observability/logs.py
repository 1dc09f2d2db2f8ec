"""JSON logs: one object per line on stderr, with the request's or job's context as fields.

Context travels as ``extra=`` fields on the log call (``traceId``, ``eventId``, ``source``, …);
anything JSON can carry is kept, anything else is written as its ``str()``. Stack traces are
included only when a record carries exception info, which the code does only for the unexpected.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any, TextIO

import orjson

__all__ = ["JsonFormatter", "configure_logging", "iso_utc", "log_line"]

_output: dict[str, int | None] = {"fd": None}
_second: list[tuple[int, str]] = [(-1, "")]

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "taskName"}
)


class JsonFormatter(logging.Formatter):
    """Format records as single-line JSON objects with ``ts``, ``level``, ``logger``, ``msg``."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` and its extra fields as one JSON line."""
        document: dict[str, Any] = {
            "ts": iso_utc(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name, value in record.__dict__.items():
            if name not in _STANDARD and not name.startswith("_"):
                document[name] = value
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(document, default=str).decode()


def iso_utc(created: float) -> str:
    """RFC 3339 UTC text with milliseconds, e.g. ``2026-11-25T10:00:00.123Z``."""
    whole = int(created)
    cached = _second[0]
    if cached[0] != whole:  # format the date once a second, not once a line
        cached = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
        _second[0] = cached  # one assignment: threads see the old pair or the new one
    return f"{cached[1]}.{int((created - whole) * 1000):03d}Z"


def configure_logging(level: str, *, stream: TextIO | None = None) -> None:
    """Send every logger (ours and the libraries') through one JSON handler at ``level``."""
    target = stream or sys.stderr
    try:
        _output["fd"] = target.fileno()
    except (AttributeError, OSError, ValueError):
        _output["fd"] = None
    handler = logging.StreamHandler(target)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Sanic installs its own handlers on its loggers; route them through ours instead.
    for name in ("sanic.root", "sanic.error", "sanic.access", "sanic.server", "sanic.websockets"):
        library = logging.getLogger(name)
        library.handlers[:] = []
        library.propagate = True
    logging.getLogger("sanic.access").setLevel(logging.WARNING)


def log_line(logger: logging.Logger, msg: str, fields: dict[str, Any]) -> None:
    """Write one INFO line for ``logger`` straight to the log's file descriptor.

    The same JSON shape as :class:`JsonFormatter`, without the logging machinery: this is the
    one-line-per-request log on the intake's hot path. A line is one ``write``, which the OS keeps
    whole (up to the pipe buffer) even with several processes sharing the stream.
    """
    if not logger.isEnabledFor(logging.INFO):
        return
    descriptor = _output["fd"]
    if descriptor is None:
        logger.info(msg, extra=fields)
        return
    document = {"ts": iso_utc(time.time()), "level": "info", "logger": logger.name, "msg": msg}
    document.update(fields)
    os.write(descriptor, orjson.dumps(document, default=str) + b"\n")
