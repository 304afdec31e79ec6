"""The runtime's configuration and its one contract with deployers: `RuntimeConfig`, carried as
environment variables (the same for a process, a container and a pod)."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field, fields
from typing import Mapping

ROLES = ("function", "spread", "shard", "gather")


class ConfigError(ValueError):
    """The runtime was started with a configuration it cannot run."""


#: Every setting's environment variable: the whole contract between a deployer and the runtime.
ENV: dict[str, str] = {
    "pattern": "MP_PATTERN",
    "name": "MP_NAME",
    "role": "MP_ROLE",
    "role_name": "MP_ROLE_NAME",
    "replica": "MP_REPLICA",
    "bind_host": "MP_BIND_HOST",
    "grpc_port": "MP_GRPC_PORT",
    "timeout": "MP_TIMEOUT",
    "max_request_bytes": "MP_MAX_REQUEST_BYTES",
    "max_response_bytes": "MP_MAX_RESPONSE_BYTES",
    "max_json_depth": "MP_MAX_JSON_DEPTH",
    "max_in_flight": "MP_MAX_IN_FLIGHT",
    "retries": "MP_RETRIES",
    "http_port": "MP_HTTP_PORT",
    "http_fd": "MP_HTTP_FD",
    "index": "MP_INDEX",
    "count": "MP_COUNT",
    "upstreams": "MP_UPSTREAMS",
    "upstream_names": "MP_UPSTREAM_NAMES",
    "upstream_replicas": "MP_UPSTREAM_REPLICAS",
    "key_path": "MP_KEY_PATH",
    "on_missing": "MP_ON_MISSING",
    "hedge_after": "MP_HEDGE_AFTER",
    "idempotent": "MP_IDEMPOTENT",
    "function": "MP_FUNCTION",
    "function_file": "MP_FUNCTION_FILE",
    "function_python": "MP_FUNCTION_PYTHON",
    "function_url": "MP_FUNCTION_URL",
    "source_dir": "MP_SOURCE_DIR",
    "drain_seconds": "MP_DRAIN_SECONDS",
    "threads": "MP_THREADS",
    "tls_cert": "MP_TLS_CERT",
    "tls_key": "MP_TLS_KEY",
    "tls_ca": "MP_TLS_CA",
    "env_dir": "MP_ENV_DIR",
    "metrics_port": "MP_METRICS_PORT",
    "uses": "MP_USES",
    "router": "MP_ROUTER",
    "router_binary": "MP_ROUTER_BINARY",
    "event_loop": "MP_EVENT_LOOP",
    "parent_pid": "MP_PARENT_PID",
    "log_level": "MP_LOG_LEVEL",
    "reuse_port": "MP_REUSE_PORT",
    "storage_dir": "MP_STORAGE_DIR",
}
#: Settings always written by `to_env`, even at their defaults (the rest only when set or changed).
_ALWAYS = ("pattern", "name", "role", "role_name", "replica", "bind_host", "grpc_port", "timeout",
           "max_request_bytes", "max_json_depth", "max_in_flight", "retries")


@dataclass(frozen=True)
class RuntimeConfig:
    """How one replica of one role runs: the runtime's whole configuration, every default once.

    Deployers build one per replica and give it to the process, container or pod as environment
    variables (`to_env`); the runtime reads it back with `from_env`. The same for every target.
    """

    role: str
    pattern: str = "Service"
    name: str = "service"
    role_name: str = "service"
    replica: str = field(default_factory=socket.gethostname)
    bind_host: str = "0.0.0.0"
    grpc_port: int = 50051
    http_port: int | None = None
    #: An inherited socket, listening on `http_port`, to serve the HTTP entry on instead of binding
    #: it: the local target shares one between a pattern's routers, and across the old and new
    #: entry of a `run --watch` roll, so no connection waiting to be accepted is lost.
    http_fd: int | None = None
    #: Deadline of one request at the entry, in seconds; routers pass what remains downstream.
    timeout: float = 10.0
    #: Largest accepted request body, in bytes (HTTP 413 / RESOURCE_EXHAUSTED above it).
    max_request_bytes: int = 4 * 1024 * 1024
    #: Largest result, in bytes, on every hop: what a function or gather function may answer and what
    #: routers and roots accept from the roles behind them.
    max_response_bytes: int = 16 * 1024 * 1024
    #: Deepest accepted JSON nesting of a request.
    max_json_depth: int = 64
    #: Requests one replica works on at once; more are refused fast (HTTP 429 / RESOURCE_EXHAUSTED).
    max_in_flight: int = 256
    #: Extra attempts a router makes on another replica when one is unavailable (0 disables).
    retries: int = 2
    index: int | None = None
    count: int | None = None
    upstreams: tuple[str, ...] = ()
    upstream_names: tuple[str, ...] = ()
    #: Scatter/gather: replicas of each leaf (hedging needs a second one to go to).
    upstream_replicas: tuple[int, ...] = ()
    key_path: str | None = None
    #: Scatter/gather: "fail" a request when a leaf fails, or return a "partial" result.
    on_missing: str = "fail"
    #: Scatter/gather: seconds before a slow leaf call is hedged (None: adaptive; 0: never).
    hedge_after: float | None = None
    #: Whether running the function twice for one request is harmless; False: never hedged.
    idempotent: bool = True
    function: str | None = None
    function_file: str | None = None
    function_python: str | None = None
    #: The user's own HTTP server that is the function (`mp.Container`): the runtime POSTs each
    #: request's JSON to this URL (http://127.0.0.1:<port>) instead of calling Python code.
    function_url: str | None = None
    source_dir: str | None = None
    #: Seconds between turning NOT_SERVING (routers stop sending) and refusing new calls on SIGTERM.
    drain_seconds: float = 0.5
    #: Threads for user code (sync functions, gather and key functions); None: `max_in_flight`, so
    #: every admitted call has a thread at once. Fewer threads lower what a replica admits.
    threads: int | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    #: A directory of secret environment variables for the function (file name: variable, file
    #: content: value), loaded into os.environ at start; deployers use it so that secret values are
    #: never in a container's configured environment.
    env_dir: str | None = None
    #: Port of a plain-HTTP `GET /metrics` (Prometheus) of its own; the HTTP entry serves it anyway.
    metrics_port: int | None = None
    #: The patterns a function may call (`ctx.call(name, ...)`): (name, gRPC target of its entry).
    uses: tuple[tuple[str, str], ...] = ()
    #: Which program routes for spread and shard roles: "auto" (the compiled router at
    #: `router_binary` when there is one and it can serve the role), "go" (it must) or "python".
    router: str = "auto"
    #: Path of the compiled router (runtime/router, `metaparticle-router`), when one is built.
    router_binary: str | None = None
    #: "auto" (uvloop when installed), "asyncio" or "uvloop".
    event_loop: str = "auto"
    #: The local supervisor's pid: the replica has the kernel kill it when that process dies
    #: (PR_SET_PDEATHSIG, armed by the replica itself so the supervisor never has to fork).
    parent_pid: int | None = None
    log_level: str = "INFO"
    #: Bind with SO_REUSEPORT: the local target holds each port (bound, not listening) until then.
    reuse_port: bool = False
    #: The role's persistent directory (`ctx.storage`): kept across restarts; None: stateless.
    storage_dir: str | None = None

    @staticmethod
    def env_name(setting: str) -> str:
        """The environment variable that carries `setting` (a field name)."""
        return ENV[setting]

    def to_env(self) -> dict[str, str]:
        """The environment variables that make `from_env` give back this configuration."""
        defaults = {f.name: f.default for f in fields(self)}
        env: dict[str, str] = {}
        for setting, variable in ENV.items():
            value = getattr(self, setting)
            if setting not in _ALWAYS and (value is None or value == () or value == defaults[setting]):
                if not (setting == "on_missing" and self.role == "gather"):
                    continue
            if setting == "uses":
                env[variable] = json.dumps(dict(value), sort_keys=True)
            elif isinstance(value, bool):
                env[variable] = "true" if value else "false"
            elif isinstance(value, tuple):
                env[variable] = json.dumps(list(value))
            elif isinstance(value, float):
                env[variable] = repr(value)
            else:
                env[variable] = str(value)
        return env

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "RuntimeConfig":
        env = os.environ if env is None else env

        def get(setting: str) -> str | None:
            value = env.get(ENV[setting])
            return value if value not in (None, "") else None

        def number(setting: str, kind: type) -> object:
            raw = get(setting)
            if raw is None:
                return defaults[setting]
            try:
                return kind(raw)
            except ValueError:
                raise ConfigError(f"{ENV[setting]} must be a {kind.__name__}, got {raw!r}") from None

        def flag(setting: str) -> bool:
            raw = get(setting)
            if raw is None:
                return defaults[setting]  # type: ignore[return-value]
            if raw.lower() not in ("true", "false"):
                raise ConfigError(f"{ENV[setting]} must be true or false, got {raw!r}")
            return raw.lower() == "true"

        def json_list(setting: str) -> tuple[object, ...]:
            raw = get(setting)
            try:
                value = json.loads(raw) if raw is not None else []
            except ValueError:
                raise ConfigError(f"{ENV[setting]} must be a JSON list, got {raw!r}") from None
            if not isinstance(value, list):
                raise ConfigError(f"{ENV[setting]} must be a JSON list, got {raw!r}")
            return tuple(value)

        def json_names(setting: str) -> tuple[tuple[str, str], ...]:
            raw = get(setting)
            try:
                value = json.loads(raw) if raw is not None else {}
            except ValueError:
                value = None
            if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                raise ConfigError(f"{ENV[setting]} must be a JSON object of names to gRPC targets, got {raw!r}")
            return tuple(sorted(value.items()))

        def flag(setting: str) -> bool:
            raw = get(setting)
            if raw is None:
                return bool(defaults[setting])
            if raw.lower() not in ("true", "false", "1", "0"):
                raise ConfigError(f"{ENV[setting]} must be true or false, got {raw!r}")
            return raw.lower() in ("true", "1")

        defaults = {f.name: f.default for f in fields(cls)}
        role = get("role")
        if role not in ROLES:
            raise ConfigError(f"MP_ROLE must be one of {', '.join(ROLES)}, got {role!r}")
        upstreams = tuple(str(u) for u in json_list("upstreams"))
        names = tuple(str(n) for n in json_list("upstream_names")) or tuple(f"upstream-{i}" for i in range(len(upstreams)))
        replicas = tuple(int(r) for r in json_list("upstream_replicas"))  # type: ignore[call-overload]
        cfg = cls(
            role=role,
            pattern=get("pattern") or defaults["pattern"],
            name=get("name") or defaults["name"],
            role_name=get("role_name") or role,
            replica=get("replica") or socket.gethostname(),
            bind_host=get("bind_host") or defaults["bind_host"],
            grpc_port=number("grpc_port", int),
            http_port=number("http_port", int),
            http_fd=number("http_fd", int),
            timeout=number("timeout", float),
            max_request_bytes=number("max_request_bytes", int),
            max_response_bytes=number("max_response_bytes", int),
            max_json_depth=number("max_json_depth", int),
            max_in_flight=number("max_in_flight", int),
            retries=number("retries", int),
            index=number("index", int),
            count=number("count", int),
            upstreams=upstreams,
            upstream_names=names,
            upstream_replicas=replicas,
            key_path=get("key_path"),
            on_missing=get("on_missing") or defaults["on_missing"],
            hedge_after=number("hedge_after", float),
            idempotent=flag("idempotent"),
            function=get("function"),
            function_file=get("function_file"),
            function_python=get("function_python"),
            function_url=get("function_url"),
            source_dir=get("source_dir"),
            drain_seconds=number("drain_seconds", float),
            threads=number("threads", int),
            tls_cert=get("tls_cert"),
            tls_key=get("tls_key"),
            tls_ca=get("tls_ca"),
            env_dir=get("env_dir"),
            metrics_port=number("metrics_port", int),
            uses=json_names("uses"),
            router=get("router") or defaults["router"],
            router_binary=get("router_binary"),
            event_loop=get("event_loop") or defaults["event_loop"],
            parent_pid=number("parent_pid", int),
            log_level=get("log_level") or defaults["log_level"],
            reuse_port=flag("reuse_port"),
            storage_dir=get("storage_dir"),
        )
        cfg.validate()
        return cfg

    def tls_files(self) -> tuple[str, str, str] | None:
        """(cert, key, ca) when the role speaks mutual TLS, else None."""
        if self.tls_cert and self.tls_key and self.tls_ca:
            return (self.tls_cert, self.tls_key, self.tls_ca)
        return None

    @property
    def worker_threads(self) -> int:
        """How many threads run user code (see `threads`)."""
        return self.threads if self.threads is not None else self.max_in_flight

    def leaf_replicas(self, index: int) -> int:
        """How many replicas upstream group `index` has (hedging needs another one to go to)."""
        return self.upstream_replicas[index] if index < len(self.upstream_replicas) else 1

    def compiled_router_serves(self) -> bool:
        """Whether the compiled router can serve this role: a Spread router, or a Shard router
        keyed by a field path (a key function is Python code)."""
        if self.role == "spread":
            return True
        return self.role == "shard" and bool(self.key_path) and not (self.function or self.function_file)

    def validate(self) -> None:
        if self.router not in ("auto", "go", "python"):
            raise ConfigError(f"MP_ROUTER must be auto, go or python, got {self.router!r}")
        if self.router == "go" and not (self.router_binary and self.compiled_router_serves()):
            raise ConfigError(
                "MP_ROUTER=go needs MP_ROUTER_BINARY and a role the compiled router serves "
                "(a spread router, or a shard router keyed by a field path)"
            )
        if self.role in ("spread", "shard", "gather") and not self.upstreams:
            raise ConfigError(f"the {self.role} role needs MP_UPSTREAMS")
        if self.role == "spread" and len(self.upstreams) != 1:
            raise ConfigError("the spread role routes to exactly one upstream group")
        if self.role == "function" and not (self.function or self.function_file or self.function_url):
            raise ConfigError("the function role needs MP_FUNCTION (module:qualname), MP_FUNCTION_FILE or MP_FUNCTION_URL")
        if self.function_url is not None:
            if self.role != "function":
                raise ConfigError("MP_FUNCTION_URL is for function roles only")
            if self.function or self.function_file:
                raise ConfigError("MP_FUNCTION_URL and MP_FUNCTION / MP_FUNCTION_FILE exclude each other")
            if not self.function_url.startswith("http://"):
                raise ConfigError(f"MP_FUNCTION_URL must be an http:// URL, got {self.function_url!r}")
        if self.role == "gather" and not (self.function or self.function_file):
            raise ConfigError("the gather role needs its gather function (MP_FUNCTION or MP_FUNCTION_FILE)")
        if self.role == "shard" and not (self.key_path or self.function or self.function_file):
            raise ConfigError("the shard role needs MP_KEY_PATH or a key function")
        if self.event_loop not in ("auto", "asyncio", "uvloop"):
            raise ConfigError(f"MP_EVENT_LOOP must be auto, asyncio or uvloop, got {self.event_loop!r}")
        if self.on_missing not in ("fail", "partial"):
            raise ConfigError(f"MP_ON_MISSING must be fail or partial, got {self.on_missing!r}")
        if len(self.upstream_names) != len(self.upstreams):
            raise ConfigError("MP_UPSTREAM_NAMES must name every upstream")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("MP_TLS_CERT and MP_TLS_KEY go together")
        if self.tls_cert and not self.tls_ca:
            # TLS here is always mutual: without a CA any client could call every role.
            raise ConfigError("MP_TLS_CERT needs MP_TLS_CA: roles accept only peers whose certificate the CA signed")
        if self.storage_dir is not None and (self.role != "function" or not os.path.isabs(self.storage_dir)):
            raise ConfigError("MP_STORAGE_DIR is an absolute directory, and only function roles keep data")
        if self.timeout <= 0:
            raise ConfigError("MP_TIMEOUT must be positive")
        if self.max_request_bytes < 1 or self.max_response_bytes < 1:
            raise ConfigError("MP_MAX_REQUEST_BYTES and MP_MAX_RESPONSE_BYTES must be at least 1")
        if self.max_in_flight < 1 or (self.threads is not None and self.threads < 1):
            raise ConfigError("MP_MAX_IN_FLIGHT and MP_THREADS must be at least 1")


#: The environment variables the user's own server (`mp.Container`) is started with.
SERVER_PORT_ENV = "PORT"
SERVER_CONTEXT_ENV = "MP_CONTEXT"


def server_env(
    port: int, *, pattern: str, name: str, role: str, index: int | None, count: int | None, replica: str
) -> dict[str, str]:
    """The environment of a user's HTTP server that serves as a role's function: the port to
    listen on, and (as JSON) what a Python function's `ctx` holds. `role` is the component
    (service, replica, shard, leaf), as `ctx.role` says."""
    context = {"pattern": pattern, "name": name, "role": role, "index": index, "count": count, "replica": replica}
    return {SERVER_PORT_ENV: str(port), SERVER_CONTEXT_ENV: json.dumps(context, sort_keys=True)}
