"""The local container engine: connecting to it, the labels that mark what is ours, its errors."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Callable

from .._errors import Error

if TYPE_CHECKING:
    import docker

PROJECT_LABEL = "io.metaparticle.project"
PATTERN_LABEL = "io.metaparticle.pattern"
ROLE_LABEL = "io.metaparticle.role"
REPLICA_LABEL = "io.metaparticle.replica"
ENTRY_LABEL = "io.metaparticle.entry"
#: On a container that holds the network namespace of others (removed after them).
HOLDER_LABEL = "io.metaparticle.holder"
#: Project label of the runtime-only image (`build_runtime_image`).
RUNTIME_PROJECT = "metaparticle-runtime"
PUBLISH_HOST = "127.0.0.1"

LineSink = Callable[[str], None]
LogSink = Callable[[str, str], None]


class EngineError(Error):
    """The container engine cannot do what was asked; the message is meant for the user."""


# --- the engine ---------------------------------------------------------------------------------


def connect(timeout: float = 120.0) -> "docker.DockerClient":
    """A client of the engine DOCKER_HOST names (else the default socket); EngineError if none answers."""
    try:
        import docker
        from docker.errors import DockerException
    except ImportError:  # pragma: no cover - a dependency of the package
        raise EngineError("the docker Python package is not installed: pip install docker") from None
    where = os.environ.get("DOCKER_HOST") or "the default Docker socket"
    try:
        if not os.environ.get("DOCKER_HOST") and not os.path.exists("/var/run/docker.sock"):
            # No Docker: podman's Docker-compatible API socket, where it serves one.
            runtime_dir = os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
            for sock in ("/run/podman/podman.sock", f"{runtime_dir}/podman/podman.sock"):
                if os.path.exists(sock):
                    where = f"unix://{sock}"
                    client = docker.DockerClient(base_url=where, timeout=int(timeout))
                    client.ping()
                    return client
        client = docker.from_env(timeout=int(timeout))
        client.ping()
    except (DockerException, OSError) as exc:
        raise EngineError(
            f"no container engine answers at {where} ({_first_line(exc)}); start Docker or podman's API "
            "service and set DOCKER_HOST (e.g. unix:///run/podman/podman.sock)"
        ) from None
    return client


def engine_description(client: "docker.DockerClient") -> str:
    """`Docker Engine 27.1.1` / `Podman Engine 4.3.1`."""
    version = client.version()
    names = [c.get("Name", "") for c in version.get("Components") or []]
    name = next((n for n in names if "Engine" in n), "Docker Engine")
    return f"{name} {version.get('Version', '?')}"


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "explanation", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _api_error(what: str, exc: BaseException) -> EngineError:
    message = _first_line(exc)
    if "netavark" in message and "No such file or directory" in message:
        message += " (podman's netavark cannot set up networks without iptables: apt-get install iptables)"
    return EngineError(f"{what}: {message}")
