"""The topology of a pattern: pure data (no Pulumi, no I/O) that every target renders.

A pattern component expands into a `Topology`: its roles (entry/router, function replicas, shards,
leaves), how many replicas each has, which function each runs and who routes to whom. `role_env`
is the one place that turns a role into the configuration the shared runtime runs with, so a role
behaves the same as a local process, a container and a Kubernetes pod.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

from metaparticle_runtime.config import RuntimeConfig, server_env

from ._container import Container
from ._functions import FunctionSpec

#: The runtime's gRPC port inside containers and pods (local processes get free ports instead).
GRPC_PORT = 50051
#: The entry role's JSON-over-HTTP port inside containers and pods.
HTTP_PORT = 8080

RoleKind = Literal["function", "spread", "shard", "gather"]

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def dns_name(name: str) -> str:
    """Turns a resource name into a DNS-1123 label (what Kubernetes and Docker accept as a host name)."""
    label = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    label = re.sub(r"-{2,}", "-", label)
    if not label:
        raise ValueError(f"name {name!r} has no letters or digits to make a DNS name from")
    return label[:63].rstrip("-")


@dataclass(frozen=True)
class Settings:
    """Runtime settings of a pattern, shared by all its roles."""

    #: Deadline of one request at the entry, in seconds; routers pass what remains downstream.
    timeout: float = RuntimeConfig.timeout
    #: Largest accepted request body, in bytes (HTTP 413 / RESOURCE_EXHAUSTED above it).
    max_request_bytes: int = RuntimeConfig.max_request_bytes
    #: Largest result on every hop, in bytes (a larger one is an error naming this limit).
    max_response_bytes: int = RuntimeConfig.max_response_bytes
    #: Deepest accepted JSON nesting of a request.
    max_json_depth: int = RuntimeConfig.max_json_depth
    #: Requests one replica works on at once; more are refused fast (HTTP 429 / RESOURCE_EXHAUSTED).
    max_in_flight: int = RuntimeConfig.max_in_flight
    #: Extra attempts a router makes on another replica when one is unavailable (0 disables).
    retries: int = RuntimeConfig.retries
    #: Scatter/gather: "fail" a request when a leaf fails, or return a "partial" result.
    on_missing: Literal["fail", "partial"] = RuntimeConfig.on_missing  # type: ignore[assignment]
    #: Scatter/gather: send a hedged call to another replica of a slow leaf after this many seconds
    #: (None: after the observed 95th percentile once enough calls were seen; 0 disables hedging).
    hedge_after: float | None = RuntimeConfig.hedge_after
    #: Whether running the function twice for one request is harmless (False: never hedged).
    idempotent: bool = RuntimeConfig.idempotent

    def validate(self) -> None:
        if not self.timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {self.timeout!r}")
        if self.max_request_bytes < 1024:
            raise ValueError(f"max_request_bytes must be at least 1024, got {self.max_request_bytes!r}")
        if self.max_response_bytes < 1024:
            raise ValueError(f"max_response_bytes must be at least 1024, got {self.max_response_bytes!r}")
        if self.max_json_depth < 1:
            raise ValueError(f"max_json_depth must be at least 1, got {self.max_json_depth!r}")
        if self.max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, got {self.max_in_flight!r}")
        if self.retries < 0:
            raise ValueError(f"retries must be 0 or more, got {self.retries!r}")
        if self.on_missing not in ("fail", "partial"):
            raise ValueError(f"on_missing must be 'fail' or 'partial', got {self.on_missing!r}")
        if self.hedge_after is not None and self.hedge_after < 0:
            raise ValueError(f"hedge_after must be 0 or more seconds, got {self.hedge_after!r}")
        if not self.idempotent and self.hedge_after:
            raise ValueError("hedge_after runs a leaf call twice: it needs idempotent=True")


@dataclass(frozen=True)
class Role:
    """One kind of process in a topology, run as `replicas` identical replicas."""

    #: DNS-safe, unique within the program: `<pattern>`, `<pattern>-router`, `<pattern>-shard-2` ...
    name: str
    kind: RoleKind
    replicas: int
    #: The function this role runs: the handler (function), the key function (shard, optional),
    #: the gather function (gather).
    function: FunctionSpec | None = None
    #: Roles this role calls, in order (shard i / leaf i is upstreams[i]).
    upstreams: tuple[str, ...] = ()
    #: Whether this role is the pattern's entry (serves JSON over HTTP too).
    entry: bool = False
    #: Shard/leaf index and count, for the function's ctx.
    index: int | None = None
    count: int | None = None
    #: Shard router: JSON field path of the key when no key function is given ("user.id").
    key_path: str | None = None

    #: What this role is within its pattern: service, router, replica, shard, root, leaf.
    component: str = "service"
    #: A persistent directory for the function (`storage=`): its size on Kubernetes ("1Gi"); None: stateless.
    storage: str | None = None
    #: The Kubernetes StorageClass of its volume (None: the cluster's default).
    storage_class: str | None = None
    #: A function role's function as the user's HTTP server (`mp.Container`), instead of `function`.
    container: Container | None = None


@dataclass(frozen=True)
class Topology:
    """Everything a target needs to run one pattern instance."""

    #: The pattern's resource name as the user gave it.
    name: str
    #: The pattern class: Service, Spread, Shard, ScatterGather.
    pattern: str
    roles: tuple[Role, ...]
    settings: Settings = field(default_factory=Settings)
    #: Directory of the program that declared the pattern (where the user's code lives).
    source_dir: str = "."
    #: The patterns its functions call (`uses=`): (the name functions call it by, the Topology of it).
    uses: tuple[tuple[str, "Topology"], ...] = ()

    @property
    def entry(self) -> Role:
        return next(r for r in self.roles if r.entry)

    def role(self, name: str) -> Role:
        for r in self.roles:
            if r.name == name:
                return r
        raise KeyError(name)

    def callers_of(self, name: str) -> tuple[Role, ...]:
        """Roles that route to `name` (the only ones a NetworkPolicy lets in)."""
        return tuple(r for r in self.roles if name in r.upstreams)

    def validate(self) -> None:
        names = [r.name for r in self.roles]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate role names in {self.name}: {names}")
        if sum(r.entry for r in self.roles) != 1:
            raise ValueError(f"{self.name} must have exactly one entry role")
        for r in self.roles:
            if not _DNS_LABEL.match(r.name):
                raise ValueError(f"role name {r.name!r} is not a DNS label")
            if len(r.name) > 63:
                raise ValueError(
                    f"role name {r.name!r} is {len(r.name)} characters, more than a DNS label's 63: "
                    "choose a shorter name"
                )
            if r.replicas < 1:
                raise ValueError(f"role {r.name} needs at least one replica")
            if r.kind == "function" and (r.function is None) == (r.container is None):
                raise ValueError(f"role {r.name} needs exactly one function: a Python function or an mp.Container")
            if r.container is not None and r.kind != "function":
                raise ValueError(f"role {r.name}: only function roles run an mp.Container")
            if r.storage is not None and (r.kind != "function" or r.replicas != 1):
                raise ValueError(f"role {r.name}: storage is for one replica of a function role")
            for up in r.upstreams:
                if up not in names:
                    raise ValueError(f"role {r.name} routes to unknown role {up}")
        self.settings.validate()


#: Roles the compiled router may serve (RuntimeConfig.compiled_router_serves decides per replica).
ROUTER_KINDS = ("spread", "shard")


def role_config(
    topology: Topology,
    role: Role,
    addresses: Mapping[str, str],
    *,
    replica: str,
    grpc_port: int = GRPC_PORT,
    http_port: int | None = HTTP_PORT,
    bind_host: str = "0.0.0.0",
    function_file: str | None = None,
    source_dir: str | None = None,
    uses: Mapping[str, str] | None = None,
    function_port: int | None = None,
    **target_settings: Any,
) -> RuntimeConfig:
    """The runtime configuration of one replica of `role`.

    `addresses` maps each upstream role name to a gRPC target that reaches all its replicas
    (`ipv4:127.0.0.1:5001,127.0.0.1:5002` locally, `dns:///name:50051` on Kubernetes and Docker);
    the runtime balances every call over them. `function_file` is where the by-value copy of the
    role's function lies, when it is shipped by value. `uses` maps each name of `topology.uses` to
    the gRPC target of that pattern's entry; only roles that run user functions are told.
    `function_port` is where the role's `mp.Container` server listens next to it (default: its
    `port`). `target_settings` are what the target adds (drain_seconds, tls_cert, tls_key, tls_ca).
    """
    s = topology.settings
    extra: dict[str, Any] = {}
    if role.kind == "gather":
        # Hedging needs a second replica of a leaf to go to. Only the root is told, so scaling the
        # replicas of a Spread or a Shard never restarts its router.
        extra.update(
            upstream_replicas=tuple(topology.role(u).replicas for u in role.upstreams),
            on_missing=s.on_missing,
            hedge_after=s.hedge_after,
            idempotent=s.idempotent,
        )
    if role.function is not None:
        extra.update(role.function.location(function_file))
    if role.container is not None:
        extra["function_url"] = f"http://127.0.0.1:{function_port or role.container.port}"
    if uses and role.kind in ("function", "gather") and role.container is None:
        extra["uses"] = tuple(sorted(uses.items()))
    return RuntimeConfig(
        role=role.kind,
        pattern=topology.pattern,
        name=topology.name,
        role_name=role.name,
        replica=replica,
        bind_host=bind_host,
        grpc_port=grpc_port,
        http_port=http_port if role.entry else None,
        timeout=s.timeout,
        max_request_bytes=s.max_request_bytes,
        max_response_bytes=s.max_response_bytes,
        max_json_depth=s.max_json_depth,
        max_in_flight=s.max_in_flight,
        retries=s.retries,
        index=role.index,
        count=role.count if role.index is not None else None,
        upstreams=tuple(addresses[u] for u in role.upstreams),
        upstream_names=tuple(role.upstreams),
        key_path=role.key_path if role.kind == "shard" else None,
        source_dir=source_dir,
        **extra,
        **target_settings,
    )


def container_env(topology: Topology, role: Role, *, replica: str, port: int) -> dict[str, str]:
    """The environment of a role's `mp.Container` server: `PORT` and `MP_CONTEXT` (what a
    Python function's ctx holds), plus the pattern's plain `env=` values the target adds."""
    return server_env(
        port, pattern=topology.pattern, name=topology.name, role=role.component, index=role.index,
        count=role.count if role.index is not None else None, replica=replica,
    )


def role_env(topology: Topology, role: Role, addresses: Mapping[str, str], **kwargs: Any) -> dict[str, str]:
    """`role_config(...)` as the environment variables a process, container or pod is given."""
    return role_config(topology, role, addresses, **kwargs).to_env()
