"""Renderers: one small module per target turns a `Topology` into what that target runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pulumi

if TYPE_CHECKING:
    from .._patterns import PatternArgs, _Pattern
    from .._topology import Topology


@dataclass
class TargetOutputs:
    """What a renderer gives back to its component."""

    url: pulumi.Output[str]
    grpc_url: pulumi.Output[str]
    extra: dict[str, Any] = field(default_factory=dict)


HONOURED, IGNORED, REFUSED = "honoured", "ignored", "refused"

#: What each target does with each deployment option, checked once when a pattern is declared: an
#: ignored option is named in a warning, a refused one is an error naming the option and the target.
CAPABILITIES: dict[str, dict[str, str]] = {
    "kubernetes": {
        "image": HONOURED, "registry": HONOURED, "skip_push": HONOURED, "namespace": HONOURED,
        "labels": HONOURED, "annotations": HONOURED, "resources": HONOURED, "env": HONOURED,
        "public": HONOURED, "autoscale": HONOURED, "tls_secret": HONOURED, "tls": REFUSED, "egress": HONOURED,
        "monitoring": HONOURED,
    },
    "docker": {
        "image": HONOURED, "registry": HONOURED, "skip_push": HONOURED, "namespace": IGNORED,
        "labels": HONOURED, "annotations": IGNORED, "resources": HONOURED, "env": HONOURED,
        "public": IGNORED, "autoscale": IGNORED, "tls_secret": REFUSED, "tls": REFUSED, "egress": IGNORED,
        "monitoring": IGNORED,
    },
    "local": {
        "image": IGNORED, "registry": IGNORED, "skip_push": IGNORED, "namespace": IGNORED,
        "labels": IGNORED, "annotations": IGNORED, "resources": IGNORED, "env": HONOURED,
        "public": IGNORED, "autoscale": IGNORED, "tls_secret": REFUSED, "tls": HONOURED, "egress": IGNORED,
        "monitoring": IGNORED,
    },
}
#: What to use instead of a refused option.
_INSTEAD = {
    ("kubernetes", "tls"): "use tls_secret (a Secret with tls.crt, tls.key, ca.crt)",
    ("docker", "tls"): "mutual TLS is not available on the docker target",
    ("docker", "tls_secret"): "mutual TLS is not available on the docker target",
    ("local", "tls_secret"): "use tls=(cert, key, ca) files",
}


def _given(value: Any) -> bool:
    """Whether an option was set to something other than its default (None, False, empty, "open")."""
    return value not in (None, False, "open") and not (isinstance(value, (dict, list, tuple)) and not value)


def check_options(target: str, args: "PatternArgs", where: str) -> list[str]:
    """Raises PatternError for an option `target` refuses; returns the given options it ignores."""
    from .._errors import PatternError

    ignored = []
    for option, support in CAPABILITIES[target].items():
        if not _given(getattr(args, option)):
            continue
        if support == REFUSED:
            instead = _INSTEAD.get((target, option))
            raise PatternError(f"{where}: {option}= is not supported on the {target} target" + (f"; {instead}" if instead else ""))
        if support == IGNORED:
            ignored.append(option)
    return ignored


def _check_container_port(component: "_Pattern", topology: "Topology") -> None:
    """In a pod (a container's network namespace) the user's server shares the runtime's ports."""
    from .._errors import PatternError
    from .._topology import HTTP_PORT

    for role in topology.roles:
        if role.container is not None and role.entry and role.container.port == HTTP_PORT:
            raise PatternError(
                f"{type(component).__name__} {topology.name!r}: the function's port {HTTP_PORT} is the runtime's HTTP "
                f"entry port next to it; give mp.Container(port=...) another one (the server is told it in PORT)"
            )


def render(target: str, component: "_Pattern", topology: "Topology", args: "PatternArgs") -> TargetOutputs:
    """Creates the target's child resources of `component` (all with parent=component)."""
    if target != "local":
        _check_container_port(component, topology)
    if target == "local":
        from .local import render as render_local

        return render_local(component, topology, args)
    if target == "docker":
        from .docker import render as render_docker

        return render_docker(component, topology, args)
    from .kubernetes import render as render_kubernetes

    return render_kubernetes(component, topology, args)
