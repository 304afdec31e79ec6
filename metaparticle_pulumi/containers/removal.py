"""Finding and removing what of a project is on the engine (`metaparticle delete`), by its labels."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .engine import HOLDER_LABEL, PROJECT_LABEL, _api_error
from .images import prune_dangling
from .running import _remove_network, _stop_and_remove

if TYPE_CHECKING:
    import docker

@dataclass
class Leftovers:
    containers: list[str] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)
    dangling_images: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    #: Data volumes of storage= patterns: removed (`volumes`), or left for the next run (`kept_volumes`).
    volumes: list[str] = field(default_factory=list)
    kept_volumes: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.containers or self.networks or self.dangling_images)


def leftovers(client: "docker.DockerClient", project: str) -> Leftovers:
    """What of the project is on the engine: containers, networks, dangling and tagged images."""
    label = {"label": f"{PROJECT_LABEL}={project}"}
    return Leftovers(
        containers=sorted(c.name for c in client.containers.list(all=True, filters=label)),
        networks=sorted(n.name for n in client.networks.list(filters=label)),
        dangling_images=sorted(i.id for i in client.images.list(filters={**label, "dangling": True})),
        images=sorted(t for i in client.images.list(filters=label) for t in i.tags),
    )


def delete(
    client: "docker.DockerClient", project: str, *, images: bool = False, volumes: bool = False, grace: int = 30
) -> Leftovers:
    """Removes every container and network labelled with `project` (its images with `images`, the
    data volumes of its storage= patterns with `volumes`, else they are kept); what was removed."""
    from docker.errors import DockerException

    label = {"label": f"{PROJECT_LABEL}={project}"}
    removed = Leftovers()
    containers = client.containers.list(all=True, filters=label)
    # Namespace holders last: the engine refuses to remove one while others share its namespace.
    for batch in (
        [c for c in containers if c.labels.get(HOLDER_LABEL) != "true"],
        [c for c in containers if c.labels.get(HOLDER_LABEL) == "true"],
    ):
        if batch:
            with ThreadPoolExecutor(max_workers=min(8, len(batch))) as pool:
                list(pool.map(lambda c: _stop_and_remove(c, grace), batch))
    removed.containers = sorted(c.name for c in containers)
    for network in client.networks.list(filters=label):
        try:
            _remove_network(network)
            removed.networks.append(network.name)
        except DockerException as exc:
            raise _api_error(f"removing network {network.name}", exc) from None
    removed.dangling_images = prune_dangling(client, project)
    for volume in client.volumes.list(filters=label):
        if not volumes:
            removed.kept_volumes.append(volume.name)
            continue
        try:
            volume.remove(force=True)
            removed.volumes.append(volume.name)
        except DockerException as exc:
            raise _api_error(f"removing volume {volume.name}", exc) from None
    removed.kept_volumes.sort()
    removed.volumes.sort()
    if images:
        for image in client.images.list(filters=label):
            try:
                client.images.remove(image.id, force=True)
                removed.images.extend(image.tags)
            except DockerException as exc:
                raise _api_error(f"removing image {', '.join(image.tags) or image.id}", exc) from None
    return removed
