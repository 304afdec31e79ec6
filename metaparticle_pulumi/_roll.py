"""What a `run --watch` reload changes: which replicas keep running, which start, which stop.

A re-evaluation gives every role the ports it had (ports keyed by pattern, role and replica), so
a role whose configuration, extra environment and code are unchanged is the same process spec and
keeps running. Every other role is rolled: its new replicas get ports of their own, so they can
be told apart from the old ones while both run; roles that call a rolled role then see new
addresses and roll too. The HTTP entry keeps its port: the new entry binds it next to the old
one (SO_REUSEPORT) and the old one drains.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    from ._program import Evaluation
    from ._targets.local import ProcessSpec

SpecKey = tuple[str, str, int]


def key(spec: "ProcessSpec") -> SpecKey:
    return (spec.topology, spec.role, spec.replica)


def port_keys(specs: Iterable["ProcessSpec"]) -> dict[Any, int]:
    """The ports of running specs, keyed as the local target reserves them (_targets/local.py)."""
    keys: dict[Any, int] = {}
    for spec in specs:
        keys[(spec.topology, spec.role, spec.replica, "grpc")] = spec.grpc_port
        if spec.metrics_port is not None:
            keys[(spec.topology, spec.role, spec.replica, "metrics")] = spec.metrics_port
        if spec.server is not None:
            keys[(spec.topology, spec.role, spec.replica, "server")] = spec.server.port
        if spec.http_port is not None:
            keys[(spec.topology, "http")] = spec.http_port
    return keys


def fingerprint(spec: "ProcessSpec") -> tuple[Any, ...]:
    """What makes two specs the same running process."""
    # Each spec carries the digests of its code as it was when the spec was made: the running
    # ones' from their start, the new ones' from now.
    return (spec.config, tuple(sorted(spec.extra_env.items())), spec.code, spec.server)


@dataclass
class Roll:
    """The outcome of planning a reload."""

    keep: list["ProcessSpec"]
    start: list["ProcessSpec"]
    stop: list["ProcessSpec"]

    @property
    def roles(self) -> list[str]:
        """The rolled roles (started or stopped), in order."""
        seen: dict[str, None] = {}
        for spec in (*self.start, *self.stop):
            seen.setdefault(spec.role, None)
        return list(seen)


def plan(old: Iterable["ProcessSpec"], evaluation: "Evaluation", function_dir: str) -> Roll:
    """Compares the running specs with the new evaluation's; rolled roles get new ports (but the
    HTTP entry's) in the evaluation's plans, until no more roles change."""
    running = {key(spec): spec for spec in old}
    before = {k: fingerprint(s) for k, s in running.items()}
    rolled: set[tuple[str, str]] = set()
    ports = evaluation.ports
    while True:
        specs = [s for p in evaluation.plans for s in p.processes(function_dir)]
        changed = {
            (s.topology, s.role) for s in specs if key(s) not in before or fingerprint(s) != before[key(s)]
        }
        if changed <= rolled:
            break
        for local_plan in evaluation.plans:
            name = local_plan.topology.name
            for role in local_plan.topology.roles:
                if (name, role.name) not in changed or (name, role.name) in rolled:
                    continue
                for held in (*local_plan.grpc_ports[role.name], *local_plan.metrics_ports.get(role.name, [])):
                    ports.release(held)  # a port the running replica keeps
                local_plan.grpc_ports[role.name] = [ports.reserve() for _ in range(role.replicas)]
                if role.name in local_plan.metrics_ports:
                    local_plan.metrics_ports[role.name] = [ports.reserve() for _ in range(role.replicas)]
                if role.name in local_plan.server_ports:
                    # The running servers keep theirs until they stop (a server port held by the
                    # running one is not held here: releasing it is a no-op).
                    for held in local_plan.server_ports[role.name]:
                        ports.release(held)
                    local_plan.server_ports[role.name] = [ports.reserve() for _ in range(role.replicas)]
        rolled |= changed
    keep = [running[key(s)] for s in specs if (s.topology, s.role) not in rolled]
    for spec in keep:
        for port in spec.ports:
            ports.release(port)  # its process listens on it already
    start = [s for s in specs if (s.topology, s.role) in rolled]
    kept = {key(s) for s in keep}
    stop = [s for k, s in running.items() if k not in kept]
    return Roll(keep, start, stop)


def retire_order(specs: list["ProcessSpec"]) -> list[list["ProcessSpec"]]:
    """`specs` in batches, callers before what they call (an old entry drains while the old
    replicas behind it still answer)."""
    entries = {s.topology: s.role for s in specs if s.http_port is not None}

    def callees(spec: "ProcessSpec") -> set[str]:
        used = {entries[name] for name, _ in spec.config.uses if name in entries}
        return set(spec.config.upstream_names) | used

    remaining, batches = list(specs), []
    while remaining:
        called = set().union(*(callees(s) for s in remaining))
        batch = [s for s in remaining if s.role not in called] or list(remaining)
        batches.append(batch)
        remaining = [s for s in remaining if s not in batch]
    return batches
