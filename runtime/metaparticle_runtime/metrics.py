"""Prometheus metrics of one role (prometheus_client), in a registry of its own.

Every request the role answers counts once in `metaparticle_requests_total` by its gRPC status
name (`OK`, `RESOURCE_EXHAUSTED`, ...) and in the duration histogram; routers and roots also count
their calls to each upstream (shard or leaf) by outcome and their hedges; a replica counts the
requests it received as a retry (gRPC re-sends a call that failed on an unavailable replica
transparently, so only the replica that gets the retry can see it). The HTTP
entry serves the registry at `GET /metrics`; any role given `metrics_port` serves it there too
(ops.py, next to the replica's own `GET /healthz`).
"""

from __future__ import annotations

import math
from typing import Any, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
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
            "metaparticle_retries",
            "Requests received as a retry of an attempt that failed on another replica (gRPC's grpc-previous-rpc-attempts).",
            common,
            registry=self.registry,
        )
        self._hedges = Counter(
            "metaparticle_hedges", "Hedged calls sent to a second replica of a slow upstream.", (*common, "upstream"), registry=self.registry
        )
        self._hedge_delay = Gauge(
            "metaparticle_hedge_delay_seconds",
            "How long a leaf call may take before it is hedged: hedge_after, or the p97 of recent successful "
            "leaf calls (NaN until 64 are known). Only roots that hedge.",
            common,
            registry=self.registry,
        )
        # Each series' child, looked up once (labels() costs microseconds on every request).
        self._duration_child = self._duration.labels(**self._labels)
        self._by_code: dict[str, Any] = {}
        self._by_upstream: dict[tuple[str, str], Any] = {}

    def track_in_flight(self, current: Callable[[], float]) -> None:
        """The in-flight gauge reads `current()` when scraped: nothing to update on every request."""
        self._in_flight.labels(**self._labels).set_function(current)

    def track_hedge_delay(self, current: Callable[[], float | None]) -> None:
        """The hedge delay gauge reads `current()` when scraped (None: not known yet)."""

        def read() -> float:
            delay = current()
            return math.nan if delay is None else delay

        self._hedge_delay.labels(**self._labels).set_function(read)

    def answered(self, code: str, seconds: float) -> None:
        child = self._by_code.get(code)
        if child is None:
            child = self._by_code[code] = self._requests.labels(**self._labels, code=code)
        child.inc()
        self._duration_child.observe(seconds)

    def refused(self) -> None:
        self._refused.labels(**self._labels).inc()

    def upstream_call(self, upstream: str, outcome: str) -> None:
        child = self._by_upstream.get((upstream, outcome))
        if child is None:
            child = self._by_upstream[(upstream, outcome)] = self._upstream_calls.labels(
                **self._labels, upstream=upstream, outcome=outcome
            )
        child.inc()

    def retried(self) -> None:
        self._retries.labels(**self._labels).inc()

    def hedged(self, upstream: str) -> None:
        self._hedges.labels(**self._labels, upstream=upstream).inc()

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)
