"""Delivering applied updates downstream, signed, idempotent, and behind a circuit breaker.

The request is signed with the ``v1`` scheme (``DOWNSTREAM_SIGNING_SECRET``), carries an
``Idempotency-Key`` (the event's, stable across retries) and the ``traceparent``. 5xx, timeouts
and connection errors are transient; 429 is transient with its ``Retry-After``; any other 4xx is
terminal. While a host's breaker is open no call is made: the event is *deferred* until the
breaker's cool-down ends, so an outage downstream does not burn the events' attempts.

A call may carry a send deadline (the end of the job's fenced lease): a request not yet written
by then is not sent at all (:class:`~courier_gateway.worker.send_window.SendWindowClosedError`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from courier_gateway.config.sources import Scheme
from courier_gateway.observability.worker_metrics import BREAKER_STATE
from courier_gateway.signatures import sign
from courier_gateway.worker.errors import DeferredError, TerminalError, TransientError
from courier_gateway.worker.send_window import (
    SendWindowClosedError,
    SendWindowTransport,
    reset_send_window,
    send_before,
)

__all__ = ["CircuitBreaker", "Downstream"]

_STATE_VALUES = {"closed": 0, "half_open": 1, "open": 2}


@dataclass
class CircuitBreaker:
    """Closed → open after ``threshold`` consecutive failures → half-open after ``cooldown``.

    Half-open lets one probe through; its success closes the breaker, its failure re-opens it.
    """

    threshold: int
    cooldown: float
    failures: int = 0
    opened_at: float | None = None
    probing: bool = False
    state_changes: list[str] = field(default_factory=list)

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half_open``."""
        if self.opened_at is None:
            return "closed"
        if time.monotonic() - self.opened_at < self.cooldown:
            return "open"
        return "half_open"

    def before_call(self) -> None:
        """Raise :class:`DeferredError` when no call may be made now."""
        state = self.state
        if state == "closed":
            return
        assert self.opened_at is not None
        remaining = max(0.0, self.opened_at + self.cooldown - time.monotonic())
        if state == "open" or self.probing:
            raise DeferredError(
                "DOWNSTREAM_CIRCUIT_OPEN",
                "the downstream circuit breaker is open",
                delay=remaining or self.cooldown / 4,
            )
        self.probing = True

    def abandoned(self) -> None:
        """The call let through was not made after all: a half-open breaker may probe again."""
        self.probing = False

    def succeeded(self) -> None:
        """A call worked: close."""
        if self.opened_at is not None:
            self.state_changes.append("closed")
        self.failures, self.opened_at, self.probing = 0, None, False

    def failed(self) -> None:
        """A call failed in a way that says the host is unwell."""
        self.failures += 1
        if self.probing or self.failures >= self.threshold:
            if self.opened_at is None or self.probing:
                self.state_changes.append("open")
            self.opened_at = time.monotonic()
        self.probing = False


class Downstream:
    """The downstream client: one pooled HTTP client and one breaker per host."""

    def __init__(
        self, url: str, secret: bytes, *, timeout: float, threshold: int, cooldown: float
    ) -> None:
        self.url = url
        self._secret = secret
        self._client = httpx.AsyncClient(timeout=timeout, transport=SendWindowTransport())
        self._threshold = threshold
        self._cooldown = cooldown
        self.breakers: dict[str, CircuitBreaker] = {}

    def breaker(self, url: str) -> CircuitBreaker:
        """The breaker of ``url``'s host."""
        host = urlsplit(url).netloc
        if host not in self.breakers:
            self.breakers[host] = CircuitBreaker(self._threshold, self._cooldown)
        return self.breakers[host]

    def publish_states(self) -> None:
        """Export each host's breaker state (0 closed, 1 half-open, 2 open)."""
        for host, breaker in self.breakers.items():
            BREAKER_STATE.labels(host).set(_STATE_VALUES[breaker.state])

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    async def deliver(
        self,
        update: dict[str, Any],
        *,
        idempotency_key: str,
        traceparent: str,
        deadline: float | None = None,
    ) -> None:
        """POST one update; raise a classified error unless the downstream accepted it.

        ``deadline`` (epoch seconds): if the request is not written by then it is not sent,
        and :class:`SendWindowClosedError` is raised.
        """
        window = send_before(deadline)
        try:
            await self._deliver(update, idempotency_key=idempotency_key, traceparent=traceparent)
        finally:
            reset_send_window(window)
            self.publish_states()

    async def _deliver(
        self, update: dict[str, Any], *, idempotency_key: str, traceparent: str
    ) -> None:
        breaker = self.breaker(self.url)
        breaker.before_call()
        body = orjson.dumps(update)
        headers = {
            "content-type": "application/json",
            "idempotency-key": idempotency_key,
            "traceparent": traceparent,
            **sign(Scheme.V1, body, self._secret, timestamp=int(time.time())),
        }
        try:
            response = await self._client.post(self.url, content=body, headers=headers)
        except SendWindowClosedError:
            breaker.abandoned()
            raise
        except httpx.TimeoutException:
            breaker.failed()
            raise TransientError(
                "DOWNSTREAM_TIMEOUT", "the downstream did not answer in time"
            ) from None
        except httpx.TransportError as error:
            breaker.failed()
            raise TransientError(
                "DOWNSTREAM_UNREACHABLE", f"the downstream is unreachable ({type(error).__name__})"
            ) from None
        status = response.status_code
        if status < 300:
            breaker.succeeded()
            return
        if status == 429:
            breaker.succeeded()  # the host is up, just busy
            raise TransientError(
                "DOWNSTREAM_RATE_LIMITED",
                "the downstream asked us to slow down (429)",
                retry_after=_retry_after(response.headers.get("retry-after")),
            )
        if status >= 500:
            breaker.failed()
            raise TransientError("DOWNSTREAM_UNAVAILABLE", f"the downstream answered {status}")
        breaker.succeeded()
        raise TerminalError("DOWNSTREAM_REJECTED", f"the downstream refused the update ({status})")


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
