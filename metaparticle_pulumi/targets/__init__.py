"""Renderers: one small module per target turns a `Topology` into what that target runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pulumi

if TYPE_CHECKING:
    from ..patterns import PatternArgs, _Pattern
    from ..topology import Topology


@dataclass
class TargetOutputs:
    """What a renderer gives back to its component."""

    url: pulumi.Output[str]
    grpc_url: pulumi.Output[str]
    extra: dict[str, Any] = field(default_factory=dict)


def render(target: str, component: "_Pattern", topology: "Topology", args: "PatternArgs") -> TargetOutputs:
    """Creates the target's child resources of `component` (all with parent=component)."""
    if target == "local":
        from .local import render as render_local

        return render_local(component, topology, args)
    if target == "docker":
        from .docker import render as render_docker

        return render_docker(component, topology, args)
    from .kubernetes import render as render_kubernetes

    return render_kubernetes(component, topology, args)
