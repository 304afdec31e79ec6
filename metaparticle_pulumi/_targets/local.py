"""The embedded local target: every replica of every role as a process on 127.0.0.1.

Rendering creates no cloud resources: it plans the processes (ports reserved for the evaluation,
the entry on the port asked for) so that the component's `url` is the real address, and keeps the
plan on the component; `metaparticle run` starts the processes.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import pulumi

from metaparticle_runtime.config import RuntimeConfig

from .. import _registry, _state as state
from .._errors import PatternError
from .._outputs import resolved
from .._ports import HOST, free_port
from .._router import compiled_router, router_binary  # noqa: F401 (router_binary: tests and bench)
from .._topology import ROUTER_KINDS, Role, Topology, container_env, role_config
from . import TargetOutputs
from ._shared import check_env

if TYPE_CHECKING:
    from .._patterns import PatternArgs, _Pattern

__all__ = ["HOST", "LocalPlan", "ProcessSpec", "ServerSpec", "free_port", "render"]


@dataclass(frozen=True)
class ServerSpec:
    """The user's own HTTP server (`mp.Container`) that a replica's runtime is the adapter of."""

    command: tuple[str, ...]
    #: Its working directory: the container's `build` directory, else the program's.
    cwd: str
    #: Where it listens (held by the run until the server starts: see `_ports.py`).
    port: int
    #: PORT, MP_CONTEXT and the pattern's `env=`.
    env: Mapping[str, str] = field(default_factory=dict)
    #: The digest of the files of `cwd` when the spec was made: `run --watch` rolls the role's
    #: replicas when it changes.
    digest: str = ""


@dataclass(frozen=True)
class ProcessSpec:
    """One local process: one replica of one role."""

    topology: str
    role: str
    replica: int
    name: str
    grpc_port: int
    http_port: int | None
    #: What the runtime in this process runs as.
    config: RuntimeConfig
    #: More environment for the function (never a runtime setting: those are in `config`).
    extra_env: Mapping[str, str] = field(default_factory=dict)
    #: Port of its own `GET /metrics` (every role but the entry, which serves it on `http_port`).
    metrics_port: int | None = None
    #: The user's server this replica's runtime calls as its function, started before it.
    server: ServerSpec | None = None
    #: The digest of the program's modules its function may load by reference, when the spec was
    #: made: `run --watch` rolls the role when it differs.
    code: str = ""

    @property
    def env(self) -> dict[str, str]:
        """The process's environment: its runtime configuration and the extra environment."""
        return {**self.extra_env, **self.config.to_env()}

    @property
    def ports(self) -> tuple[int, ...]:
        """Every port this process binds (an entry given the run's listening socket binds no HTTP port)."""
        http = self.http_port if self.config.http_fd is None else None
        return (self.grpc_port,) + tuple(p for p in (http, self.metrics_port) if p is not None)

    @property
    def pass_fds(self) -> tuple[int, ...]:
        """Descriptors the process inherits: the entry's listening socket, shared by its routers."""
        return (self.config.http_fd,) if self.config.http_fd is not None else ()

    @property
    def metrics_url(self) -> str:
        """Where its Prometheus metrics are scraped."""
        return f"http://{HOST}:{self.http_port if self.http_port is not None else self.metrics_port}/metrics"


@dataclass
class LocalPlan:
    """The processes of one pattern, with their ports."""

    topology: Topology
    grpc_ports: dict[str, list[int]] = field(default_factory=dict)
    #: Each non-entry role's replicas' metrics ports (the entry serves metrics on its HTTP port).
    metrics_ports: dict[str, list[int]] = field(default_factory=dict)
    #: The ports of each `mp.Container` role's replicas' servers.
    server_ports: dict[str, list[int]] = field(default_factory=dict)
    http_port: int | None = None
    #: The run's listening socket of the HTTP entry, passed to the entry process (see Ports.listen).
    http_fd: int | None = None
    function_dir: str | None = None
    #: Mutual TLS between roles: (cert, key, ca) absolute PEM file paths, or None.
    tls: tuple[str, str, str] | None = None
    #: The pattern's `env=`: more environment for every process (values may be Outputs).
    env: Mapping[str, Any] = field(default_factory=dict)
    #: The entries of the patterns it `uses`, by name: gRPC targets on 127.0.0.1.
    uses: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        entry = self.topology.entry.name
        return f"grpc://{HOST}:{self.grpc_ports[entry][0]}"

    def address(self, role: str) -> str:
        """The gRPC target that reaches every replica of `role` (balanced per call by the caller)."""
        return "ipv4:" + ",".join(f"{HOST}:{p}" for p in self.grpc_ports[role])

    def processes(self, function_dir: str) -> list[ProcessSpec]:
        """The process specs, writing by-value functions into `function_dir`."""
        topo = self.topology
        addresses = {r.name: self.address(r.name) for r in topo.roles}
        storage = state.prepare(topo)  # kept across runs: <program>/.metaparticle/state/<pattern>/<role>
        specs = []
        code = code_digest(topo.source_dir)
        for role in topo.roles:
            fn_file = _write_function(role, function_dir)
            metrics_ports = self.metrics_ports.get(role.name) or [None] * len(self.grpc_ports[role.name])
            server_ports = self.server_ports.get(role.name) or [None] * len(self.grpc_ports[role.name])
            for i, (port, metrics_port, server_port) in enumerate(zip(self.grpc_ports[role.name], metrics_ports, server_ports)):
                name = role.name if role.replicas == 1 else f"{role.name}-{i}"
                tls = dict(zip(("tls_cert", "tls_key", "tls_ca"), self.tls)) if self.tls is not None else {}
                config = role_config(
                    topo,
                    role,
                    addresses,
                    replica=name,
                    grpc_port=port,
                    http_port=self.http_port if role.entry else None,
                    bind_host=HOST,
                    function_file=fn_file,
                    source_dir=topo.source_dir,
                    reuse_port=True,  # its ports are held (not listening) by the run until it binds
                    metrics_port=None if role.entry else metrics_port,
                    http_fd=self.http_fd if role.entry else None,
                    uses=self.uses,
                    **(compiled_router() if role.kind in ROUTER_KINDS else {}),
                    storage_dir=storage.get(role.name),
                    function_port=server_port,
                    **tls,
                )
                extra = {key: str(resolved(value)) for key, value in sorted(self.env.items())}
                http_port = self.http_port if role.entry else None
                server = None
                if role.container is not None and server_port is not None:
                    assert role.container.command is not None, "checked when rendered"
                    server_env = {**extra, **container_env(topo, role, replica=name, port=server_port)}
                    cwd = role.container.workdir(topo.source_dir)
                    server = ServerSpec(role.container.command, cwd, server_port, server_env, files_digest(cwd))
                loads_code = bool(config.function or config.function_file)
                specs.append(ProcessSpec(
                    topo.name, role.name, i, name, port, http_port, config, extra, config.metrics_port, server, code if loads_code else "",
                ))
        return specs


#: Directories of a server's working directory that are not its code (dependencies, state, caches).
_NOT_CODE = {"node_modules", ".metaparticle", "__pycache__", ".git", ".venv"}


def code_digest(source_dir: str | None, main: str = "__main__.py") -> str:
    """A digest of the program's Python modules but its main file (whose functions ship by value,
    their own digest in their file name): what a function loaded by reference may run."""
    if not source_dir:
        return ""
    digest = hashlib.sha256()
    root = Path(source_dir)
    for path in sorted(root.rglob("*.py")):
        if "__pycache__" in path.parts or path == root / main:
            continue
        try:
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
        except OSError:
            continue
    return digest.hexdigest()


def files_digest(directory: str) -> str:
    """A digest of every file of an `mp.Container` server's directory (whatever its language)."""
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if d not in _NOT_CODE)
        for name in sorted(files):
            path = os.path.join(root, name)
            try:
                with open(path, "rb") as fh:
                    data = fh.read()
            except OSError:
                continue
            digest.update(os.path.relpath(path, directory).encode() + b"\0" + data + b"\0")
    return digest.hexdigest()


def _write_function(role: Role, function_dir: str) -> str | None:
    if role.function is None or not role.function.by_value:
        return None
    path = os.path.join(function_dir, role.function.file_name)
    if not os.path.exists(path):
        tmp = path + ".tmp"
        with open(tmp, "wb") as fh:
            fh.write(role.function.pickled or b"")
        os.replace(tmp, path)
    return path


def _tls_files(tls: object, where: str) -> tuple[str, str, str] | None:
    """The pattern's `tls=(cert, key, ca)` as absolute paths of files that exist."""
    if tls is None:
        return None
    if not isinstance(tls, (tuple, list)) or len(tls) != 3 or not all(isinstance(p, (str, os.PathLike)) for p in tls):
        raise PatternError(f"{where}: tls must be (cert, key, ca) file paths, got {tls!r}")
    paths = tuple(os.path.abspath(os.fspath(p)) for p in tls)
    for what, path in zip(("certificate", "key", "CA certificate"), paths):
        if not os.path.isfile(path):
            raise PatternError(f"{where}: tls {what} {path} does not exist")
    return paths  # type: ignore[return-value]


def render(component: "_Pattern", topology: Topology, args: "PatternArgs") -> TargetOutputs:
    where = f"{type(component).__name__} {topology.name!r}"
    plan = LocalPlan(topology, tls=_tls_files(args.tls, where), env=dict(args.env))
    state.check_layout(topology, bool(getattr(args, "reshard", False)), where)
    for name, used in component.uses.items():
        callee = used.local_plan
        assert callee is not None, "a used pattern is declared (and planned) before its users"
        if (plan.tls is None) != (callee.tls is None):
            raise PatternError(f"{where}: uses[{name!r}]: both patterns need tls= or neither (calls go over the same TLS)")
        plan.uses[name] = callee.address(callee.topology.entry.name)
    check_env(topology, plan.env, where)
    ports = _registry.ports()
    for role in topology.roles:
        # Keyed, so that a re-evaluation (run --watch) gives a role that did not change its ports again.
        plan.grpc_ports[role.name] = [ports.reserve(key=(topology.name, role.name, i, "grpc")) for i in range(role.replicas)]
        if not role.entry:
            plan.metrics_ports[role.name] = [
                ports.reserve(key=(topology.name, role.name, i, "metrics")) for i in range(role.replicas)
            ]
        if role.container is not None:
            if role.container.command is None:
                raise PatternError(
                    f"{where}: the local target runs the function's server with its command: give "
                    "mp.Container(command=[...]) (run in the build directory, else the program's)"
                )
            plan.server_ports[role.name] = [
                ports.reserve(key=(topology.name, role.name, i, "server"), running=True) for i in range(role.replicas)
            ]
    plan.http_port = ports.entry_port(key=(topology.name, "http"))
    for used in component.uses.values():
        callee = used.local_plan
        if ports.main_entry is not None and callee is not None and callee.http_port == ports.main_entry:
            # The main entry (`run --port`) belongs to the pattern nothing else uses: a caller
            # takes it over from the pattern it calls.
            plan.http_port, callee.http_port = callee.http_port, plan.http_port
    component.local_plan = plan
    # Read when awaited (after the whole program is declared): a later caller may take the port over.
    return TargetOutputs(url=pulumi.Output.from_input(_later(lambda: plan.url)), grpc_url=pulumi.Output.from_input(plan.grpc_url))


async def _later(value: Any) -> Any:
    return value()
