"""The Docker target's Pulumi applier: `specs.docker` as `pulumi_docker` children of the component.

The network and the containers are exactly what `metaparticle run --target docker` runs through
the Docker SDK (`containers.py`): both apply the same `DockerSpec`, which the component keeps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Optional

import pulumi
import pulumi_docker as docker

from .._image import APP_DIR, RUN_AS, container_image, function_image
from .._errors import PatternError
from .._specs import DATA_DIR, split_env
from .._specs.docker import DRAIN_SECONDS, ENV_DIR, ENV_FILE_MODE, PUBLISH_HOST, ContainerSpec, VolumeSpec, docker_spec
from .._topology import GRPC_PORT, HTTP_PORT, Topology, dns_name
from . import TargetOutputs
from ._shared import (
    check_env,
    check_labels,
    check_unique,
    child_opts,
    grace_seconds,
    object_labels,
    quantity,
    resources,
    role_labels,
)

if TYPE_CHECKING:
    from .._patterns import PatternArgs, _Pattern


def render(component: "_Pattern", topology: Topology, args: "PatternArgs") -> TargetOutputs:
    """Creates the network and the containers of `topology` as children of `component`."""
    where = f"{topology.pattern} {topology.name!r}"
    check_labels(args, where)
    container_resources = resources(args, where)
    check_unique(component, topology, "docker", None)
    check_env(topology, args.env, where, source_dir=APP_DIR, drain_seconds=DRAIN_SECONDS)
    base = dns_name(topology.name)
    image = container_image(component, topology, args, default_platform=None, local=True)
    limits = {k: quantity(v) for k, v in container_resources.get("limits", {}).items() if k in ("memory", "cpu")}
    server_image = component.function_image = function_image(component, topology, args, default_platform=None, local=True)
    server = next((r.container for r in topology.roles if r.container is not None), None)
    if server is not None and split_env(args.env)[1]:
        raise PatternError(
            f"{where}: secret env= values reach an mp.Container's server on Kubernetes (by secretKeyRef) but not on "
            "the docker target, where they would stand in its configured environment; pass them another way"
        )
    server_limits = None
    if server is not None and server.resources is not None:
        server_limits = {k: quantity(v) for k, v in server.resources.get("limits", {}).items() if k in ("memory", "cpu")}
    spec = docker_spec(
        topology,
        # Container and network names are global to the Docker engine: the stack keeps two stacks
        # of one program (dev, test) apart.
        prefix=dns_name(f"{pulumi.get_project()}-{pulumi.get_stack()}"),
        image=image.name if isinstance(image.name, str) else "",
        role_labels={r.name: role_labels(topology, r, args.labels) for r in topology.roles},
        network_labels=object_labels(topology, base, "network", args.labels),
        limits=limits,
        user_env=args.env,
        stop_timeout=grace_seconds(topology, DRAIN_SECONDS),
        uses={name: (used.topology.entry.name, used.docker_spec.network.name) for name, used in component.uses.items()},
        function_image=(server_image.name if isinstance(server_image.name, str) else "") if server_image is not None else "",
        function_limits=server_limits,
        router=image.router,
    )
    component.docker_spec = spec
    network = docker.Network(
        f"{base}-net",
        name=spec.network.name,
        driver=spec.network.driver,
        labels=_labels(spec.network.labels),
        opts=child_opts(component, "docker:index/network:Network", "{base}-net", {"base": base}),
    )
    component.docker_network = network
    used_networks = [used.docker_network for used in component.uses.values()]
    volumes = {v.name: _volume(component, v) for v in spec.volumes}
    entry: Optional[docker.Container] = None
    created: dict[str, docker.Container] = {}
    for container_spec in spec.containers:
        if container_spec.server:
            assert server_image is not None and container_spec.network_of is not None
            _server(component, container_spec, server_image.ref, created[container_spec.network_of])
            continue
        used = used_networks if container_spec.extra_networks else []
        volume = volumes.get(container_spec.volume) if container_spec.volume else None
        holder = created[container_spec.network_of] if container_spec.network_of else None
        container = _container(component, container_spec, image.ref, network, used, volume, holder)
        created[container_spec.name] = container
        if container_spec.entry:
            entry = container
    assert entry is not None
    return TargetOutputs(
        url=_published(entry, HTTP_PORT, "http"),
        grpc_url=_published(entry, GRPC_PORT, "grpc"),
        extra={"image": image.ref},
    )


def _labels(labels: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"label": k, "value": v} for k, v in sorted(labels.items())]


def _go_duration(nanoseconds: int) -> str:
    """Nanoseconds as the Go duration the Docker provider takes ("5s", "500ms")."""
    if nanoseconds % 10**9 == 0:
        return f"{nanoseconds // 10**9}s"
    return f"{nanoseconds // 10**6}ms"


def _volume(component: "_Pattern", spec: VolumeSpec) -> docker.Volume:
    """A stateful role's data volume, kept by `pulumi destroy` (retain_on_delete): the data outlives
    the stack, as Kubernetes keeps the claims; `docker volume rm` removes it."""
    fields = {"base": dns_name(spec.pattern), "role": spec.role}
    return docker.Volume(
        "{role}-data".format(**fields),
        name=spec.name,
        labels=_labels(spec.labels),
        opts=child_opts(component, "docker:index/volume:Volume", "{role}-data", fields, retain_on_delete=True),
    )


def _container(
    component: "_Pattern",
    spec: ContainerSpec,
    image_ref: pulumi.Output[str],
    network: docker.Network,
    used_networks: list[Any],
    volume: Optional[docker.Volume] = None,
    holder: Optional[docker.Container] = None,
) -> docker.Container:
    """One container of the spec; in `holder`'s network namespace when the spec says so (several
    entry routers), else on the pattern's network under its role's name."""
    options = spec.options
    envs: list[Any] = list(options.get("environment", []))
    ports = [
        {"internal": int(port.split("/")[0]), "ip": host, "protocol": port.split("/")[1]}
        for port, (host, _) in options["ports"].items()
    ]
    check = options["healthcheck"]
    extra = _locked_down(spec)
    if spec.env_files:
        # Anonymous volume at ENV_DIR; the provider uploads the files after creating the container,
        # before starting it.
        extra["volumes"] = [{"container_path": ENV_DIR}]
        extra["uploads"] = [
            {
                "file": f"{ENV_DIR}/{key}",
                "content": pulumi.Output.from_input(value).apply(str),
                "owner": str(RUN_AS),
                "group": str(RUN_AS),
                "permissions": f"{ENV_FILE_MODE:04o}",
            }
            for key, value in spec.env_files
        ]
    if volume is not None:
        extra["volumes"] = [*extra.get("volumes", []), {"volume_name": volume.name, "container_path": DATA_DIR}]
    if holder is not None:
        extra["network_mode"] = options["network_mode"]
    else:
        extra["hostname"] = options["hostname"]
        extra["networks_advanced"] = [{"name": network.name, "aliases": list(spec.aliases)}, *({"name": n} for n in spec.extra_networks)]
    if "sysctls" in options:
        extra["sysctls"] = dict(options["sysctls"])
    depends_on = [*used_networks, *([holder] if holder is not None else [])]
    index = spec.replica.rsplit("-", 1)[1]
    template = "{role}-{replica}"
    fields = {"base": dns_name(spec.pattern), "role": spec.role, "replica": index}
    return docker.Container(
        template.format(**fields),
        name=spec.name,
        image=image_ref,
        envs=envs,
        labels=_labels(spec.labels),
        ports=ports,
        healthcheck={
            "tests": list(check["test"]),
            "interval": _go_duration(check["interval"]),
            "timeout": _go_duration(check["timeout"]),
            "retries": check["retries"],
            "start_period": _go_duration(check["start_period"]),
        },
        opts=child_opts(component, "docker:index/container:Container", template, fields, depends_on=depends_on or None),
        **extra,
    )


def _server(component: "_Pattern", spec: ContainerSpec, image_ref: pulumi.Output[str], runtime: docker.Container) -> docker.Container:
    """The user's server of one replica (`mp.Container`), in its runtime container's network namespace."""
    options = spec.options
    index = spec.replica.removesuffix("-function").rsplit("-", 1)[1]
    template = "{role}-{replica}-function"
    fields = {"base": dns_name(spec.pattern), "role": spec.role, "replica": index}
    return docker.Container(
        template.format(**fields),
        name=spec.name,
        image=image_ref,
        envs=list(options["environment"]),
        labels=_labels(spec.labels),
        network_mode=runtime.name.apply(lambda name: f"container:{name}"),
        opts=child_opts(component, "docker:index/container:Container", template, fields, depends_on=[runtime]),
        **_locked_down(spec),
    )


def _locked_down(spec: ContainerSpec) -> dict[str, Any]:
    """What every container of the spec gets as pulumi_docker arguments: its user, read-only root,
    tmpfs, dropped capabilities, security options, restart policy, limits (the options the spec's
    `_locked_down` sets), stop grace and command."""
    options = spec.options
    out: dict[str, Any] = {
        "user": options["user"],
        "read_only": options["read_only"],
        "tmpfs": dict(options["tmpfs"]),
        "capabilities": {"drops": list(options["cap_drop"])},
        "security_opts": list(options["security_opt"]),
        "restart": options["restart_policy"]["Name"],
        "must_run": True,
        "stop_timeout": spec.stop_timeout,
        "destroy_grace_seconds": spec.stop_timeout,
    }
    if "mem_limit" in options:
        out["memory"] = int(options["mem_limit"].rstrip("m"))
    if "nano_cpus" in options:
        out["cpus"] = str(options["nano_cpus"] / 1e9)
    if "command" in options:
        out["command"] = list(options["command"])
    return out


def _published(container: docker.Container, internal: int, scheme: str) -> pulumi.Output[str]:
    """`scheme://127.0.0.1:<host port>` of a published port (Docker picks the host port)."""

    def url(ports: Any) -> str:
        for port in ports or []:
            if port.internal == internal and port.external:
                return f"{scheme}://{PUBLISH_HOST}:{port.external}"
        return ""

    return container.ports.apply(url)
