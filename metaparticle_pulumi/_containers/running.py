"""Running a plan: its networks and containers on the engine, their health, addresses, logs and stop."""

from __future__ import annotations

import io
import tarfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional

from .._endpoints import document as endpoints_document, pattern_endpoints
from .._image import RUN_AS
from .._specs.docker import ENV_DIR, ENV_FILE_MODE, PROBE, ContainerSpec
from .._topology import GRPC_PORT, HTTP_PORT
from .engine import PROJECT_LABEL, PUBLISH_HOST, EngineError, LineSink, LogSink, _api_error
from .images import BuiltImage, build, prune_dangling
from .planning import ImageSpec, Plan, check_volumes

if TYPE_CHECKING:
    import docker

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
            self._volumes()
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

    def _volumes(self) -> None:
        """Creates the data volumes the engine does not hold yet (those it holds keep their data);
        EngineError when a Shard's shard count no longer matches its volumes."""
        from docker.errors import DockerException

        if not self.plan.volumes:
            return
        try:
            held = self.client.volumes.list(filters={"label": f"{PROJECT_LABEL}={self.plan.project}"})
            check_volumes(self.plan, {v.name: (v.attrs.get("Labels") or {}) for v in held})
            names = {v.name for v in held}
            for volume in self.plan.volumes:
                if volume.name not in names:
                    self.client.volumes.create(volume.name, labels=dict(volume.labels))
        except DockerException as exc:
            raise _api_error("creating the data volumes", exc) from None

    def _start_one(self, spec: ContainerSpec) -> None:
        from docker.errors import DockerException

        options = dict(spec.options)
        if spec.network_of is None:  # else options' network_mode joins another's namespace
            options.update(
                network=spec.network,
                networking_config={spec.network: self.client.api.create_endpoint_config(aliases=list(spec.aliases))},
            )
        try:
            container = self.client.containers.create(
                spec.image,
                name=spec.name,
                labels=dict(spec.labels),
                detach=True,
                **options,
            )
        except DockerException as exc:
            raise _api_error(f"creating container {spec.name}", exc) from None
        self.containers[spec.name] = container
        for network in spec.extra_networks:
            try:
                self.networks[network].connect(container)
            except DockerException as exc:
                raise _api_error(f"connecting {spec.name} to {network}", exc) from None
        if spec.env_files:
            try:
                container.put_archive(ENV_DIR, env_archive(spec.env_files))
            except DockerException as exc:
                raise _api_error(f"writing the secret env files of {spec.name}", exc) from None
        try:
            container.start()
        except DockerException as exc:
            raise _api_error(f"starting container {spec.name}", exc) from None

    # -- health ------------------------------------------------------------------------------------------
    def probe(self, spec: ContainerSpec) -> bool:
        """Runs the container's probe command inside it: whether it exits 0. A container without
        one (a user's server: its runtime probes it) is ready once it runs."""
        if not spec.probe:
            container = self.containers[spec.name]
            container.reload()
            return (container.attrs.get("State") or {}).get("Status") == "running"
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
        """Every pattern's entry URLs and each role's containers (machine-readable), with where
        each container's metrics are scraped from the host (its published operations port)."""
        patterns = []
        for topology in self.plan.topologies:
            entry = next(c for c in self.plan.containers if c.pattern == topology.name and c.entry)
            http, grpc_ = self.published(entry, HTTP_PORT), self.published(entry, GRPC_PORT)

            def names(role: Any, t: Any = topology) -> dict[str, Any]:
                specs = [c for c in self.plan.containers if c.pattern == t.name and c.role == role.name and not c.holder]
                return {"containers": [c.name for c in specs], "replicas": [self._replica(c) for c in specs]}

            patterns.append(
                pattern_endpoints(
                    topology, f"http://{http}" if http else "", f"grpc://{grpc_}" if grpc_ else "", names, network=entry.network
                )
            )
        return endpoints_document(self.plan.project, patterns, target="docker")

    def _replica(self, spec: ContainerSpec) -> dict[str, Any]:
        # A router in a holder's namespace has its operations port published on the holder (a
        # user's server, in its runtime's, has no operations port).
        publisher = self.plan.container(spec.network_of) if spec.network_of and not spec.server else spec
        ops = self.published(publisher, spec.metrics_port)
        return {"name": spec.name, "replica": spec.replica, "metrics_url": f"http://{ops}/metrics" if ops else None}

    def restarts(self) -> dict[str, int]:
        """How often the engine restarted each container (by name); 0 for one it cannot tell."""
        from docker.errors import DockerException

        counts = {}
        for name, container in list(self.containers.items()):
            try:
                container.reload()
                counts[name] = int(container.attrs.get("RestartCount") or 0)
            except DockerException:
                counts[name] = 0
        return counts

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
            # A namespace holder writes nothing, and podman answers a follow of a container that has
            # written nothing only once it writes.
            if container is None or spec.holder:
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

        # Containers in another's network namespace (users' servers, routers in a holder's) first:
        # the engine refuses to remove a container others share.
        for batch in dependents_first(containers, {s.name for s in self.plan.containers if s.network_of}):
            with ThreadPoolExecutor(max_workers=min(8, len(batch))) as pool:
                list(pool.map(stop_one, batch))
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


def dependents_first(containers: list[Any], dependents: Optional[set[str]] = None) -> list[list[Any]]:
    """`containers` in the order they can be removed: those in another one's network namespace
    (users' servers, `dependents` by name, else as the engine says) before the others (podman
    refuses to remove a container others depend on). Empty batches are left out."""

    def joins(container: Any) -> bool:
        if dependents is not None:
            return container.name in dependents
        mode = ((container.attrs or {}).get("HostConfig") or {}).get("NetworkMode") or ""
        return mode.startswith("container:")

    first = [c for c in containers if joins(c)]
    rest = [c for c in containers if not joins(c)]
    return [batch for batch in (first, rest) if batch]


#: The end-of-archive marker of a tar: two zero blocks of 512 bytes.
END_OF_ARCHIVE = 2 * 512


def env_archive(files: Iterable[tuple[str, str]]) -> bytes:
    """A tar of secret env files for `ENV_DIR`: one file per variable, readable only by the runtime's user.

    It ends at its end-of-archive marker, without the zeros tarfile pads it with to a 10 KiB record:
    podman's archive upload (buildah's copier, before buildah#6678) stops reading at the marker, and
    when the rest of the upload comes after its reader has gone, the upload fails with `passing bulk
    input to subprocess: write |1: broken pipe` (buildah#6573)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for key, value in files:
            data = value.encode("utf-8")
            info = tarfile.TarInfo(key)
            info.size, info.mode, info.uid, info.gid = len(data), ENV_FILE_MODE, RUN_AS, RUN_AS
            archive.addfile(info, io.BytesIO(data))
        members_end = buffer.tell()  # each member is written whole (header, data, padding) as added
    return buffer.getvalue()[: members_end + END_OF_ARCHIVE]


def exec_probe(container: Any, command: Iterable[str] = PROBE) -> bool:
    """Runs a probe command inside a running container: whether it exits 0."""
    from docker.errors import DockerException

    try:
        result = container.exec_run(list(command), stdout=True, stderr=True)
    except DockerException:
        return False
    return result.exit_code == 0


def _pump(stream: Any, name: str, log: LogSink) -> None:
    buffer = b""
    try:
        for chunk in stream:
            buffer += chunk
            while b"\n" in buffer:
                raw, buffer = buffer.split(b"\n", 1)
                line = raw.decode("utf-8", "replace").rstrip()
                if line:
                    log(name, line)
    except Exception:  # noqa: BLE001 - the stream ends when the container goes away
        pass
    if buffer.strip():
        log(name, buffer.decode("utf-8", "replace").rstrip())


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
