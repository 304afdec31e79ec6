"""Prometheus metrics of one role (prometheus_client), in a registry of its own.

Every request the role answers counts once in `metaparticle_requests_total` by its gRPC status
name (`OK`, `RESOURCE_EXHAUSTED`, ...) and in the duration histogram; routers and roots also count
their calls to each upstream (shard or leaf) by outcome, their retries and their hedges. The HTTP
entry serves the registry at `GET /metrics`; any role given `metrics_port` serves it there too.
"""

from __future__ import annotations

import socket
import threading
from socketserver import ThreadingMixIn
from typing import Optional
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, make_wsgi_app, start_http_server
from prometheus_client import CONTENT_TYPE_LATEST

#: Request durations, in seconds: from well under a millisecond to the longest deadlines.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """The counters of one role; `pattern` and `role` label every series."""

    def __init__(self, pattern: str, role: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._labels = {"pattern": pattern, "role": role}
        common = ("pattern", "role")
        self._requests = Counter(
            "metaparticle_requests", "Requests answered, by gRPC status name.", (*common, "code"), registry=self.registry
        )
        self._duration = Histogram(
            "metaparticle_request_duration_seconds", "Time to answer a request.", common, buckets=BUCKETS, registry=self.registry
        )
        self._in_flight = Gauge("metaparticle_in_flight", "Requests being worked on now.", common, registry=self.registry)
        self._refused = Counter(
            "metaparticle_refused", "Requests refused at once because the role was at max_in_flight.", common, registry=self.registry
        )
        self._upstream_calls = Counter(
            "metaparticle_upstream_calls",
            "Calls to an upstream (a shard, a leaf, the replicas), by outcome (gRPC status name).",
            (*common, "upstream", "outcome"),
            registry=self.registry,
        )
        self._retries = Counter(
            "metaparticle_retries", "Calls re-sent to another replica of an upstream.", (*common, "upstream"), registry=self.registry
        )
        self._hedges = Counter(
            "metaparticle_hedges", "Hedged calls sent to a second replica of a slow upstream.", (*common, "upstream"), registry=self.registry
        )
        self.in_flight = self._in_flight.labels(**self._labels)

    def answered(self, code: str, seconds: float) -> None:
        self._requests.labels(**self._labels, code=code).inc()
        self._duration.labels(**self._labels).observe(seconds)

    def refused(self) -> None:
        self._refused.labels(**self._labels).inc()

    def upstream_call(self, upstream: str, outcome: str) -> None:
        self._upstream_calls.labels(**self._labels, upstream=upstream, outcome=outcome).inc()

    def retried(self, upstream: str) -> None:
        self._retries.labels(**self._labels, upstream=upstream).inc()

    def hedged(self, upstream: str) -> None:
        self._hedges.labels(**self._labels, upstream=upstream).inc()

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)

    def serve(self, host: str, port: int, *, reuse_port: bool = False) -> Optional[object]:
        """Serves `GET /metrics` on its own port (a daemon thread); returns the server to close.

        `reuse_port` binds with SO_REUSEPORT, as the role's other ports (the local target holds
        the port, bound but not listening, until the role binds it)."""
        if not reuse_port:
            server, _thread = start_http_server(port, addr=host, registry=self.registry)
            return server
        shared = make_server(host, port, make_wsgi_app(self.registry), _SharedPortServer, handler_class=_QuietHandler)
        threading.Thread(target=shared.serve_forever, name="mp-metrics", daemon=True).start()
        return shared


class _SharedPortServer(ThreadingMixIn, WSGIServer):
    """A threaded WSGI server bound with SO_REUSEPORT."""

    daemon_threads = True

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


class _QuietHandler(WSGIRequestHandler):
    """No access log line per scrape."""

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class names it so
        pass
