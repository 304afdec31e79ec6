"""The plan: a program's images, networks and containers for the engine, from each pattern's DockerSpec."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Optional

from .._outputs import resolved
from .._image import build_args
from .._specs.docker import ContainerSpec, DockerSpec, NetworkSpec, VolumeSpec
from .._topology import HTTP_PORT, Topology
from .engine import ENTRY_LABEL, HOLDER_LABEL, PATTERN_LABEL, PROJECT_LABEL, REPLICA_LABEL, ROLE_LABEL, EngineError

if TYPE_CHECKING:
    from .._program import Evaluation

@dataclass(frozen=True)
class ImageSpec:
    """An image to build: a pattern's context, its `repository:tag` and the Dockerfile's build args."""

    pattern: str
    name: str
    context: Path
    build_args: Mapping[str, str]


@dataclass
class Plan:
    """Everything to create for a program, in order: images, networks, containers."""

    project: str
    images: list[ImageSpec] = field(default_factory=list)
    networks: list[NetworkSpec] = field(default_factory=list)
    containers: list[ContainerSpec] = field(default_factory=list)
    topologies: list[Topology] = field(default_factory=list)
    #: Data volumes of storage= roles: created when missing, never removed by a stop.
    volumes: list[VolumeSpec] = field(default_factory=list)
    #: Patterns whose shard count may differ from their volumes' (reshard=True).
    resharding: set[str] = field(default_factory=set)

    def container(self, name: str) -> ContainerSpec:
        for spec in self.containers:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def entries(self) -> list[ContainerSpec]:
        return [c for c in self.containers if c.entry]


def deploying_python() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def plan(evaluation: "Evaluation", *, port: Optional[int] = None, python_version: Optional[str] = None) -> Plan:
    """The containers of a program evaluated for the docker target (`evaluate(dir, target="docker")`):
    each pattern's `DockerSpec` (what `pulumi up` would create) and the image it builds.

    `port`: the host port (on 127.0.0.1) of the first pattern's HTTP entry; every other published
    port is chosen by the engine. `python_version`: the image's Python (`3.11`), by default the
    deploying Python's minor version, which by-value functions need.
    """
    out = Plan(evaluation.project)
    others = [p for p in evaluation.patterns if getattr(p, "target", None) != "docker"]
    if others:
        names = ", ".join(f"{type(p).__name__} {p.topology.name!r} ({p.target})" for p in others)
        raise EngineError(f"only patterns of the docker target run as containers here; not: {names}")
    python = python_version or None
    if python is not None and not re.fullmatch(r"3\.\d+", python):
        raise EngineError(f"the Python version is major.minor (3.11), got {python!r}")
    first_entry = True
    for pattern in evaluation.patterns:
        topology: Topology = pattern.topology
        spec: DockerSpec = pattern.docker_spec
        out.topologies.append(topology)
        image_name = spec.containers[0].image if spec.containers else ""
        if pattern.image is not None and pattern.image.context is not None:
            image = _image_spec(topology, pattern.image.name, pattern.image.context.path, python)
            out.images.append(image)
            image_name = image.name
        elif not image_name:
            image_name = str(resolved(pattern.args.image))
        server_image = getattr(pattern, "function_image", None)
        if server_image is not None and server_image.context is not None:
            # The user's own Dockerfile, as it is: no build args of ours.
            out.images.append(ImageSpec(topology.name, str(server_image.name), server_image.context.path, {}))
        labels = dict(spec.network.labels)
        labels.update({PROJECT_LABEL: out.project, PATTERN_LABEL: topology.name})
        out.networks.append(NetworkSpec(spec.network.name, topology.name, labels, spec.network.driver))
        for volume in spec.volumes:
            volume_labels = {**volume.labels, PROJECT_LABEL: out.project, PATTERN_LABEL: topology.name, ROLE_LABEL: volume.role}
            out.volumes.append(replace(volume, labels=volume_labels))
        if getattr(pattern.args, "reshard", False):
            out.resharding.add(topology.name)
        # Routers last: they resolve their upstreams' names when they start, and the engine's DNS
        # answers only with containers already started, so a router started first would send
        # every request to whichever replica it found. A namespace holder comes before the routers
        # that join it (the sort keeps the spec's order).
        for container in sorted(spec.containers, key=lambda c: bool(topology.role(c.role).upstreams)):
            host_port = port if container.entry and first_entry else None
            image = container.image if container.server else image_name  # a user's server: its own
            out.containers.append(_for_engine(out.project, container, image, host_port))
            if container.entry:
                first_entry = False
    if not out.containers:
        raise EngineError(f"{evaluation.directory} declares no patterns for the docker target")
    return out


def check_volumes(plan: Plan, existing: Mapping[str, Mapping[str, str]]) -> None:
    """Refuses to run a Shard whose shard count differs from the data volumes the engine holds for
    it (`existing`: volume name -> labels) unless it says reshard=True: about 1/(N+1) of the keys
    would belong to another shard than the volume holding their data."""
    for topology in plan.topologies:
        if topology.pattern != "Shard" or topology.name in plan.resharding:
            continue
        planned = {v.name for v in plan.volumes if v.pattern == topology.name}
        if not planned:
            continue
        held = {
            name for name, labels in existing.items()
            if labels.get(PROJECT_LABEL) == plan.project and labels.get(PATTERN_LABEL) == topology.name
        }
        if held and held != planned:
            missing, extra = sorted(planned - held), sorted(held - planned)
            raise EngineError(
                f"Shard {topology.name!r} has {len(planned)} shards but the engine holds data volumes of "
                f"{len(held)} ({', '.join(sorted(held))}): about 1/{max(len(held), len(planned))} of the keys would "
                "belong to another shard than the volume holding their data. Go back to the former shard count, "
                "or move the data yourself and pass reshard=True"
                + (f" (then remove {', '.join(extra)} with docker volume rm once emptied)" if extra else "")
                + (f"; new: {', '.join(missing)}" if missing else "")
            )


def _image_spec(topology: Topology, name: str, context: Path, python: Optional[str]) -> ImageSpec:
    args = build_args()
    if python is not None:
        pickled = sorted({r.function.python for r in topology.roles if r.function is not None and r.function.by_value})
        wrong = [v for v in pickled if v != python]
        if wrong:
            raise EngineError(
                f"{topology.pattern} {topology.name!r}: functions shipped by value were pickled by Python "
                f"{', '.join(wrong)} and load only there, not in a Python {python} image; define them in a "
                "module of the program (they then travel by reference) or deploy with that Python"
            )
    if python is not None and python != args.get("PYTHON_VERSION"):
        # The content tag stands for the default build args: another Python is another image.
        args = build_args(python)
        name = f"{name}-py{python}"
    return ImageSpec(topology.name, name, context, args)


def _for_engine(project: str, spec: ContainerSpec, image: str, host_port: Optional[int]) -> ContainerSpec:
    """`spec` as the Docker SDK creates it: the user's env resolved, the image built here, our
    labels (to find the project's containers again), the entry on `host_port` when given."""
    options = dict(spec.options)
    if host_port is not None:
        options["ports"] = {
            key: (host, host_port if key == f"{HTTP_PORT}/tcp" else chosen) for key, (host, chosen) in options["ports"].items()
        }
    labels = dict(spec.labels)
    labels.update({PROJECT_LABEL: project, PATTERN_LABEL: spec.pattern, ROLE_LABEL: spec.role, REPLICA_LABEL: spec.replica})
    if spec.entry:
        labels[ENTRY_LABEL] = "true"
    if spec.holder:
        labels[HOLDER_LABEL] = "true"
    env_files = tuple((key, str(resolved(value))) for key, value in spec.env_files)
    return replace(spec, image=image, labels=labels, options=options, env_files=env_files)
