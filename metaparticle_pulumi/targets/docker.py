"""The Docker target: one network per pattern and one container per replica on the local engine.

Every replica of a role joins the pattern's network with the role's name as alias, so
`dns:///<role>:50051` resolves to all its replicas (Docker's DNS answers with each) and routers
balance per call over them, as on Kubernetes. Only the entry publishes its ports, on 127.0.0.1.
Containers run as the image's non-root user with a read-only root filesystem and a gRPC health check.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import pulumi
import pulumi_docker as docker

from ..image import APP_DIR, RUN_AS, container_image, function_path
from ..topology import GRPC_PORT, HTTP_PORT, Role, Topology, dns_name, role_env
from . import TargetOutputs
from ._shared import (
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
    from ..patterns import PatternArgs, _Pattern

#: Host address the entry's ports are published on (never all interfaces).
PUBLISH_HOST = "127.0.0.1"
#: Seconds a stopping container keeps serving after turning NOT_SERVING.
DRAIN_SECONDS = 1
HEALTH_CHECK = ["CMD", "python", "-m", "metaparticle_runtime.probe", "--port", str(GRPC_PORT)]


def render(component: "_Pattern", topology: Topology, args: "PatternArgs") -> TargetOutputs:
    """Creates the network and the containers of `topology` as children of `component`."""
    where = f"{topology.pattern} {topology.name!r}"
    check_labels(args, where)
    container_resources = resources(args, where)
    check_unique(component, topology, "docker", None)
    for option in ("public", "autoscale", "tls_secret", "namespace"):
        if getattr(args, option, None):
            pulumi.log.warn(f"{where}: {option} applies to Kubernetes only; the docker target ignores it", resource=component)
    base = dns_name(topology.name)
    # Container and network names are global to the Docker engine: the stack keeps two stacks of
    # one program (dev, test) apart.
    prefix = dns_name(f"{pulumi.get_project()}-{pulumi.get_stack()}")
    image = container_image(component, topology, args, default_platform=None, local=True)

    network = docker.Network(
        f"{base}-net",
        name=f"{prefix}-{base}",
        driver="bridge",
        labels=_labels(object_labels(topology, base, "network", args.labels)),
        opts=child_opts(component, "docker:index/network:Network", "{base}-net", {"base": base}),
    )
    addresses = {r.name: f"dns:///{r.name}:{GRPC_PORT}" for r in topology.roles}
    entry: Optional[docker.Container] = None
    for role in topology.roles:
        for i in range(role.replicas):
            container = _container(component, topology, role, i, args, image.ref, network, addresses, container_resources, prefix)
            if role.entry and i == 0:
                entry = container
    assert entry is not None
    return TargetOutputs(
        url=_published(entry, HTTP_PORT, "http"),
        grpc_url=_published(entry, GRPC_PORT, "grpc"),
        extra={"image": image.ref},
    )


def _labels(labels: dict[str, str]) -> list[dict[str, str]]:
    return [{"label": k, "value": v} for k, v in sorted(labels.items())]


def _container(
    component: "_Pattern",
    topology: Topology,
    role: Role,
    index: int,
    args: "PatternArgs",
    image_ref: pulumi.Output[str],
    network: docker.Network,
    addresses: dict[str, str],
    container_resources: dict[str, dict[str, str]],
    prefix: str,
) -> docker.Container:
    replica = f"{role.name}-{index}"
    env = role_env(
        topology,
        role,
        addresses,
        replica=replica,
        function_file=function_path(role.function),
        source_dir=APP_DIR,
        drain_seconds=DRAIN_SECONDS,
    )
    taken = sorted(set(args.env) & set(env))
    if taken:
        from ..patterns import PatternError

        raise PatternError(f"{topology.pattern} {topology.name!r}: env {', '.join(taken)} is set by metaparticle")
    envs: list[Any] = [f"{k}={v}" for k, v in env.items()]
    envs += [pulumi.Output.concat(k, "=", pulumi.Output.from_input(args.env[k]).apply(str)) for k in sorted(args.env)]
    ports = []
    if role.entry and index == 0:
        ports = [
            {"internal": HTTP_PORT, "ip": PUBLISH_HOST, "protocol": "tcp"},
            {"internal": GRPC_PORT, "ip": PUBLISH_HOST, "protocol": "tcp"},
        ]
    limits = container_resources.get("limits", {})
    extra: dict[str, Any] = {}
    if "memory" in limits:
        extra["memory"] = max(6, int(quantity(limits["memory"]) // 2**20))
    if "cpu" in limits:
        extra["cpus"] = str(quantity(limits["cpu"]))
    template = "{role}-{replica}"
    fields = {"base": dns_name(topology.name), "role": role.name, "replica": index}
    return docker.Container(
        template.format(**fields),
        name=f"{prefix}-{replica}",
        hostname=replica,
        image=image_ref,
        envs=envs,
        labels=_labels(role_labels(topology, role, args.labels)),
        networks_advanced=[{"name": network.name, "aliases": [role.name]}],
        ports=ports,
        user=f"{RUN_AS}:{RUN_AS}",
        read_only=True,
        tmpfs={"/tmp": "rw,noexec,nosuid,size=64m"},
        capabilities={"drops": ["ALL"]},
        security_opts=["no-new-privileges:true"],
        healthcheck={"tests": HEALTH_CHECK, "interval": "5s", "timeout": "3s", "retries": 3, "start_period": "10s"},
        restart="unless-stopped",
        must_run=True,
        stop_timeout=grace_seconds(topology, DRAIN_SECONDS),
        destroy_grace_seconds=grace_seconds(topology, DRAIN_SECONDS),
        opts=child_opts(component, "docker:index/container:Container", template, fields),
        **extra,
    )


def _published(container: docker.Container, internal: int, scheme: str) -> pulumi.Output[str]:
    """`scheme://127.0.0.1:<host port>` of a published port (Docker picks the host port)."""

    def url(ports: Any) -> str:
        for port in ports or []:
            if port.internal == internal and port.external:
                return f"{scheme}://{PUBLISH_HOST}:{port.external}"
        return ""

    return container.ports.apply(url)
