"""The endpoints document `metaparticle run --endpoints-json` writes: every pattern's entry URLs and
where each role's replicas run, the same shape for processes and containers."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Optional

from ._topology import Role, Topology


def pattern_endpoints(
    topology: Topology, url: str, grpc_url: str, replicas: Callable[[Role], dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    """One pattern: its entry URLs, `extra` fields, and per role what `replicas(role)` says of its replicas."""
    return {
        "name": topology.name,
        "pattern": topology.pattern,
        "url": url,
        "grpc_url": grpc_url,
        **extra,
        "roles": [
            {"name": role.name, "kind": role.kind, "component": role.component, "entry": role.entry, **replicas(role)}
            for role in topology.roles
        ],
    }


def document(project: str, patterns: Iterable[dict[str, Any]], target: Optional[str] = None) -> dict[str, Any]:
    """The whole document (`target` is named for every target but the local one)."""
    doc: dict[str, Any] = {"project": project}
    if target is not None:
        doc["target"] = target
    doc["patterns"] = list(patterns)
    return doc
