"""The send deadline of a downstream call, against a real HTTP server over a real socket.

A request whose deadline (the end of the job's fenced lease) has passed is never written, on a
fresh connection or on a pooled keep-alive one, and the breaker does not count it; a request
within its deadline goes out as usual. The deadline is per task: a concurrent call without one
is not affected.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from courier_gateway.worker.downstream import Downstream
from courier_gateway.worker.send_window import SendWindowClosedError
from tests.support.downstream import SIGNING_SECRET
from tests.support.downstream import Downstream as Server

UPDATE = {"eventId": "evt_1", "status": "in_transit"}


@pytest.fixture
async def client_and_server() -> AsyncIterator[tuple[Downstream, Server]]:
    server = Server().start()
    client = Downstream(server.url, SIGNING_SECRET.encode(), timeout=5, threshold=1, cooldown=60)
    try:
        yield client, server
    finally:
        await client.close()
        server.stop()


async def test_a_request_past_its_deadline_is_never_sent(
    client_and_server: tuple[Downstream, Server],
) -> None:
    client, server = client_and_server
    with pytest.raises(SendWindowClosedError):
        await client.deliver(UPDATE, idempotency_key="k1", traceparent="", deadline=time.time())
    assert server.requests == []
    # Within its deadline it goes out, on a connection the client then keeps.
    await client.deliver(UPDATE, idempotency_key="k2", traceparent="", deadline=time.time() + 5)
    with pytest.raises(SendWindowClosedError):
        await client.deliver(UPDATE, idempotency_key="k3", traceparent="", deadline=time.time())
    await asyncio.sleep(0.3)
    assert [r.headers["idempotency-key"] for r in server.requests] == ["k2"]
    # A refused send is not a downstream failure: the breaker (threshold 1) stays closed.
    assert client.breaker(server.url).state == "closed"


async def test_the_deadline_belongs_to_one_call(
    client_and_server: tuple[Downstream, Server],
) -> None:
    client, server = client_and_server
    late = client.deliver(UPDATE, idempotency_key="late", traceparent="", deadline=time.time())
    free = client.deliver(UPDATE, idempotency_key="free", traceparent="")
    results = await asyncio.gather(late, free, return_exceptions=True)
    assert isinstance(results[0], SendWindowClosedError)
    assert results[1] is None
    assert [r.headers["idempotency-key"] for r in server.requests] == ["free"]
