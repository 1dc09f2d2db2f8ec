"""OpenTelemetry traces from real processes, received by a real OTLP/HTTP endpoint in the test.

What is proved:

- With ``OTEL_EXPORTER_OTLP_ENDPOINT`` set, the ingress and the worker export their spans over
  OTLP/HTTP (gzipped protobuf) under their own ``service.name``; one event sent with a caller's
  ``traceparent`` yields one trace: the intake's server span is the caller's child, "verify
  signature" and "enqueue" are its children, the worker's "process event" continues the
  "enqueue" span across the queue, and "ledger claim", "apply shipment", "POST downstream" and
  "ledger mark processed" are children of "process event"; the request the downstream receives
  carries a ``traceparent`` whose parent is the "POST downstream" span.
- With tracing off (no ``OTEL_*`` variables, or an endpoint with ``OTEL_SDK_DISABLED=true``)
  nothing is exported, yet the caller's trace id still reaches the downstream in its
  ``traceparent``.
- ``OTEL_EXPORTER_OTLP_PROTOCOL`` is honoured: with ``grpc`` the spans reach a real OTLP/gRPC
  trace service (grpcio with opentelemetry-proto's service definition), with ``http/protobuf``
  the OTLP/HTTP endpoint.
"""

from __future__ import annotations

import gzip
import os
import threading
import zlib
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import (
    TraceServiceServicer,
    add_TraceServiceServicer_to_server,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.conftest import StartGateway
from tests.support.downstream import Downstream
from tests.support.servers import (
    QuietHandler,
    RedisServer,
    StoreServer,
    serve_http,
    stop_http,
    wait_for,
)
from tests.support.signing import event, signed
from tests.support.stack import SECRET, StackEnv

INTAKE_SPANS = ("POST /v1/events/{source}", "verify signature", "enqueue")
WORKER_SPANS = (
    "process event",
    "ledger claim",
    "apply shipment",
    "POST downstream",
    "ledger mark processed",
)


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int


@dataclass
class OtlpReceiver:
    """An OTLP/HTTP trace endpoint: decodes every export request and keeps its spans."""

    spans: list[ReceivedSpan] = field(default_factory=list)
    requests: int = 0
    encodings: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def endpoint(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> OtlpReceiver:
        owner = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                encoding = (self.headers.get("content-encoding") or "").lower()
                with owner.lock:
                    owner.encodings.add(encoding)
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                if self.path != "/v1/traces":
                    self.send_response(404)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                owner.record(ExportTraceServiceRequest.FromString(body))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.server = serve_http(Handler)
        return self

    def record(self, request: ExportTraceServiceRequest) -> None:
        received: list[ReceivedSpan] = []
        for resource_spans in request.resource_spans:
            attributes = {
                item.key: item.value.string_value for item in resource_spans.resource.attributes
            }
            for scope_spans in resource_spans.scope_spans:
                received.extend(
                    ReceivedSpan(
                        service=attributes.get("service.name", ""),
                        name=span.name,
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        kind=span.kind,
                    )
                    for span in scope_spans.spans
                )
        with self.lock:
            self.requests += 1
            self.spans.extend(received)

    def in_trace(self, trace_id: str) -> dict[str, ReceivedSpan]:
        """The spans of one trace by name (each name must occur once)."""
        with self.lock:
            spans = [span for span in self.spans if span.trace_id == trace_id]
        by_name = {span.name: span for span in spans}
        assert len(by_name) == len(spans), f"a span name occurs twice: {spans}"
        return by_name

    def stop(self) -> None:
        stop_http(self.server)


class GrpcReceiver(OtlpReceiver):
    """An OTLP/gRPC trace service (``TraceService/Export``) on a free loopback port."""

    grpc_server: Any = None
    port: int = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> GrpcReceiver:
        owner = self

        class Service(TraceServiceServicer):  # type: ignore[misc]
            def Export(self, request: Any, context: Any) -> ExportTraceServiceResponse:  # noqa: N802
                owner.record(request)
                return ExportTraceServiceResponse()

        self.grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        add_TraceServiceServicer_to_server(Service(), self.grpc_server)
        self.port = self.grpc_server.add_insecure_port("127.0.0.1:0")
        self.grpc_server.start()
        return self

    def stop(self) -> None:
        self.grpc_server.stop(grace=1).wait()


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    server = OtlpReceiver().start()
    try:
        yield server
    finally:
        server.stop()


def caller_traceparent() -> tuple[str, str, str]:
    trace_id, span_id = os.urandom(16).hex(), os.urandom(8).hex()
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def send_traced_event(stack: StackEnv, traceparent: str) -> dict[str, object]:
    document = event()
    body, headers = signed(document, SECRET)
    response = httpx.post(
        f"{stack.url}/v1/events/courier",
        content=body,
        headers={**headers, "traceparent": traceparent},
        timeout=10,
    )
    assert response.status_code == 202, response.text
    return response.json()  # type: ignore[no-any-return]


def test_one_trace_spans_the_caller_the_ingress_the_queue_the_worker_and_the_downstream(
    start: StartGateway,
    redis_server: RedisServer,
    store_server: StoreServer,
    receiver: OtlpReceiver,
    downstream: Downstream,
) -> None:
    stack = StackEnv.create(
        redis_server,
        store_server,
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
        OTEL_BSP_SCHEDULE_DELAY="200",
        OTEL_EXPORTER_OTLP_COMPRESSION="gzip",
        DOWNSTREAM_URL=downstream.url,
        DOWNSTREAM_SIGNING_SECRET="downstream-secret-traces",
    )
    start("ingress", stack.env)
    start("worker", stack.env, wait_ready=False)
    traceparent, trace_id, caller_span = caller_traceparent()
    answer = send_traced_event(stack, traceparent)
    assert answer["traceId"] == trace_id  # no x-request-id: the trace id names the request

    expected = set(INTAKE_SPANS + WORKER_SPANS)
    assert wait_for(lambda: expected <= set(receiver.in_trace(trace_id)), timeout=20), (
        f"spans received: {sorted(receiver.in_trace(trace_id))}"
    )
    spans = receiver.in_trace(trace_id)
    assert set(spans) == expected
    assert receiver.encodings == {"gzip"}

    server = spans["POST /v1/events/{source}"]
    assert server.parent_span_id == caller_span
    assert server.kind == Span.SPAN_KIND_SERVER
    assert spans["verify signature"].parent_span_id == server.span_id
    enqueue = spans["enqueue"]
    assert enqueue.parent_span_id == server.span_id
    assert enqueue.kind == Span.SPAN_KIND_PRODUCER
    for name in INTAKE_SPANS:
        assert spans[name].service == "courier-gateway-ingress"

    job = spans["process event"]
    assert job.parent_span_id == enqueue.span_id  # the trace crosses the queue
    assert job.kind == Span.SPAN_KIND_CONSUMER
    for name in WORKER_SPANS[1:]:
        assert spans[name].parent_span_id == job.span_id, name
    assert spans["POST downstream"].kind == Span.SPAN_KIND_CLIENT
    for name in WORKER_SPANS:
        assert spans[name].service == "courier-gateway-worker"
    assert len({span.span_id for span in spans.values()}) == len(spans)

    [delivered] = downstream.requests
    assert delivered.headers["traceparent"] == (
        f"00-{trace_id}-{spans['POST downstream'].span_id}-01"
    )
    assert delivered.body["traceId"] == trace_id


@pytest.mark.parametrize(
    "tracing_off",
    [
        pytest.param({}, id="no-otel-variables"),
        pytest.param({"OTEL_SDK_DISABLED": "true"}, id="endpoint-but-sdk-disabled"),
    ],
)
def test_with_tracing_off_nothing_is_exported_but_the_trace_id_still_reaches_the_downstream(
    start: StartGateway,
    redis_server: RedisServer,
    store_server: StoreServer,
    receiver: OtlpReceiver,
    downstream: Downstream,
    tracing_off: dict[str, str],
) -> None:
    otel = (
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            **tracing_off,
        }
        if tracing_off
        else {}
    )
    stack = StackEnv.create(
        redis_server,
        store_server,
        DOWNSTREAM_URL=downstream.url,
        DOWNSTREAM_SIGNING_SECRET="downstream-secret-traces",
        **otel,
    )
    ingress = start("ingress", stack.env)
    worker = start("worker", stack.env, wait_ready=False)
    traceparent, trace_id, caller_span = caller_traceparent()
    answer = send_traced_event(stack, traceparent)
    assert answer["traceId"] == trace_id
    assert wait_for(lambda: len(downstream.requests) == 1, timeout=20)
    [delivered] = downstream.requests
    version, sent_trace, parent_span, flags = delivered.headers["traceparent"].split("-")
    assert (version, sent_trace, flags) == ("00", trace_id, "01")
    assert len(parent_span) == 16 and parent_span not in {caller_span, "0" * 16}
    assert delivered.body["traceId"] == trace_id
    # A stopped process has flushed anything it would have exported.
    assert worker.stop(timeout=10) == 0
    assert ingress.stop(timeout=10) == 0
    assert receiver.requests == 0 and receiver.spans == []


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_the_otlp_protocol_is_honoured(
    start: StartGateway, redis_server: RedisServer, store_server: StoreServer, protocol: str
) -> None:
    receiver = (GrpcReceiver() if protocol == "grpc" else OtlpReceiver()).start()
    try:
        stack = StackEnv.create(
            redis_server,
            store_server,
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
            OTEL_EXPORTER_OTLP_PROTOCOL=protocol,
            OTEL_BSP_SCHEDULE_DELAY="200",
        )
        start("ingress", stack.env)
        traceparent, trace_id, caller_span = caller_traceparent()
        send_traced_event(stack, traceparent)
        assert wait_for(lambda: set(INTAKE_SPANS) <= set(receiver.in_trace(trace_id)), timeout=20)
        spans = receiver.in_trace(trace_id)
        server = spans["POST /v1/events/{source}"]
        assert server.parent_span_id == caller_span
        assert {span.service for span in spans.values()} == {"courier-gateway-ingress"}
    finally:
        receiver.stop()
