"""A program's patterns as real containers on the local Docker-compatible engine (Docker, podman).

The Docker SDK applier of `specs.docker`: what runs is the `DockerSpec` each pattern of the docker
target keeps, the same spec the Pulumi layer (targets/docker.py) turns into `pulumi_docker`
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

import os
import re
import sys
import tempfile
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Optional

from ._endpoints import document as endpoints_document, pattern_endpoints
from ._errors import Error
from ._outputs import resolved
from .client import wait_healthz
from .image import build_args, write_build_context
from .specs.docker import PROBE, ContainerSpec, DockerSpec, NetworkSpec
from .topology import GRPC_PORT, HTTP_PORT, Topology, dns_name

if TYPE_CHECKING:
    import docker

    from .program import Evaluation

PROJECT_LABEL = "io.metaparticle.project"
PATTERN_LABEL = "io.metaparticle.pattern"
ROLE_LABEL = "io.metaparticle.role"
REPLICA_LABEL = "io.metaparticle.replica"
ENTRY_LABEL = "io.metaparticle.entry"
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


# --- the plan: the Docker target's resources ----------------------------------------------------


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
        labels = dict(spec.network.labels)
        labels.update({PROJECT_LABEL: out.project, PATTERN_LABEL: topology.name})
        out.networks.append(NetworkSpec(spec.network.name, topology.name, labels, spec.network.driver))
        # Routers last: they resolve their upstreams' names when they start, and the engine's DNS
        # answers only with containers already started, so a router started first would send
        # every request to whichever replica it found.
        for container in sorted(spec.containers, key=lambda c: bool(topology.role(c.role).upstreams)):
            host_port = port if container.entry and first_entry else None
            out.containers.append(_for_engine(out.project, container, image_name, host_port))
            if container.entry:
                first_entry = False
    if not out.containers:
        raise EngineError(f"{evaluation.directory} declares no patterns for the docker target")
    return out


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
        args["PYTHON_VERSION"] = python
        name = f"{name}-py{python}"
    return ImageSpec(topology.name, name, context, args)


def _for_engine(project: str, spec: ContainerSpec, image: str, host_port: Optional[int]) -> ContainerSpec:
    """`spec` as the Docker SDK creates it: the user's env resolved, the image built here, our
    labels (to find the project's containers again), the entry on `host_port` when given."""
    options = dict(spec.options)
    options["environment"] = list(options["environment"]) + [f"{k}={resolved(v)}" for k, v in spec.user_env]
    if host_port is not None:
        options["ports"] = {
            key: (host, host_port if key == f"{HTTP_PORT}/tcp" else chosen) for key, (host, chosen) in options["ports"].items()
        }
    labels = dict(spec.labels)
    labels.update({PROJECT_LABEL: project, PATTERN_LABEL: spec.pattern, ROLE_LABEL: spec.role, REPLICA_LABEL: spec.replica})
    if spec.entry:
        labels[ENTRY_LABEL] = "true"
    return replace(spec, image=image, labels=labels, options=options, user_env=())


# --- images ---------------------------------------------------------------------------------------


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
            args["PYTHON_VERSION"] = python_version
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


# --- running ----------------------------------------------------------------------------------------


class ContainerFailed(EngineError):
    """A container exited (or keeps restarting) before it served."""

    def __init__(self, spec: ContainerSpec, reason: str, logs: list[str]) -> None:
        self.spec = spec
        self.logs = logs
        super().__init__(f"{spec.replica} {reason}" + ("\n" + "\n".join(logs) if logs else ""))


class Deployment:
    """The images, networks and containers of one plan on one engine."""

    def __init__(self, client: "docker.DockerClient", plan: Plan) -> None:
        self.client = client
        self.plan = plan
        self.containers: dict[str, Any] = {}
        self.networks: dict[str, Any] = {}
        self.built: list[BuiltImage] = []
        self._streams: list[Any] = []
        self._threads: list[threading.Thread] = []

    # -- build ---------------------------------------------------------------------------------------
    def build(
        self, on_image: Optional[Callable[[ImageSpec], None]] = None, on_line: Optional[LineSink] = None
    ) -> list[BuiltImage]:
        """Builds every image of the plan; pulls prebuilt ones the engine does not have."""
        from docker.errors import DockerException, ImageNotFound

        self.built = []
        for spec in self.plan.images:
            if on_image is not None:
                on_image(spec)
            self.built.append(build(self.client, spec, project=self.plan.project, on_line=on_line))
        built = {s.name for s in self.plan.images}
        for name in sorted({c.image for c in self.plan.containers} - built):
            try:
                self.client.images.get(name)
            except ImageNotFound:
                try:
                    self.client.images.pull(name)
                except DockerException as exc:
                    raise _api_error(f"pulling {name}", exc) from None
        return self.built

    # -- start -----------------------------------------------------------------------------------------
    def existing(self) -> list[str]:
        """Names of containers of this project already on the engine (an earlier run left running)."""
        found = self.client.containers.list(all=True, filters={"label": f"{PROJECT_LABEL}={self.plan.project}"})
        return sorted(c.name for c in found)

    def start(self, on_started: Optional[Callable[[ContainerSpec], None]] = None) -> None:
        """Creates the networks and starts every container; on failure removes what it created."""
        from docker.errors import DockerException

        try:
            for net in self.plan.networks:
                try:
                    self.networks[net.name] = self.client.networks.create(
                        net.name, driver=net.driver, labels=dict(net.labels), check_duplicate=True
                    )
                except DockerException as exc:
                    raise _api_error(f"creating network {net.name}", exc) from None
            for spec in self.plan.containers:
                self._start_one(spec)
                if on_started is not None:
                    on_started(spec)
        except BaseException:
            self.stop(grace=0)
            raise

    def _start_one(self, spec: ContainerSpec) -> None:
        from docker.errors import DockerException

        options = dict(spec.options)
        try:
            container = self.client.containers.create(
                spec.image,
                name=spec.name,
                labels=dict(spec.labels),
                network=spec.network,
                networking_config={spec.network: self.client.api.create_endpoint_config(aliases=list(spec.aliases))},
                detach=True,
                **options,
            )
        except DockerException as exc:
            raise _api_error(f"creating container {spec.name}", exc) from None
        self.containers[spec.name] = container
        try:
            container.start()
        except DockerException as exc:
            raise _api_error(f"starting container {spec.name}", exc) from None

    # -- health ------------------------------------------------------------------------------------------
    def probe(self, spec: ContainerSpec) -> bool:
        """Runs the container's probe command inside it: whether it exits 0."""
        return exec_probe(self.containers[spec.name], spec.probe)

    def check(self, spec: ContainerSpec) -> None:
        """Raises ContainerFailed when the container exited or restarted."""
        container = self.containers[spec.name]
        container.reload()
        state = container.attrs.get("State") or {}
        restarts = int(container.attrs.get("RestartCount") or 0)
        if state.get("Status") in ("exited", "dead") or restarts:
            code = state.get("ExitCode")
            reason = f"exited with code {code}" if not restarts else f"restarted {restarts} times (exit code {code})"
            raise ContainerFailed(spec, reason, self.logs(spec, 12))

    def wait_ready(
        self,
        timeout: float,
        on_ready: Optional[Callable[[ContainerSpec], None]] = None,
        should_stop: Callable[[], bool] = lambda: False,
        interval: float = 0.25,
    ) -> list[ContainerSpec]:
        """Probes every container until it serves; the ones that did not within `timeout`.
        Raises ContainerFailed as soon as one exits."""
        pending = list(self.plan.containers)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline and not should_stop():
            for spec in list(pending):
                self.check(spec)
                if self.probe(spec):
                    pending.remove(spec)
                    if on_ready is not None:
                        on_ready(spec)
            if pending:
                time.sleep(interval)
        return pending

    # -- addresses ---------------------------------------------------------------------------------------
    def published(self, spec: ContainerSpec, port: int) -> Optional[str]:
        """`127.0.0.1:<host port>` the container's `port` is published on."""
        container = self.containers[spec.name]
        container.reload()
        bindings = ((container.attrs.get("NetworkSettings") or {}).get("Ports") or {}).get(f"{port}/tcp") or []
        for binding in bindings:
            if binding.get("HostPort"):
                return f"{binding.get('HostIp') or PUBLISH_HOST}:{binding['HostPort']}"
        return None

    def endpoints(self) -> dict[str, Any]:
        """Every pattern's entry URLs and each role's containers (machine-readable)."""
        patterns = []
        for topology in self.plan.topologies:
            entry = next(c for c in self.plan.containers if c.pattern == topology.name and c.entry)
            http, grpc_ = self.published(entry, HTTP_PORT), self.published(entry, GRPC_PORT)
            names = lambda role, t=topology: {  # noqa: E731
                "containers": [c.name for c in self.plan.containers if c.pattern == t.name and c.role == role.name]
            }
            patterns.append(
                pattern_endpoints(
                    topology, f"http://{http}" if http else "", f"grpc://{grpc_}" if grpc_ else "", names, network=entry.network
                )
            )
        return endpoints_document(self.plan.project, patterns, target="docker")

    # -- logs ----------------------------------------------------------------------------------------------
    def logs(self, spec: ContainerSpec, lines: int = 20) -> list[str]:
        try:
            raw = self.containers[spec.name].logs(stdout=True, stderr=True, tail=lines)
        except Exception:  # noqa: BLE001 - logs are best effort once a container is gone
            return []
        return raw.decode("utf-8", "replace").splitlines()[-lines:]

    def follow_logs(self, log: LogSink) -> None:
        """Streams every container's output to `log(replica, line)`, one thread per container."""
        for spec in self.plan.containers:
            container = self.containers.get(spec.name)
            if container is None:
                continue
            stream = container.logs(stream=True, follow=True, stdout=True, stderr=True)
            self._streams.append(stream)
            thread = threading.Thread(target=_pump, args=(stream, spec.replica, log), daemon=True)
            thread.start()
            self._threads.append(thread)

    # -- stop --------------------------------------------------------------------------------------------
    def stop(self, grace: Optional[float] = None) -> None:
        """Stops every container (SIGTERM, then SIGKILL after its stop timeout or `grace`), removes
        the containers and networks, and the project's dangling images."""
        containers = list(self.containers.values())
        specs = {c.name: c for c in self.plan.containers}

        def stop_one(container: Any) -> None:
            timeout = grace if grace is not None else specs[container.name].stop_timeout if container.name in specs else 10
            _stop_and_remove(container, int(timeout))

        if containers:
            with ThreadPoolExecutor(max_workers=min(8, len(containers))) as pool:
                list(pool.map(stop_one, containers))
        self.containers.clear()
        for stream in self._streams:
            try:
                stream.close()
            except Exception:  # noqa: BLE001 - already closed by the engine
                pass
        for thread in self._threads:
            thread.join(timeout=2.0)
        self._streams.clear()
        self._threads.clear()
        for network in self.networks.values():
            _remove_network(network)
        self.networks.clear()
        prune_dangling(self.client, self.plan.project)


def exec_probe(container: Any, command: Iterable[str] = PROBE) -> bool:
    """Runs a probe command inside a running container: whether it exits 0."""
    from docker.errors import DockerException

    try:
        result = container.exec_run(list(command), stdout=True, stderr=True)
    except DockerException:
        return False
    return result.exit_code == 0


def _pump(stream: Any, name: str, log: LogSink) -> None:
    from .supervisor import format_log_line

    buffer = b""
    try:
        for chunk in stream:
            buffer += chunk
            while b"\n" in buffer:
                raw, buffer = buffer.split(b"\n", 1)
                line = raw.decode("utf-8", "replace").rstrip()
                if line:
                    log(name, format_log_line(line))
    except Exception:  # noqa: BLE001 - the stream ends when the container goes away
        pass
    if buffer.strip():
        log(name, format_log_line(buffer.decode("utf-8", "replace").rstrip()))


def _stop_and_remove(container: Any, timeout: int) -> None:
    from docker.errors import DockerException, NotFound

    try:
        container.stop(timeout=max(0, timeout))
    except NotFound:
        return
    except DockerException:
        pass
    try:
        container.remove(force=True, v=True)
    except NotFound:
        pass


def _remove_network(network: Any) -> None:
    from docker.errors import DockerException, NotFound

    for _ in range(10):
        try:
            network.remove()
            return
        except NotFound:
            return
        except DockerException:  # an endpoint is still being torn down
            time.sleep(0.2)
    network.remove()


# --- delete and leftovers ---------------------------------------------------------------------------


@dataclass
class Leftovers:
    containers: list[str] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)
    dangling_images: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)

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


def delete(client: "docker.DockerClient", project: str, *, images: bool = False, grace: int = 30) -> Leftovers:
    """Removes every container and network labelled with `project` (and its images with `images`);
    what was removed."""
    from docker.errors import DockerException

    label = {"label": f"{PROJECT_LABEL}={project}"}
    removed = Leftovers()
    containers = client.containers.list(all=True, filters=label)
    if containers:
        with ThreadPoolExecutor(max_workers=min(8, len(containers))) as pool:
            list(pool.map(lambda c: _stop_and_remove(c, grace), containers))
    removed.containers = sorted(c.name for c in containers)
    for network in client.networks.list(filters=label):
        try:
            _remove_network(network)
            removed.networks.append(network.name)
        except DockerException as exc:
            raise _api_error(f"removing network {network.name}", exc) from None
    removed.dangling_images = prune_dangling(client, project)
    if images:
        for image in client.images.list(filters=label):
            try:
                client.images.remove(image.id, force=True)
                removed.images.extend(image.tags)
            except DockerException as exc:
                raise _api_error(f"removing image {', '.join(image.tags) or image.id}", exc) from None
    return removed


__all__ = [
    "BuiltImage", "ContainerFailed", "ContainerSpec", "Deployment", "EngineError", "ImageSpec", "Leftovers",
    "NetworkSpec", "Plan", "build", "build_runtime_image", "connect", "delete", "engine_description",
    "exec_probe", "leftovers", "plan", "prune_dangling", "wait_healthz",
]
