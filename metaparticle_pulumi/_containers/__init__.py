"""A program's patterns as real containers on the local Docker-compatible engine (Docker, podman).

The Docker SDK applier of `specs.docker`: what runs is the `DockerSpec` each pattern of the docker
target keeps, the same spec the Pulumi layer (_targets/docker.py) turns into `pulumi_docker`
children for `pulumi up`. Each pattern's image is built from its context with the runtime's
Dockerfile; its network and containers are created through the Docker Engine API instead of the
Pulumi provider, with exactly the same environment (`RuntimeConfig`), network aliases (role
names: `dns:///<role>:50051` finds every replica), user, read-only root filesystem, /tmp tmpfs,
capabilities and limits.

Everything made here is labelled `io.metaparticle.project` (containers and networks also
`io.metaparticle.pattern`, `.role`, `.replica`) and found again by label: `delete` needs no state,
and nothing of ours (container, network, dangling image) is left behind.

    client = connect()
    deployment = Deployment(client, plan(evaluate(directory, target="docker"), port=8080))
    deployment.build(); deployment.start(); deployment.wait_ready(60)
    ...
    deployment.stop()
"""

from __future__ import annotations

from .._client import wait_healthz
from .._specs.docker import PROBE, ContainerSpec, NetworkSpec
from .engine import (
    ENTRY_LABEL,
    PATTERN_LABEL,
    PROJECT_LABEL,
    PUBLISH_HOST,
    REPLICA_LABEL,
    ROLE_LABEL,
    RUNTIME_PROJECT,
    EngineError,
    connect,
    engine_description,
)
from .images import BuiltImage, build, build_runtime_image, prune_dangling
from .planning import ImageSpec, Plan, deploying_python, plan
from .removal import Leftovers, delete, leftovers
from .running import ContainerFailed, Deployment, exec_probe

__all__ = [
    "BuiltImage", "ContainerFailed", "ContainerSpec", "Deployment", "EngineError", "ImageSpec", "Leftovers",
    "NetworkSpec", "Plan", "build", "build_runtime_image", "connect", "delete", "engine_description",
    "exec_probe", "leftovers", "plan", "prune_dangling", "wait_healthz",
    "ENTRY_LABEL", "PATTERN_LABEL", "PROBE", "PROJECT_LABEL", "PUBLISH_HOST", "REPLICA_LABEL", "ROLE_LABEL",
    "RUNTIME_PROJECT", "deploying_python",
]
