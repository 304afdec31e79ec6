"""What the Docker target runs, as plain data: one network per pattern, one container per replica.

A pure function of the Topology and the deployment settings (no Pulumi, no engine, no I/O). Two
appliers consume it: the Pulumi layer (`_targets/docker.py`, `pulumi_docker` children for
`pulumi up`) and the Docker SDK (`containers.py`, `metaparticle run --target docker`), so both run
exactly the same containers. `options` are the Docker SDK's `containers.create` arguments.

Every replica of a role joins the pattern's network with the role's name as alias, so
`dns:///<role>:50051` resolves to all its replicas (Docker's DNS answers with each) and routers
balance per call over them, as on Kubernetes. The entry publishes its HTTP and gRPC ports; every
container publishes its operations port `OPS_PORT` (Prometheus metrics, the replica's /healthz), so
`run --target docker` lists a `metrics_url` per container; all on 127.0.0.1, on host ports the
engine picks. Containers run as the image's non-root user with a read-only root filesystem and a
gRPC health check.

Several entry routers (`routers=`, 2 by default) share one network namespace, as a pod's
containers do: a holder container (`<role>-net`, running nothing) joins the network under the
role's name and publishes the entry's ports; each router joins its namespace and listens on the
entry's ports with SO_REUSEPORT, and on an operations port of its own (OPS_PORT + index, its
health check). The kernel spreads new connections over the routers that listen, so one killed
under load leaves new connections from the host (or the network) to the others; with
`net.ipv4.tcp_migrate_req` the connections waiting in its listen queue move too. A request in
flight on the killed router fails, as on any target.
Secret `env=` values are never in a container's configured environment: each goes as a file (mode
0400, owned by the runtime's user) into an anonymous volume at `ENV_DIR`, written before the
container starts, and the runtime loads them into the function's `os.environ`.
A role whose function is an `mp.Container` gets, next to each replica's runtime container, a
container of the user's server that joins the runtime container's network namespace
(`network_mode="container:<runtime>"`), as a second container of a pod would: the runtime calls it on
127.0.0.1, nothing else reaches it. It is hardened as ours (read-only root, /tmp tmpfs, no
capabilities, no new privileges, the runtime's user and limits) unless its `mp.Container` relaxes it.
A role with storage= mounts a named volume `<prefix>-<role>-data` at DATA_DIR (`ctx.storage`):
removing the containers leaves it, so the next run finds its data; `delete --volumes` removes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from .._image import APP_DIR, RUN_AS, function_path
from .._topology import GRPC_PORT, HTTP_PORT, ROUTER_KINDS, Role, Topology, container_env, dns_name, role_env
from . import DATA_DIR, ENV_DIR, OPS_PORT, split_env

#: Host address the entry's ports are published on (never all interfaces).
PUBLISH_HOST = "127.0.0.1"
#: Seconds a stopping container keeps serving after turning NOT_SERVING.
DRAIN_SECONDS = 1
#: The runtime's health probe, run inside a container (exit 0: SERVING).
PROBE = ("python", "-m", "metaparticle_runtime.probe")
#: Health check timing, in seconds.
HEALTH = {"interval": 5, "timeout": 3, "start_period": 10}
HEALTH_RETRIES = 3
RESTART = "unless-stopped"
TMPFS = {"/tmp": "rw,noexec,nosuid,size=64m"}
SECURITY_OPT = ("no-new-privileges:true",)
#: Secret env values are written into ENV_DIR, one file per variable: an anonymous volume (the root
#: filesystem is read-only, and the engine writes into volumes of a created container).
#: Mode of each secret env file, owned by the runtime's user.
ENV_FILE_MODE = 0o400
#: What a network namespace holder runs: nothing, until it is stopped. It is PID 1 of its
#: container, which the kernel sends no signal its program does not handle: SIGTERM ends it.
HOLD = ("python", "-c", "import signal, sys; signal.signal(signal.SIGTERM, lambda *_: sys.exit(0)); signal.pause()")
HOLDER_PROBE = ("true",)
#: A router that dies hands the connections waiting in its listen queue to another router.
HOLDER_SYSCTLS = {"net.ipv4.tcp_migrate_req": "1"}


@dataclass(frozen=True)
class NetworkSpec:
    name: str
    pattern: str
    labels: Mapping[str, str]
    driver: str = "bridge"


@dataclass(frozen=True)
class VolumeSpec:
    """A named volume that keeps one stateful role's data."""

    #: The engine's name of the volume (global to the engine).
    name: str
    pattern: str
    role: str
    labels: Mapping[str, str]


@dataclass(frozen=True)
class ContainerSpec:
    """One container: one replica of one role."""

    #: The engine's name of the container (global to the engine).
    name: str
    pattern: str
    role: str
    #: The replica's own name (its host name, and the runtime's replica).
    replica: str
    image: str
    network: str
    aliases: tuple[str, ...]
    labels: Mapping[str, str]
    #: Everything else `containers.create` takes (environment, user, read_only, tmpfs, ports...).
    options: Mapping[str, Any]
    #: Command run inside the container that exits 0 once it serves.
    probe: tuple[str, ...] = PROBE
    #: Seconds a stopping container gets before it is killed.
    stop_timeout: int = 30
    entry: bool = False
    #: Networks of the patterns this one `uses`, joined too (their entries answer there by alias).
    extra_networks: tuple[str, ...] = ()
    #: The user's secret `env=` values (Pulumi Outputs, which only an applier can resolve), sorted:
    #: each applier writes them as files into `ENV_DIR` before the container starts.
    env_files: tuple[tuple[str, Any], ...] = ()
    #: The named volume mounted at DATA_DIR (storage=), else None.
    volume: Optional[str] = None
    #: The container whose network namespace this one joins (`network_mode="container:<it>"`), else
    #: None: a namespace holder for several entry routers, which publishes their ports, or a
    #: replica's runtime container for the user's server. It then joins no network of its own.
    network_of: Optional[str] = None
    #: The user's server of an `mp.Container` function (in its runtime's namespace): its own image,
    #: no probe (ready once running), nothing published.
    server: bool = False
    #: The port of its operations endpoint (metrics, /healthz) inside its network namespace.
    metrics_port: int = OPS_PORT
    #: Holds a network namespace for others (runs no role; removed after them).
    holder: bool = False


@dataclass(frozen=True)
class DockerSpec:
    """A pattern on the Docker target."""

    network: NetworkSpec
    containers: tuple[ContainerSpec, ...] = field(default_factory=tuple)
    volumes: tuple[VolumeSpec, ...] = field(default_factory=tuple)


def docker_spec(
    topology: Topology,
    *,
    prefix: str,
    image: str,
    role_labels: Mapping[str, Mapping[str, str]],
    network_labels: Mapping[str, str],
    limits: Mapping[str, float],
    user_env: Mapping[str, Any],
    stop_timeout: int,
    uses: Mapping[str, tuple[str, str]] = {},
    function_image: str = "",
    function_limits: Optional[Mapping[str, float]] = None,
    router: Mapping[str, str] = {},
) -> DockerSpec:
    """The network and containers of `topology`.

    `prefix` keeps engine-global names of two stacks apart; `role_labels` are each role's labels;
    `limits` the container limits in bytes (`memory`) and cores (`cpu`); `uses` maps each name
    of `topology.uses` to (its entry's network alias, its network); `router` the RuntimeConfig
    settings of Spread and Shard routers (the compiled router when the image carries it).
    `function_image` is the image of the pattern's `mp.Container` function, `function_limits` its
    limits (default `limits`).
    """
    base = dns_name(topology.name)
    network = NetworkSpec(name=f"{prefix}-{base}", pattern=topology.name, labels=dict(network_labels))
    addresses = {r.name: f"dns:///{r.name}:{GRPC_PORT}" for r in topology.roles}
    limit_options = _limits(limits)
    plain_env, secret_env = split_env(user_env)
    env_files = tuple(sorted(secret_env.items()))
    # Not a bind mount of a host directory: nothing secret is left on the host's disk by name.
    env_mounts = [{"Target": ENV_DIR, "Type": "volume", "ReadOnly": False}] if env_files else []
    containers = []
    volumes = []
    for role in topology.roles:
        volume = f"{prefix}-{role.name}-data" if role.storage is not None else None
        if volume is not None:
            volumes.append(VolumeSpec(volume, topology.name, role.name, dict(role_labels[role.name])))
        # Several entry routers share one network namespace, held by a container of its own (see
        # the module's docstring): the entry's ports are published once, and each router listens
        # on them with SO_REUSEPORT, so the kernel spreads new connections over the live ones.
        calls_out = bool(uses) and role.kind in ("function", "gather")
        # Not for a role whose replicas call used patterns: they join those networks, and a
        # shared namespace joins none of its own.
        shared = role.entry and role.replicas > 1 and role.kind in ("spread", "shard", "gather") and not calls_out
        holder = f"{prefix}-{role.name}-net"
        if shared:
            containers.append(
                _holder(holder, topology.name, role.name, role.replicas, image, network.name, role_labels[role.name], stop_timeout, limit_options)
            )
        for index in range(role.replicas):
            replica = f"{role.name}-{index}"
            metrics_port = OPS_PORT + index if shared else OPS_PORT
            env = role_env(
                topology,
                role,
                addresses,
                replica=replica,
                function_file=function_path(role.function),
                source_dir=APP_DIR,
                drain_seconds=DRAIN_SECONDS,
                env_dir=ENV_DIR if env_files else None,
                metrics_port=metrics_port,
                uses={name: f"dns:///{alias}:{GRPC_PORT}" for name, (alias, _) in uses.items()},
                storage_dir=DATA_DIR if volume is not None else None,
                **({"reuse_port": True} if shared else {}),
                **(router if role.kind in ROUTER_KINDS else {}),
            )
            env.update(plain_env)
            entry = role.entry and index == 0 and not shared
            ports: dict[str, tuple[str, Optional[int]]] = {} if shared else {f"{OPS_PORT}/tcp": (PUBLISH_HOST, None)}
            if entry:
                ports.update({f"{HTTP_PORT}/tcp": (PUBLISH_HOST, None), f"{GRPC_PORT}/tcp": (PUBLISH_HOST, None)})
            # In a shared namespace the gRPC port answers for whichever router the kernel picks:
            # each checks its own operations port instead.
            check = ("--ops-port", str(metrics_port)) if shared else ("--port", str(GRPC_PORT))
            options: dict[str, Any] = {
                **({"network_mode": f"container:{holder}"} if shared else {"hostname": replica}),
                "environment": [f"{k}={v}" for k, v in env.items()],
                "ports": ports,
                "healthcheck": _healthcheck((*PROBE, *check)),
                **_locked_down(limit_options),
            }
            mounts = [*env_mounts]
            if volume is not None:
                mounts.append({"Target": DATA_DIR, "Source": volume, "Type": "volume", "ReadOnly": False})
            if mounts:
                options["mounts"] = mounts
            containers.append(
                ContainerSpec(
                    name=f"{prefix}-{replica}",
                    pattern=topology.name,
                    role=role.name,
                    replica=replica,
                    image=image,
                    network=network.name,
                    aliases=() if shared else (role.name,),
                    labels=dict(role_labels[role.name]),
                    options=options,
                    probe=(*PROBE, *check),
                    stop_timeout=stop_timeout,
                    entry=entry,
                    env_files=env_files,
                    extra_networks=tuple(sorted({net for _, net in uses.values()})) if calls_out else (),
                    volume=volume,
                    network_of=holder if shared else None,
                    metrics_port=metrics_port,
                )
            )
            if role.container is not None:
                server_limits = _limits(function_limits if function_limits is not None else limits)
                containers.append(
                    _server(topology, role, containers[-1], function_image, plain_env, server_limits)
                )
    return DockerSpec(network, tuple(containers), tuple(volumes))


def _locked_down(limits: Mapping[str, Any], *, user: int = RUN_AS, read_only: bool = True) -> dict[str, Any]:
    """The `containers.create` options every container of the spec runs under (runtime, namespace
    holder, user's server): a non-root user, a read-only root with a /tmp tmpfs, no capabilities, no
    new privileges, restarted unless stopped, and `limits` (from `_limits`). Only a user's server
    relaxes `user` or `read_only` (its `mp.Container` says so). `_targets/docker.py` reads these keys."""
    return {
        "user": f"{user}:{user}",
        "read_only": read_only,
        "tmpfs": dict(TMPFS),
        "cap_drop": ["ALL"],
        "security_opt": list(SECURITY_OPT),
        "restart_policy": {"Name": RESTART},
        **limits,
    }


def _healthcheck(test: tuple[str, ...]) -> dict[str, Any]:
    """The engine's health check running `test` inside the container, at the common timing."""
    return {"test": ["CMD", *test], **{key: seconds * 10**9 for key, seconds in HEALTH.items()}, "retries": HEALTH_RETRIES}


def _limits(limits: Mapping[str, float]) -> dict[str, Any]:
    """Container limits in bytes (`memory`) and cores (`cpu`) as `containers.create` options."""
    extra: dict[str, Any] = {}
    if "memory" in limits:
        extra["mem_limit"] = f"{max(6, int(limits['memory'] // 2**20))}m"
    if "cpu" in limits:
        extra["nano_cpus"] = int(limits["cpu"] * 1e9)
    return extra


def _server(
    topology: Topology, role: Role, runtime: ContainerSpec, image: str, plain_env: Mapping[str, Any], limits: Mapping[str, Any]
) -> ContainerSpec:
    """The user's server of one replica (`mp.Container`), in its runtime container's network namespace."""
    container = role.container
    assert container is not None
    if not image:
        raise ValueError(f"role {role.name} runs an mp.Container: its image is needed (function_image=)")
    env = {**plain_env, **container_env(topology, role, replica=runtime.replica, port=container.port)}
    options: dict[str, Any] = {
        "network_mode": f"container:{runtime.name}",
        "environment": [f"{k}={v}" for k, v in env.items()],
        **_locked_down(
            limits,
            user=container.run_as_user if container.run_as_user is not None else RUN_AS,
            read_only=container.read_only_root_filesystem,
        ),
    }
    if container.command is not None:
        options["command"] = list(container.command)
    return ContainerSpec(
        name=f"{runtime.name}-function",
        pattern=runtime.pattern,
        role=runtime.role,
        replica=f"{runtime.replica}-function",
        image=image,
        network="",
        aliases=(),
        labels=dict(runtime.labels),
        options=options,
        probe=(),
        stop_timeout=runtime.stop_timeout,
        network_of=runtime.name,
        server=True,
    )


def _holder(
    name: str,
    pattern: str,
    role: str,
    routers: int,
    image: str,
    network: str,
    labels: Mapping[str, str],
    stop_timeout: int,
    limits: Mapping[str, Any],
) -> ContainerSpec:
    """The container that holds the network namespace of a role's `routers` entry routers, as a
    pod's infrastructure container does: it joins the network under the role's name, publishes the
    entry's ports and each router's operations port (OPS_PORT + index), lets a closing listener's
    pending connections move to another (`net.ipv4.tcp_migrate_req`), and runs nothing else."""
    ports = {f"{port}/tcp": (PUBLISH_HOST, None) for port in (HTTP_PORT, GRPC_PORT, *(OPS_PORT + i for i in range(routers)))}
    options: dict[str, Any] = {
        "hostname": role,
        "command": list(HOLD),
        "ports": ports,
        "sysctls": dict(HOLDER_SYSCTLS),
        "healthcheck": _healthcheck(HOLDER_PROBE),
        **_locked_down(limits),
    }
    return ContainerSpec(
        name=name,
        pattern=pattern,
        role=role,
        replica=f"{role}-net",
        image=image,
        network=network,
        aliases=(role,),
        labels=dict(labels),
        options=options,
        probe=HOLDER_PROBE,
        stop_timeout=stop_timeout,
        entry=True,
        holder=True,
    )
