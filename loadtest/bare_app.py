"""A bare Sanic endpoint: the reference for how fast this machine serves Sanic with no work.

``POST /v1/events/<source>`` answers 202 with a small JSON body and does nothing else: no
signature check, no parsing, no Redis. The benchmark runs it with the gateway's number of worker
processes and the access log off, and divides the gateway's intake throughput by its throughput
(the intake/bare ratio), which cancels out most of what the machine itself contributes::

    python -m sanic loadtest.bare_app:app --host 127.0.0.1 --port 8000 --workers 2 --no-motd \\
        --no-access-logs
"""

from __future__ import annotations

from sanic import Request, Sanic
from sanic.response import HTTPResponse, raw

__all__ = ["BODY", "app", "command"]

#: The same size and shape as the gateway's 202 answer, fixed.
BODY = (
    b'{"acknowledged":true,"eventId":"evt_bare","idempotencyKey":"courier:evt_bare",'
    b'"traceId":"00000000000000000000000000000000","queued":true,"duplicate":false,'
    b'"receivedAt":"2026-01-01T00:00:00.000Z"}'
)

app = Sanic("loadtest-bare")
app.config.ACCESS_LOG = False
app.config.MOTD = False
app.config.KEEP_ALIVE_TIMEOUT = 5


@app.post("/v1/events/<source:str>")
async def accept(request: Request, source: str) -> HTTPResponse:
    """Answer 202 with a fixed JSON body once the request body is read."""
    return raw(BODY, status=202, content_type="application/json")


def command(python: str, *, port: int, workers: int) -> list[str]:
    """The command line that serves this app."""
    return [
        python,
        "-m",
        "sanic",
        "loadtest.bare_app:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--no-motd",
        "--no-access-logs",
    ]
