"""The intake against hostile HTTP clients, over raw sockets to a real ingress process.

Slow or truncated requests are cut at total deadlines (not per line), oversized heads get 431,
unparsable request lines 400, a client that hangs up mid-request is counted as ``client_closed``
and logged at DEBUG (never as an internal error), and a taken port is one line naming API_PORT.
"""

from __future__ import annotations

import asyncio
import re
import socket
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import base_env
from tests.support.servers import GatewayProcess, RedisServer, start_gateway, wait_for
from tests.support.signing import event, signed

# Measures timing (latency under attack, restart windows): run alone by make test.
pytestmark = pytest.mark.serial

SECRET = "hardening-secret-0001"
CLOSE_HEALTH = b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
HEAD_DEADLINE = 2.0
BODY_DEADLINE = 2.0


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[GatewayProcess]:
    directory = tmp_path_factory.mktemp("hardening")
    env = base_env(
        redis_server.url,
        SIGNING_SECRET=SECRET,
        REQUEST_HEAD_TIMEOUT_SECONDS=str(HEAD_DEADLINE),
        REQUEST_BODY_TIMEOUT_SECONDS=str(BODY_DEADLINE),
        MAX_HEADER_BYTES="4096",
    )
    process = start_gateway("ingress", env, log_path=directory / "ingress.log")
    try:
        yield process
    finally:
        process.stop(timeout=10)


def exchange(port: int, data: bytes, *, timeout: float = 10) -> tuple[bytes, float]:
    """Send raw bytes, read until the server closes; return the answer and the seconds taken."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        connection.sendall(data)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer, time.monotonic() - started


def status_of(answer: bytes) -> int:
    match = re.match(rb"HTTP/1\.1 (\d{3}) ", answer)
    assert match, answer[:200]
    return int(match.group(1))


def counter(gateway: GatewayProcess, outcome: str) -> float:
    text = httpx.get(f"{gateway.url}/metrics", timeout=5).text
    pattern = (
        rf'courier_gateway_intake_requests_total\{{outcome="{outcome}",source="[^"]*"\}} (\S+)'
    )
    return sum(float(value) for value in re.findall(pattern, text))


def error_lines(gateway: GatewayProcess) -> list[str]:
    return [line for line in gateway.logs().splitlines() if '"level":"error"' in line]


def port(gateway: GatewayProcess) -> int:
    return int(gateway.env["API_PORT"])


def test_a_body_shorter_than_its_length_gets_408_and_the_connection_closes(
    gateway: GatewayProcess,
) -> None:
    head = (
        b"POST /v1/events/courier HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: 400\r\n\r\n"
    )
    answer, took = exchange(port(gateway), head + b'{"eventId": "evt_short"')
    assert status_of(answer) == 408
    assert b'"errorCode":"REQUEST_TIMEOUT"' in answer
    assert b"body was not received in time" in answer
    # Answered and closed within the body deadline plus one check interval and some slack.
    assert BODY_DEADLINE <= took < BODY_DEADLINE + 2.0


def test_an_oversized_head_gets_431(gateway: GatewayProcess) -> None:
    big = b"x-padding: " + b"a" * 10_000 + b"\r\n"
    answer, _ = exchange(port(gateway), b"GET /health HTTP/1.1\r\nhost: x\r\n" + big + b"\r\n")
    assert status_of(answer) == 431
    assert b'"errorCode":"HEADERS_TOO_LARGE"' in answer


@pytest.mark.parametrize(
    "request_line",
    [b"GET /v1/ev\x00ents HTTP/1.1", b"GARBAGE", b"GET /health HTTP/9.9", b"GET  HTTP/1.1"],
)
def test_a_malformed_request_line_gets_400(gateway: GatewayProcess, request_line: bytes) -> None:
    answer, _ = exchange(port(gateway), request_line + b"\r\nhost: x\r\n\r\n")
    assert status_of(answer) == 400
    assert b'"errorCode":"INVALID_REQUEST"' in answer
    assert not error_lines(gateway)


def test_slowloris_connections_are_cut_at_the_head_deadline_while_intake_stays_fast(
    gateway: GatewayProcess,
) -> None:
    async def slow_client() -> float:
        """Open a request and send one header line every 0.5 s; return when the server hangs up."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port(gateway))
        started = time.monotonic()
        try:
            writer.write(b"POST /v1/events/courier HTTP/1.1\r\n")
            while time.monotonic() - started < HEAD_DEADLINE + 10 and not reader.at_eof():
                await asyncio.sleep(0.5)
                writer.write(b"x-slow: 1\r\n")
                await writer.drain()
            await reader.read()  # the 408, then EOF
        except OSError:  # the server hung up while we were still writing: that is the point
            pass
        finally:
            writer.close()
        return time.monotonic() - started

    async def signed_requests(count: int) -> list[tuple[int, float]]:
        results = []
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
            await asyncio.sleep(0.5)  # let the slow clients connect first
            for _ in range(count):
                body, headers = signed(event(), SECRET)
                started = time.perf_counter()
                response = await client.post("/v1/events/courier", content=body, headers=headers)
                results.append((response.status_code, time.perf_counter() - started))
                await asyncio.sleep(0.005)
        return results

    async def scenario() -> tuple[list[float], list[tuple[int, float]]]:
        slow = [asyncio.ensure_future(slow_client()) for _ in range(500)]
        fast = await signed_requests(300)
        return list(await asyncio.gather(*slow)), fast

    held, fast = asyncio.run(scenario())
    assert len(held) == 500
    assert max(held) < HEAD_DEADLINE + 3.0, sorted(held)[-5:]
    assert [status for status, _ in fast] == [202] * len(fast)
    latencies = sorted(seconds for _, seconds in fast)
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    assert p99 < 0.100, (p99, statistics.median(latencies))
    assert counter(gateway, "request_timeout") >= 500


def test_clients_hanging_up_mid_request_are_not_internal_errors(gateway: GatewayProcess) -> None:
    before = counter(gateway, "client_closed")
    body, headers = signed(event(), SECRET)
    head = "POST /v1/events/courier HTTP/1.1\r\nhost: x\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in headers.items()
    )
    partial = (head + f"content-length: {len(body)}\r\n\r\n").encode() + body[: len(body) // 2]
    for _ in range(200):
        with socket.create_connection(("127.0.0.1", port(gateway)), timeout=5) as connection:
            connection.sendall(partial)
            time.sleep(0.002)
    assert wait_for(lambda: counter(gateway, "client_closed") - before >= 200, timeout=20)
    assert counter(gateway, "internal_error") == 0
    assert not error_lines(gateway)
    assert "Traceback" not in gateway.logs()


def test_a_taken_port_is_one_line_naming_api_port(gateway: GatewayProcess, tmp_path: Path) -> None:
    second = start_gateway(
        "ingress", dict(gateway.env), log_path=tmp_path / "second.log", wait_ready=False
    )
    assert second.child.process.wait(timeout=30) == 2
    lines = second.logs().strip().splitlines()
    assert len(lines) == 1, lines
    assert "API_PORT" in lines[0] and gateway.env["API_PORT"] in lines[0]
    # The first ingress is unharmed.
    assert httpx.get(f"{gateway.url}/ready", timeout=5).status_code == 200


def test_connections_beyond_the_cap_get_503_at_once(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    env = base_env(redis_server.url, SIGNING_SECRET=SECRET, MAX_CONNECTIONS="4")
    capped = start_gateway("ingress", env, log_path=tmp_path / "capped.log")
    held: list[socket.socket] = []
    try:
        # Keep-alive connections waiting for their next request count against the cap.
        for _ in range(4):
            connection = socket.create_connection(("127.0.0.1", port(capped)), timeout=5)
            connection.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
            assert status_of(connection.recv(65536)) == 200
            held.append(connection)
        answer, took = exchange(port(capped), CLOSE_HEALTH)
        assert status_of(answer) == 503 and b'"errorCode":"INTAKE_UNAVAILABLE"' in answer
        assert b"MAX_CONNECTIONS" in answer and took < 1.0
        held.pop().close()
        assert wait_for(
            lambda: status_of(exchange(port(capped), CLOSE_HEALTH)[0]) == 200,
            timeout=5,
        )
        assert '"level":"error"' not in capped.logs()
    finally:
        for connection in held:
            connection.close()
        capped.stop(timeout=10)
