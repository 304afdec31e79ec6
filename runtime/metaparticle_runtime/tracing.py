"""OpenTelemetry traces, configured by the standard `OTEL_*` variables and off unless an OTLP
endpoint is given (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`).

One SERVER span per role per request, parented by the W3C `traceparent` of the caller (an HTTP
header at the entry, gRPC metadata on every other hop); routers and roots send their own context
on to each upstream, so one request is one trace across processes. Protocol:
`OTEL_EXPORTER_OTLP_PROTOCOL` (`http/protobuf`, the default, or `grpc`); sampling:
`OTEL_TRACES_SAMPLER`; service name: `OTEL_SERVICE_NAME`, else the pattern's name.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Mapping, Optional

from .config import ConfigError, RuntimeConfig

#: What a disabled tracer costs a request: one attribute check.
_PROTOCOLS = ("http/protobuf", "grpc")


def enabled(env: Mapping[str, str]) -> bool:
    """Whether `env` asks for traces (an OTLP endpoint, and the SDK not disabled)."""
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true" or env.get("OTEL_TRACES_EXPORTER", "") == "none":
        return False
    return bool(env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


class Tracing:
    """The role's tracer and the W3C propagator; `span()` wraps one request."""

    def __init__(self, cfg: RuntimeConfig, env: Mapping[str, str]) -> None:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace import SpanKind
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf"
        if protocol not in _PROTOCOLS:
            raise ConfigError(f"OTEL_EXPORTER_OTLP_PROTOCOL must be one of {', '.join(_PROTOCOLS)}, got {protocol!r}")
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        attributes = {"service.instance.id": cfg.replica, "metaparticle.pattern": cfg.pattern}
        if not env.get("OTEL_SERVICE_NAME"):
            attributes["service.name"] = cfg.name
        resource = Resource.create(attributes)
        self.provider = TracerProvider(resource=resource)
        self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        self.tracer = self.provider.get_tracer("metaparticle_runtime")
        self.propagator = TraceContextTextMapPropagator()
        self._kind = SpanKind.SERVER
        self._attributes: dict[str, Any] = {
            "metaparticle.pattern": cfg.pattern,
            "metaparticle.name": cfg.name,
            "metaparticle.role": cfg.role_name,
            "metaparticle.replica": cfg.replica,
        }
        if cfg.index is not None:
            self._attributes["metaparticle.index"] = cfg.index

    def span(self, carrier: Optional[Mapping[str, str]]) -> Any:
        """A context manager: the request's span, current while the role works on it."""
        parent = self.propagator.extract(carrier or {})
        return self.tracer.start_as_current_span(
            self._attributes["metaparticle.role"], context=parent, kind=self._kind, attributes=self._attributes
        )

    def finish(self, span: Any, code: Any, message: str = "") -> None:
        """Records the request's gRPC status on its span (an error status unless OK)."""
        from opentelemetry.trace import Status, StatusCode

        span.set_attribute("rpc.grpc.status_code", code.value[0])
        if code.value[0] != 0:
            span.set_status(Status(StatusCode.ERROR, f"{code.name}: {message}"))

    def headers(self) -> list[tuple[str, str]]:
        """The current span's context as gRPC metadata for a call to an upstream."""
        carrier: dict[str, str] = {}
        self.propagator.inject(carrier)
        return list(carrier.items())

    def shutdown(self) -> None:
        """Sends what is buffered (the process exits without running atexit hooks)."""
        self.provider.shutdown()


#: The process's tracing, once configured: upstream calls take their metadata from it.
_active: Optional[Tracing] = None


def configure(cfg: RuntimeConfig, env: Optional[Mapping[str, str]] = None) -> Optional[Tracing]:
    """The role's tracing when the environment asks for it, else None (no cost per request)."""
    global _active
    env = os.environ if env is None else env
    _active = Tracing(cfg, env) if enabled(env) else None
    return _active


def with_trace(metadata: Optional[Iterable[tuple[str, str]]] = None) -> Optional[Iterable[tuple[str, str]]]:
    """gRPC metadata for a call to an upstream: `metadata` plus the current span's context when
    tracing is on; else `metadata` itself (nothing copied on the hot path)."""
    if _active is None:
        return metadata
    return [*(metadata or ()), *_active.headers()]


def current_trace_id() -> Optional[str]:
    """The trace id (32 hex digits) of the span current in this context; None without one."""
    if _active is None:
        return None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def metadata_carrier(metadata: Optional[Iterable[tuple[str, Any]]]) -> dict[str, str]:
    """gRPC invocation metadata as a propagation carrier (text values only)."""
    return {key: value for key, value in (metadata or ()) if isinstance(value, str)}
