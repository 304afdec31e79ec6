"""Building a pattern's image (and the runtime's alone) through the Engine API, and pruning what builds leave."""

from __future__ import annotations

import re
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Optional

from .._image import build_args, write_build_context
from .._topology import Topology
from .engine import PROJECT_LABEL, RUNTIME_PROJECT, EngineError, LineSink, _api_error, _first_line
from .planning import ImageSpec

if TYPE_CHECKING:
    import docker

@dataclass(frozen=True)
class BuiltImage:
    name: str
    id: str
    #: Bytes, as the engine reports the image's size.
    size: int
    seconds: float
    #: Build steps, and how many of them came from the layer cache.
    steps: int
    cache_hits: int
    python: str

    @property
    def cached(self) -> bool:
        """Every step after FROM came from the layer cache."""
        return self.steps > 0 and self.cache_hits >= self.steps - 1


_STEP = re.compile(r"^(STEP|Step) \d+/\d+\s?:")


def build(
    client: "docker.DockerClient",
    spec: ImageSpec,
    *,
    project: str,
    on_line: Optional[LineSink] = None,
) -> BuiltImage:
    """Builds `spec` with the runtime's Dockerfile through the Engine API, streaming its output.

    The image is labelled with the project only: podman turns build labels into LABEL steps in an
    unspecified order, so a second label would make every rebuild miss the cache. An unchanged
    context rebuilds from the cache into the same image id.
    """
    from docker.errors import APIError, DockerException

    if not (spec.context / "Dockerfile").is_file():
        raise EngineError(f"no build context at {spec.context}")
    start = time.monotonic()
    steps = hits = 0
    image_id: Optional[str] = None
    tail: deque[str] = deque(maxlen=12)
    try:
        stream = client.api.build(
            path=str(spec.context),
            tag=spec.name,
            buildargs=dict(spec.build_args),
            labels={PROJECT_LABEL: project},
            rm=True,
            forcerm=True,
            decode=True,
        )
        for chunk in stream:
            error = chunk.get("error") or (chunk.get("errorDetail") or {}).get("message")
            if error:
                raise EngineError(_build_failure(spec, str(error), tail))
            aux = chunk.get("aux")
            if isinstance(aux, dict) and aux.get("ID"):
                image_id = aux["ID"]
            for line in str(chunk.get("stream") or "").splitlines():
                line = line.rstrip()
                if not line:
                    continue
                tail.append(line)
                if _STEP.match(line):
                    steps += 1
                elif "Using cache" in line:
                    hits += 1
                if on_line is not None:
                    on_line(line)
        image = client.images.get(spec.name)
    except APIError as exc:
        raise EngineError(_build_failure(spec, _first_line(exc), tail)) from None
    except DockerException as exc:
        raise _api_error(f"building {spec.name}", exc) from None
    if image_id and not image.id.endswith(image_id.split(":")[-1]):
        raise EngineError(f"building {spec.name}: the engine tagged {image.id}, not the image it built ({image_id})")
    prune_dangling(client, project)
    return BuiltImage(
        name=spec.name,
        id=image.id,
        size=int(image.attrs.get("Size") or 0),
        seconds=time.monotonic() - start,
        steps=steps,
        cache_hits=hits,
        python=spec.build_args.get("PYTHON_VERSION", ""),
    )


def _build_failure(spec: ImageSpec, error: str, tail: Iterable[str]) -> str:
    message = f"building {spec.name} failed: {error.strip()}"
    python = spec.build_args.get("PYTHON_VERSION")
    lowered = error.lower()
    if python and f"python:{python}" in lowered:
        message += (
            f"\nthe base image python:{python}-slim is not available to the engine: pull it, or build on "
            "another Python with --python-version (by-value functions load only on the Python that pickled them)"
        )
    lines = "\n".join(tail)
    return f"{message}\n{lines}" if lines else message


def build_runtime_image(
    client: "docker.DockerClient", *, python_version: Optional[str] = None, on_line: Optional[LineSink] = None
) -> BuiltImage:
    """The runtime alone (no program) built with the same Dockerfile: the layers every pattern's
    image starts from, tagged `metaparticle-runtime:<content hash>`."""
    args = build_args()
    with tempfile.TemporaryDirectory(prefix="metaparticle-runtime-") as tmp:
        empty = Path(tmp) / "program"
        empty.mkdir()
        context = write_build_context(Topology("runtime", "Runtime", (), source_dir=str(empty)), Path(tmp) / "context")
        (context.path / "app").mkdir(exist_ok=True)
        name = f"{RUNTIME_PROJECT}:{context.tag}"
        if python_version and python_version != args["PYTHON_VERSION"]:
            args = build_args(python_version)
            name = f"{name}-py{python_version}"
        spec = ImageSpec("runtime", name, context.path, args)
        built = build(client, spec, project=RUNTIME_PROJECT, on_line=on_line)
    _untag_others(client, RUNTIME_PROJECT, built.name)
    return built


def _untag_others(client: "docker.DockerClient", project: str, keep: str) -> None:
    """Drops the project's other tags of `keep`'s repository (earlier builds); best effort."""
    from docker.errors import DockerException

    repository = keep.rsplit(":", 1)[0]
    for image in client.images.list(filters={"label": f"{PROJECT_LABEL}={project}"}):
        for tag in image.tags:
            if tag.rsplit(":", 1)[0].split("/")[-1] == repository and not tag.endswith(f"/{keep}") and tag != keep:
                try:
                    client.images.remove(tag)
                except DockerException:  # in use, or the parent of another image
                    pass


def prune_dangling(client: "docker.DockerClient", project: str) -> list[str]:
    """Removes the project's untagged images (a tag that moved to a newer build leaves one)."""
    from docker.errors import APIError

    removed = []
    for image in client.images.list(filters={"dangling": True, "label": f"{PROJECT_LABEL}={project}"}):
        try:
            client.images.remove(image.id, noprune=False)
            removed.append(image.id)
        except APIError:  # still used by a container, or already gone
            continue
    return removed
