"""JSON responses and the intake's error type, so every refusal has the same shape.

Errors are ``{acknowledged: false, errorCode, message, traceId}``; the message names the check
that failed and never echoes the caller's input back.
"""

from __future__ import annotations

from typing import Any

import orjson
from sanic.response import HTTPResponse

__all__ = ["IntakeError", "error_response", "json_response"]


class IntakeError(Exception):
    """A request the intake refuses; carries the status, error code and ``Retry-After``."""

    def __init__(
        self, status: int, code: str, message: str, *, retry_after: int | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


def json_response(
    document: dict[str, Any], status: int, *, headers: dict[str, str] | None = None
) -> HTTPResponse:
    """A JSON response serialised with orjson."""
    return HTTPResponse(
        orjson.dumps(document), status=status, headers=headers, content_type="application/json"
    )


def error_response(
    status: int, code: str, message: str, trace_id: str, *, retry_after: int | None = None
) -> HTTPResponse:
    """The error shape every refusal uses, with ``Retry-After`` when the caller should come back."""
    headers = {"x-request-id": trace_id}
    if retry_after is not None:
        headers["retry-after"] = str(retry_after)
    return json_response(
        {"acknowledged": False, "errorCode": code, "message": message, "traceId": trace_id},
        status,
        headers=headers,
    )
