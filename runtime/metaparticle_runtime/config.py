"""The runtime's configuration, read from environment variables (the same for process, container, pod)."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field
from typing import Mapping

ROLES = ("function", "spread", "shard", "gather")


class ConfigError(ValueError):
    """The runtime was started with a configuration it cannot run."""


@dataclass(frozen=True)
class Config:
    role: str
    pattern: str = "Service"
    name: str = "service"
    role_name: str = "service"
    replica: str = field(default_factory=socket.gethostname)
    bind_host: str = "0.0.0.0"
    grpc_port: int = 50051
    http_port: int | None = None
    timeout: float = 10.0
    max_request_bytes: int = 4 * 1024 * 1024
    max_json_depth: int = 64
    max_in_flight: int = 256
    retries: int = 2
    index: int | None = None
    count: int | None = None
    upstreams: tuple[str, ...] = ()
    upstream_names: tuple[str, ...] = ()
    upstream_replicas: tuple[int, ...] = ()
    key_path: str | None = None
    on_missing: str = "fail"
    hedge_after: float | None = None
    function: str | None = None
    function_file: str | None = None
    function_python: str | None = None
    source_dir: str | None = None
    #: Seconds between turning NOT_SERVING (routers stop sending) and refusing new calls on SIGTERM.
    drain_seconds: float = 0.5
    threads: int = 16
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Config":
        env = os.environ if env is None else env

        def get(key: str, default: str | None = None) -> str | None:
            value = env.get(key)
            return value if value not in (None, "") else default

        def number(key: str, kind: type, default: object) -> object:
            raw = get(key)
            if raw is None:
                return default
            try:
                return kind(raw)
            except ValueError:
                raise ConfigError(f"{key} must be a {kind.__name__}, got {raw!r}") from None

        role = get("MP_ROLE")
        if role not in ROLES:
            raise ConfigError(f"MP_ROLE must be one of {', '.join(ROLES)}, got {role!r}")
        upstreams = tuple(json.loads(get("MP_UPSTREAMS", "[]")))
        names = tuple(json.loads(get("MP_UPSTREAM_NAMES", "[]"))) or tuple(
            f"upstream-{i}" for i in range(len(upstreams))
        )
        replicas = tuple(json.loads(get("MP_UPSTREAM_REPLICAS", "[]"))) or tuple(1 for _ in upstreams)
        hedge = get("MP_HEDGE_AFTER")
        cfg = cls(
            role=role,
            pattern=get("MP_PATTERN", "Service"),
            name=get("MP_NAME", "service"),
            role_name=get("MP_ROLE_NAME", role),
            replica=get("MP_REPLICA") or socket.gethostname(),
            bind_host=get("MP_BIND_HOST", "0.0.0.0"),
            grpc_port=number("MP_GRPC_PORT", int, 50051),
            http_port=number("MP_HTTP_PORT", int, None),
            timeout=number("MP_TIMEOUT", float, 10.0),
            max_request_bytes=number("MP_MAX_REQUEST_BYTES", int, 4 * 1024 * 1024),
            max_json_depth=number("MP_MAX_JSON_DEPTH", int, 64),
            max_in_flight=number("MP_MAX_IN_FLIGHT", int, 256),
            retries=number("MP_RETRIES", int, 2),
            index=number("MP_INDEX", int, None),
            count=number("MP_COUNT", int, None),
            upstreams=upstreams,
            upstream_names=names,
            upstream_replicas=replicas,
            key_path=get("MP_KEY_PATH"),
            on_missing=get("MP_ON_MISSING", "fail"),
            hedge_after=float(hedge) if hedge is not None else None,
            function=get("MP_FUNCTION"),
            function_file=get("MP_FUNCTION_FILE"),
            function_python=get("MP_FUNCTION_PYTHON"),
            source_dir=get("MP_SOURCE_DIR"),
            drain_seconds=number("MP_DRAIN_SECONDS", float, 0.5),
            threads=number("MP_THREADS", int, 16),
            tls_cert=get("MP_TLS_CERT"),
            tls_key=get("MP_TLS_KEY"),
            tls_ca=get("MP_TLS_CA"),
        )
        cfg.validate()
        return cfg

    def leaf_replicas(self, index: int) -> int:
        """How many replicas upstream group `index` has (hedging needs another one to go to)."""
        return self.upstream_replicas[index] if index < len(self.upstream_replicas) else 1

    def validate(self) -> None:
        if self.role in ("spread", "shard", "gather") and not self.upstreams:
            raise ConfigError(f"the {self.role} role needs MP_UPSTREAMS")
        if self.role == "spread" and len(self.upstreams) != 1:
            raise ConfigError("the spread role routes to exactly one upstream group")
        if self.role == "function" and not (self.function or self.function_file):
            raise ConfigError("the function role needs MP_FUNCTION (module:qualname) or MP_FUNCTION_FILE")
        if self.role == "gather" and not (self.function or self.function_file):
            raise ConfigError("the gather role needs its gather function (MP_FUNCTION or MP_FUNCTION_FILE)")
        if self.role == "shard" and not (self.key_path or self.function or self.function_file):
            raise ConfigError("the shard role needs MP_KEY_PATH or a key function")
        if self.on_missing not in ("fail", "partial"):
            raise ConfigError(f"MP_ON_MISSING must be fail or partial, got {self.on_missing!r}")
        if len(self.upstream_names) != len(self.upstreams):
            raise ConfigError("MP_UPSTREAM_NAMES must name every upstream")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("MP_TLS_CERT and MP_TLS_KEY go together")
        if self.timeout <= 0:
            raise ConfigError("MP_TIMEOUT must be positive")
        if self.max_in_flight < 1 or self.threads < 1:
            raise ConfigError("MP_MAX_IN_FLIGHT and MP_THREADS must be at least 1")
