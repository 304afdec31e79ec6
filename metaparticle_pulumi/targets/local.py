"""The embedded local target: every replica of every role as a process on 127.0.0.1.

Rendering creates no cloud resources: it plans the processes (free ports, the entry on the port
asked for) so that the component's `url` is the real address, and `metaparticle run` starts them.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

import pulumi

from metaparticle_runtime.config import RuntimeConfig

from .._errors import PatternError
from .._outputs import resolved
from ..topology import Role, Topology, role_config
from . import TargetOutputs
from ._shared import check_env

if TYPE_CHECKING:
    from ..patterns import PatternArgs, _Pattern

HOST = "127.0.0.1"


_handed_out: set[int] = set()


def free_port() -> int:
    """A port the OS says is free on 127.0.0.1 now, never the same twice in one process."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((HOST, 0))
            port = sock.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise OSError("no free port found on 127.0.0.1")


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

    @property
    def env(self) -> dict[str, str]:
        """The process's environment: its runtime configuration and the extra environment."""
        return {**self.extra_env, **self.config.to_env()}


@dataclass
class LocalPlan:
    """The processes of one pattern, with their ports."""

    topology: Topology
    grpc_ports: dict[str, list[int]] = field(default_factory=dict)
    http_port: int | None = None
    function_dir: str | None = None
    #: Mutual TLS between roles: (cert, key, ca) absolute PEM file paths, or None.
    tls: tuple[str, str, str] | None = None
    #: The pattern's `env=`: more environment for every process (values may be Outputs).
    env: Mapping[str, Any] = field(default_factory=dict)

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
        specs = []
        for role in topo.roles:
            fn_file = _write_function(role, function_dir)
            for i, port in enumerate(self.grpc_ports[role.name]):
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
                    **tls,
                )
                extra = {key: str(resolved(value)) for key, value in sorted(self.env.items())}
                specs.append(ProcessSpec(topo.name, role.name, i, name, port, self.http_port if role.entry else None, config, extra))
        return specs


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


_plans: list[LocalPlan] = []
_entry_port: int | None = None


def reset(entry_port: int | None) -> None:
    """Starts a new plan; the first pattern's entry gets `entry_port` (others get free ports)."""
    global _entry_port
    _plans.clear()
    _entry_port = entry_port
    if entry_port is not None:
        # Nothing is bound to it until the entry starts: never hand it out as a gRPC port meanwhile.
        _handed_out.add(entry_port)


def plans() -> list[LocalPlan]:
    return list(_plans)


def render(component: "_Pattern", topology: Topology, args: "PatternArgs") -> TargetOutputs:
    global _entry_port
    where = f"{type(component).__name__} {topology.name!r}"
    plan = LocalPlan(topology, tls=_tls_files(args.tls, where), env=dict(args.env))
    check_env(topology, plan.env, where)
    for role in topology.roles:
        plan.grpc_ports[role.name] = [free_port() for _ in range(role.replicas)]
    if _entry_port is not None:
        plan.http_port, _entry_port = _entry_port, None
    else:
        plan.http_port = free_port()
    _plans.append(plan)
    return TargetOutputs(url=pulumi.Output.from_input(plan.url), grpc_url=pulumi.Output.from_input(plan.grpc_url))
