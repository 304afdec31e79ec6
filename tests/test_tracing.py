"""OpenTelemetry traces across roles: a real OTLP/HTTP receiver (decoding the protobuf with
opentelemetry-proto) sees one request to a scatter/gather as one trace, the root's span under the
caller's `traceparent` and every leaf's span under the root's."""

from __future__ import annotations

import http.server
import json
import secrets
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest, ExportTraceServiceResponse

from metaparticle_runtime.config import RuntimeConfig
from metaparticle_runtime.tracing import configure, enabled

from rel_support import Topology, free_port

LEAF_ROLES = ["search-leaf-0", "search-leaf-1", "search-leaf-2", "search-leaf-3"]
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


class Receiver:
    """An OTLP/HTTP trace receiver on 127.0.0.1: every span it was sent, decoded."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest.FromString(body)
                receiver.add(request, self.path, self.headers.get("Content-Type", ""))
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def add(self, request: ExportTraceServiceRequest, path: str, content_type: str) -> None:
        assert path == "/v1/traces" and content_type == "application/x-protobuf"
        with self.lock:
            for resource_spans in request.resource_spans:
                resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope in resource_spans.scope_spans:
                    for span in scope.spans:
                        attributes = {a.key: (a.value.string_value or a.value.int_value) for a in span.attributes}
                        self.spans.append({
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent": span.parent_span_id.hex(),
                            "name": span.name,
                            "kind": span.kind,
                            "attributes": attributes,
                            "resource": resource,
                        })

    def trace(self, trace_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [s for s in self.spans if s["trace_id"] == trace_id]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def _post(url: str, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers=headers)
    with urllib.request.urlopen(request, timeout=10) as reply:
        return json.loads(reply.read())


def _wait_for(receiver: Receiver, trace_id: str, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        spans = receiver.trace(trace_id)
        if len(spans) >= count:
            return spans
        time.sleep(0.05)
    raise AssertionError(f"{len(receiver.trace(trace_id))} of {count} spans arrived: {receiver.trace(trace_id)}")


def test_one_request_to_a_scatter_gather_is_one_trace_with_every_leaf_under_the_root(receiver):
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "50", "OTEL_SERVICE_NAME": "search-svc"}
    with Topology(EXAMPLES / "scatter_gather", env=env) as topology:
        topology.wait_healthy()
        trace_id, caller_span = secrets.token_hex(16), secrets.token_hex(8)
        answer = _post(topology.url, {"q": "pulumi"}, {"traceparent": f"00-{trace_id}-{caller_span}-01"})
        assert "error" not in answer
        spans = _wait_for(receiver, trace_id, 5)
        time.sleep(0.3)  # nothing more should arrive for this request
        spans = receiver.trace(trace_id)

    roots = [s for s in spans if s["parent"] == caller_span]
    assert len(roots) == 1, spans
    (root,) = roots
    leaves = [s for s in spans if s is not root]
    assert len(leaves) == 4 and all(s["parent"] == root["span_id"] for s in leaves)
    assert sorted(s["attributes"]["metaparticle.index"] for s in leaves) == [0, 1, 2, 3]
    assert sorted(s["attributes"]["metaparticle.role"] for s in leaves) == LEAF_ROLES
    assert root["attributes"]["metaparticle.pattern"] == "ScatterGather"
    assert all(s["attributes"]["rpc.grpc.status_code"] == 0 for s in spans)
    assert all(s["kind"] == 2 for s in spans)  # SERVER
    assert {s["resource"]["service.name"] for s in spans} == {"search-svc"}
    assert len({s["resource"]["service.instance.id"] for s in spans}) == 5


def test_tracing_is_off_unless_an_otlp_endpoint_is_given():
    cfg = RuntimeConfig(role="function", function="m:f")
    assert configure(cfg, {}) is None
    assert configure(cfg, {"OTEL_SERVICE_NAME": "x"}) is None
    assert not enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_SDK_DISABLED": "true"})
    assert enabled({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:1"})
