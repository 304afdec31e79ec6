"""`mp.Container`: a function written in any language, as an HTTP server of the user's.

Any server that answers `POST /` (a JSON request, a JSON result) and `GET /healthz` (200 when it
serves) is a function. The role's runtime runs next to it as its adapter (a second process
locally, a second container in the pod or in the runtime container's network namespace), so
routers and roots stay the same whatever language the function is written in.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, replace
from typing import Any, Mapping, Optional, Sequence, Union

from ._errors import PatternError

#: Ports the runtime listens on inside a pod or container next to the user's server.
_RUNTIME_PORTS = {50051: "the runtime's gRPC port", 9090: "the runtime's metrics port"}


@dataclass(frozen=True)
class Container:
    """The function as an HTTP server: `function=mp.Container(command=["node", "server.js"])`.

    `build`: a directory with a Dockerfile (relative to the program), built for the container
    targets; the local target runs `command` there. `command`: how to start the server (locally,
    and in the image when given). `image`: a prebuilt image instead of `build`. `port`: where the
    server listens in its container (it is told in `PORT`; locally it gets a free port there).
    `read_only_root_filesystem`, `run_as_user`, `resources`: relax the hardening the container
    gets on Kubernetes (read-only root with a writable /tmp, non-root, requests/limits).
    """

    build: Optional[Union[str, "os.PathLike[str]"]] = None
    command: Optional[Union[str, Sequence[str]]] = None
    image: Optional[str] = None
    port: int = 8080
    read_only_root_filesystem: bool = True
    run_as_user: Optional[int] = None
    resources: Optional[Mapping[str, Mapping[str, str]]] = None

    def __post_init__(self) -> None:
        if self.build is None and self.image is None and self.command is None:
            raise PatternError("mp.Container needs command= (local), and build= (a directory with a Dockerfile) or image= (containers)")
        if self.build is not None and self.image is not None:
            raise PatternError("mp.Container: build= and image= exclude each other (build one, or run a prebuilt one)")
        if self.build is not None:
            if not isinstance(self.build, (str, os.PathLike)) or not os.fspath(self.build):
                raise PatternError(f"mp.Container: build must be a directory path, got {self.build!r}")
            object.__setattr__(self, "build", os.fspath(self.build))
        if self.image is not None and (not isinstance(self.image, str) or not self.image or any(c.isspace() for c in self.image)):
            raise PatternError(f"mp.Container: image must be an image reference like 'ghcr.io/me/fn:1.0', got {self.image!r}")
        object.__setattr__(self, "command", _command(self.command))
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 1 <= self.port <= 65535:
            raise PatternError(f"mp.Container: port must be a TCP port (1-65535), got {self.port!r}")
        if self.port in _RUNTIME_PORTS:
            raise PatternError(f"mp.Container: port {self.port} is {_RUNTIME_PORTS[self.port]} next to the server; choose another")
        if self.read_only_root_filesystem not in (True, False):
            raise PatternError(f"mp.Container: read_only_root_filesystem must be True or False, got {self.read_only_root_filesystem!r}")
        if self.run_as_user is not None and (isinstance(self.run_as_user, bool) or not isinstance(self.run_as_user, int) or self.run_as_user < 0):
            raise PatternError(f"mp.Container: run_as_user must be a user id (0 or more), got {self.run_as_user!r}")
        if self.resources is not None:
            _check_resources(self.resources)

    def __hash__(self) -> int:
        return hash((self.build, self.command, self.image, self.port, self.read_only_root_filesystem, self.run_as_user))

    def resolved(self, source_dir: str) -> "Container":
        """This container with `build` as an absolute directory (relative to the program's)."""
        if self.build is None:
            return self
        path = os.path.abspath(os.path.join(source_dir, os.fspath(self.build)))
        if not os.path.isdir(path):
            raise PatternError(f"mp.Container: build directory {path} does not exist")
        return replace(self, build=path)

    def workdir(self, source_dir: str) -> str:
        """Where the local target runs `command`: the build directory, else the program's."""
        return self.build if self.build is not None else source_dir  # type: ignore[return-value]


def _command(command: Any) -> Optional[tuple[str, ...]]:
    if command is None:
        return None
    if isinstance(command, str):
        try:
            parts = shlex.split(command)
        except ValueError as exc:
            raise PatternError(f"mp.Container: command {command!r} cannot be split into arguments: {exc}") from None
    elif isinstance(command, Sequence) and all(isinstance(p, str) for p in command):
        parts = list(command)
    else:
        raise PatternError(f"mp.Container: command must be a list of strings or a string, got {command!r}")
    if not parts or not parts[0]:
        raise PatternError(f"mp.Container: command must name a program to run, got {command!r}")
    return tuple(parts)


def _check_resources(resources: Any) -> None:
    if not isinstance(resources, Mapping) or not set(resources) <= {"requests", "limits"} or not all(
        isinstance(v, Mapping) and all(isinstance(k, str) and isinstance(q, str) for k, q in v.items()) for v in resources.values()
    ):
        raise PatternError(
            f"mp.Container: resources must be {{'requests': {{'cpu': '100m', ...}}, 'limits': {{...}}}}, got {resources!r}"
        )


__all__ = ["Container"]
