"""The labels every object of a pattern carries (Kubernetes objects, Docker containers and networks):
the standard app.kubernetes.io set, plus the user's own."""

from __future__ import annotations

import re
from typing import Mapping

from .._topology import Role, Topology, dns_name

#: Labels metaparticle sets itself (selectors rely on them): users cannot override them.
NAME_LABEL = "app.kubernetes.io/name"
INSTANCE_LABEL = "app.kubernetes.io/instance"
COMPONENT_LABEL = "app.kubernetes.io/component"
PART_OF_LABEL = "app.kubernetes.io/part-of"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
RESERVED_LABELS = (NAME_LABEL, INSTANCE_LABEL, COMPONENT_LABEL, PART_OF_LABEL, MANAGED_BY_LABEL)

LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def label_value(value: str) -> str:
    """`value` if Kubernetes accepts it as a label value, else its DNS-safe form."""
    if len(value) <= 63 and LABEL_VALUE.match(value):
        return value
    return dns_name(value)


def selector_labels(topology: Topology, role_name: str) -> dict[str, str]:
    """The labels that select the pods of one role (a subset of their labels, never changed later)."""
    return {NAME_LABEL: role_name, INSTANCE_LABEL: label_value(topology.name)}


def object_labels(topology: Topology, name: str, component: str, extra: Mapping[str, str]) -> dict[str, str]:
    """Every object's labels: the standard app.kubernetes.io set plus the user's own."""
    labels = dict(extra)
    labels.update(
        {
            NAME_LABEL: name,
            INSTANCE_LABEL: label_value(topology.name),
            COMPONENT_LABEL: label_value(component),
            PART_OF_LABEL: "metaparticle",
            MANAGED_BY_LABEL: "pulumi",
        }
    )
    return labels


def role_labels(topology: Topology, role: Role, extra: Mapping[str, str]) -> dict[str, str]:
    return object_labels(topology, role.name, role.component, extra)
