"""`python -m bench.otlp_sink PORT`: an OTLP/HTTP trace receiver for the tracing-cost bench. It
decodes every export (as a collector would) and counts the spans per `service.instance.id`;
`GET /counts` answers them as JSON, so the bench can check that every traced request was exported.
"""

from __future__ import annotations

import http.server
import json
import sys
import threading
from collections import Counter
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest, ExportTraceServiceResponse

REPLY = ExportTraceServiceResponse().SerializeToString()


def make_handler(counts: Counter[str], lock: threading.Lock) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the OTLP exporter's session expects

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            request = ExportTraceServiceRequest.FromString(body)
            with lock:
                for rs in request.resource_spans:
                    attrs = {a.key: a.value.string_value for a in rs.resource.attributes}
                    counts[attrs.get("service.instance.id", "?")] += sum(len(s.spans) for s in rs.scope_spans)
            self._reply(200, "application/x-protobuf", REPLY)

        def do_GET(self) -> None:  # noqa: N802
            with lock:
                data = json.dumps(dict(counts)).encode()
            self._reply(200, "application/json", data)

        def _reply(self, status: int, content_type: str, data: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


def main() -> None:
    port = int(sys.argv[1])
    counts: Counter[str] = Counter()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), make_handler(counts, threading.Lock()))
    server.serve_forever()


if __name__ == "__main__":
    main()
