"""What the Kubernetes and Docker renderers share: labels, child options, names, resources, config."""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any, Mapping, Optional

import pulumi

from .. import _registry
from .._errors import PatternError
from .._specs import split_env
from .._specs.labels import (  # noqa: F401 - re-exported: what the renderers share
    LABEL_VALUE,
    RESERVED_LABELS,
    label_value,
    object_labels,
    role_labels,
    selector_labels,
)
from .._topology import Topology, dns_name, role_env

if TYPE_CHECKING:
    from .._patterns import PatternArgs, _Pattern

#: Container resources when the pattern gives none (a section the user gives replaces this one).
DEFAULT_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "100m", "memory": "128Mi"},
    "limits": {"memory": "256Mi"},
}

#: Former Pulumi names of children, so renaming a child here is an alias, not a replacement, in
#: existing stacks. Key: (child type token, current name template); value: former templates.
#: Templates are formatted with `base` (the pattern's DNS name), `role` and `replica`.
#: Example: {("kubernetes:apps/v1:Deployment", "{role}"): ("{role}-deployment",)}
FORMER_NAMES: dict[tuple[str, str], tuple[str, ...]] = {}

_SECRET_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def child_opts(
    component: "_Pattern", type_token: str, template: str, fields: Mapping[str, Any], **extra: Any
) -> pulumi.ResourceOptions:
    """Options of every child: parent=component (so providers and aliases of the parent reach it),
    plus aliases for the names this child had before (FORMER_NAMES). The component records the
    child's type and name (what `metaparticle preview` lists)."""
    aliases = [pulumi.Alias(name=former.format(**fields)) for former in FORMER_NAMES.get((type_token, template), ())]
    component.children.append((type_token, template.format(**fields)))
    return pulumi.ResourceOptions(parent=component, aliases=aliases or None, **extra)


def check_labels(args: "PatternArgs", where: str) -> None:
    taken = sorted(set(args.labels) & set(RESERVED_LABELS))
    if taken:
        raise PatternError(f"{where}: labels {', '.join(taken)} are set by metaparticle (selectors rely on them)")
    for key, value in args.labels.items():
        if not isinstance(value, str) or not LABEL_VALUE.match(value) or len(value) > 63:
            raise PatternError(f"{where}: label {key}={value!r} is not a valid Kubernetes label value")


def check_env(topology: Topology, env: Mapping[str, Any], where: str, **runtime_settings: Any) -> None:
    """Refuses `env=` keys that are no variable names, or that would replace the runtime's own
    configuration (`runtime_settings`: what the target adds to each role's RuntimeConfig)."""
    _, secret = split_env(env)
    for key in env:
        if not key or "=" in key:
            raise PatternError(f"{where}: {key!r} is not an environment variable name")
        if key in secret and not _SECRET_ENV_NAME.fullmatch(key):
            raise PatternError(
                f"{where}: env {key!r} holds a secret value, which reaches the function as a file of that "
                "name: use letters, digits and underscores, not starting with a digit"
            )
    # Every setting a target may add, so its variable counts as taken (router: the compiled router's).
    settings = {"env_dir": "-", "storage_dir": "/-", "router": "python", "router_binary": "-", **runtime_settings}
    runtime = {
        name
        for role in topology.roles
        for name in role_env(topology, role, {u: "" for u in role.upstreams}, replica="", function_file="-", **settings)
    }
    taken = sorted(set(env) & runtime)
    if taken:
        raise PatternError(f"{where}: env {', '.join(taken)} is set by metaparticle")


def resources(args: "PatternArgs", where: str) -> dict[str, dict[str, str]]:
    """The container resources: the user's sections replace the defaults' sections."""
    given = dict(args.resources or {})
    unknown = sorted(set(given) - {"requests", "limits"})
    if unknown:
        raise PatternError(f"{where}: resources take 'requests' and 'limits', not {', '.join(unknown)}")
    out = {section: dict(given.get(section, DEFAULT_RESOURCES[section])) for section in ("requests", "limits")}
    return {k: v for k, v in out.items() if v}


_QUANTITY = re.compile(r"^([0-9.]+)([a-zA-Z]*)$")
_UNITS = {
    "": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "m": 1e-3,
}


def quantity(value: str) -> float:
    """A Kubernetes quantity ("256Mi", "100m", "1.5") as a number (bytes or cores)."""
    match = _QUANTITY.match(str(value).strip())
    if not match or match.group(2) not in _UNITS:
        raise ValueError(f"{value!r} is not a Kubernetes quantity")
    return float(match.group(1)) * _UNITS[match.group(2)]


def grace_seconds(topology: Topology, drain: float) -> int:
    """Time a replica gets to stop: drain, then finish requests already in flight."""
    return max(30, math.ceil(drain + topology.settings.timeout) + 5)


def config() -> pulumi.Config:
    return pulumi.Config("metaparticle")


def config_bool(key: str) -> Optional[bool]:
    raw = config().get(key)
    if raw is None:
        return None
    return raw.strip().lower() in ("1", "true", "yes", "on")


def claimed_names(topology: Topology) -> set[str]:
    """Object names a pattern takes in its namespace (or Docker host): its roles and its own name."""
    base = dns_name(topology.name)
    return {r.name for r in topology.roles} | {base, f"{base}-env"}


def check_unique(component: "_Pattern", topology: Topology, target: str, namespace: Any) -> None:
    """Refuses a pattern whose object names another pattern of the program already uses there.

    Pulumi's URNs would not collide (the parents differ), but the objects would: one would
    silently overwrite the other in the cluster.
    """
    mine = claimed_names(topology)
    for other in _registry.declared():
        if other is component or getattr(other, "target", None) != target:
            continue
        other_ns = getattr(other, "_mp_namespace", None)
        if isinstance(namespace, pulumi.Output) or isinstance(other_ns, pulumi.Output) or namespace != other_ns:
            continue
        clash = sorted(mine & claimed_names(other.topology))
        if clash:
            raise PatternError(
                f"{type(component).__name__} {topology.name!r}: names {', '.join(clash)} are already used by "
                f"{type(other).__name__} {other.topology.name!r}; give one of them another name or namespace"
            )
    component._mp_namespace = namespace  # type: ignore[attr-defined]
