"""One lifecycle for `metaparticle run`, whatever runs the roles: start → ready → serve → stop.

A `Runner` runs a program's roles somewhere: `ProcessRunner` as local processes under the
supervisor (_targets/local.py's ProcessSpecs), `ContainerRunner` as containers on the local engine
(containers.Deployment). `run` drives either through the same steps (build what is needed, start,
wait until every replica serves and every entry's GET /healthz answers 200, write the endpoints,
answer one request or serve until stopped, stop) and tells a `View` what to show; it prints nothing.
"""

from __future__ import annotations

import json
import socket
import sys
import tempfile
import threading
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Protocol, Union

from ._endpoints import document as endpoints_document, pattern_endpoints
from ._errors import Error
from ._client import Answer, CallError, call, wait_healthz

if TYPE_CHECKING:
    from ._watch import Watch
    from ._containers import BuiltImage, Deployment
    from ._program import Evaluation

LogSink = Callable[[str, str], None]
ShouldStop = Callable[[], bool]
#: Replies of a request of `run --request` wait at most this long.
REQUEST_TIMEOUT = 30.0


class RunFailed(Error):
    """The run cannot go on; the message is for the user, `code` the command's exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class Progress(Protocol):
    """What the lifecycle reports progress to (rich's `Progress` has this shape)."""

    def add_task(self, description: str, total: Optional[float] = ...) -> Any: ...
    def advance(self, task_id: Any, advance: float = ...) -> None: ...
    def update(self, task_id: Any, **fields: Any) -> None: ...


class View(Protocol):
    """What the lifecycle shows; the CLI prints it."""

    def logs(self, names: list[str]) -> LogSink:
        """The sink of the replicas' output lines, for replicas called `names`."""

    def progress(self) -> AbstractContextManager[Progress]: ...
    def built(self, image: "BuiltImage") -> None: ...
    def ready(self, endpoints: dict[str, Any]) -> None: ...
    def answer(self, result: Union[Answer, CallError]) -> None: ...
    def serving(self, url: str, detached: bool) -> None: ...
    def stopped(self, message: str) -> None: ...
    def failed(self, message: str) -> None: ...


class Runner(Protocol):
    """The roles of one program, run somewhere."""

    project: str
    #: "processes" or "containers".
    noun: str
    #: Every replica's name (the names the log sink is given).
    names: list[str]

    def prepare(self, progress: Progress, view: View, should_stop: ShouldStop) -> None:
        """What must exist before anything starts (images)."""

    def start(self, log: LogSink, follow_logs: bool) -> None: ...

    def wait_ready(self, timeout: float, on_ready: Callable[[Any], None], should_stop: ShouldStop) -> None:
        """Returns once every replica serves (or `should_stop`); RunFailed naming the one that did not."""

    def endpoints(self) -> dict[str, Any]: ...

    def poll(self) -> None:
        """Called now and then while serving (restarts what exited)."""

    def stop(self) -> str:
        """Stops and removes everything; what to tell the user ("" for nothing)."""


def run(
    runner: Runner,
    view: View,
    *,
    ready_timeout: float,
    stop: threading.Event,
    request: Optional[bytes] = None,
    endpoints_json: Optional[Path] = None,
    detach: bool = False,
    watch: Optional["Watch"] = None,
) -> int:
    """Runs `runner` to the end; the command's exit code (1 when an answer is an error, the
    failure's code when it cannot run, after `view.failed`). With `watch`, a change of the
    program's files rolls the runner to its new evaluation while serving."""
    leave_running = False
    try:
        with view.progress() as progress:
            runner.prepare(progress, view, stop.is_set)
            starting = progress.add_task(f"starting {len(runner.names)} {runner.noun} of {runner.project}", total=len(runner.names))
            runner.start(view.logs(runner.names), follow_logs=not detach)
            runner.wait_ready(ready_timeout, lambda _: progress.advance(starting), stop.is_set)
        if stop.is_set():
            return 0
        endpoints = runner.endpoints()
        deadline = time.monotonic() + ready_timeout
        for pattern in endpoints["patterns"]:
            if not wait_healthz(pattern["url"], deadline - time.monotonic(), stop.is_set):
                if stop.is_set():
                    return 0
                raise RunFailed(f"the entry of {pattern['name']} did not report the whole topology serving (GET /healthz)")
        if endpoints_json is not None:
            write_endpoints(endpoints_json, endpoints)
        view.ready(endpoints)
        url = endpoints["patterns"][0]["url"]
        if request is not None:
            try:
                view.answer(call(url, request, timeout=REQUEST_TIMEOUT))
            except CallError as exc:
                view.answer(exc)
                return 1
            return 0
        leave_running = detach
        view.serving(url, detach)
        while not detach and not stop.is_set():
            runner.poll()
            if watch is not None and watch.changed.is_set():
                _reload(runner, view, watch, ready_timeout, stop, endpoints_json)
            stop.wait(0.2)
        return 0
    except RunFailed as exc:
        view.failed(str(exc))  # before the stop's own report
        return exc.code
    except KeyboardInterrupt:
        return 0
    finally:
        if not leave_running:
            view.stopped(runner.stop())


def _reload(
    runner: Any, view: View, watch: "Watch", timeout: float, stop: threading.Event, endpoints_json: Optional[Path]
) -> None:
    """Re-evaluates the program and rolls the runner to it; a program that no longer evaluates,
    or new replicas that do not serve, leave the running version serving (the error shown)."""
    from ._program import ProgramError

    files = watch.take()
    note = getattr(view, "note", None)
    if note is not None:
        note(f"reloading: {', '.join(files)} changed")
    try:
        evaluation = watch.evaluate(runner.port_keys())
    except ProgramError as exc:
        view.failed(f"{exc}\nstill serving the previous version")
        return
    if not evaluation.plans:
        evaluation.ports.close()
        view.failed("the program declares no patterns now; still serving the previous version")
        return
    try:
        summary = runner.reload(evaluation, timeout, stop.is_set)
    except RunFailed as exc:
        view.failed(str(exc))
        return
    endpoints = runner.endpoints()
    if endpoints_json is not None:
        write_endpoints(endpoints_json, endpoints)
    view.ready(endpoints)
    if note is not None:
        note(summary)


def write_endpoints(path: Path, endpoints: dict[str, Any]) -> None:
    """Writes the endpoints document to `path` at once (readers never see half of it)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(endpoints, indent=2) + "\n")
        tmp.replace(path)
    except OSError as exc:
        raise RunFailed(f"cannot write {path}: {exc.strerror or exc}", 2) from None


# --- processes ----------------------------------------------------------------------------------------


def _release_server_ports(specs: list[Any], ports: Any) -> None:
    """Lets go of the ports of the users' own servers (`mp.Container`) just before they start:
    unlike the runtime, a server binds without SO_REUSEPORT, so it cannot bind next to the hold."""
    for spec in specs:
        if spec.server is not None:
            ports.release(spec.server.port)


class ProcessRunner:
    """Every replica of the evaluation's local plans as a process on 127.0.0.1, supervised.

    The evaluation holds every port from the moment it chose it; each is released once the
    replica that binds it serves.
    """

    noun = "processes"

    def __init__(self, evaluation: "Evaluation", *, python: str = sys.executable) -> None:
        self.evaluation = evaluation
        self.project = evaluation.project
        self.python = python
        self._function_dir = tempfile.TemporaryDirectory(prefix="metaparticle-")
        #: The entries' listening sockets by port, kept for the whole run (see Ports.listen).
        self._listeners: dict[int, socket.socket] = {}
        self._listen(evaluation)
        self.specs = [spec for plan in evaluation.plans for spec in plan.processes(self._function_dir.name)]
        self.names = [spec.name for spec in self.specs]
        self.supervisor: Any = None

    def _listen(self, evaluation: "Evaluation") -> None:
        """Gives every entry of `evaluation` the run's listening socket of its port."""
        for plan in evaluation.plans:
            if plan.http_port is None:
                continue
            if plan.http_port in self._listeners:
                evaluation.ports.release(plan.http_port)  # the run listens on it already
            else:
                sock = evaluation.ports.listen(plan.http_port)
                if sock is None:
                    continue  # nothing held (no SO_REUSEPORT): the entry binds the port itself
                self._listeners[plan.http_port] = sock
            plan.http_fd = self._listeners[plan.http_port].fileno()

    def listening(self) -> set[int]:
        """The entry ports the run listens on (and hands to its entry processes)."""
        return set(self._listeners)

    def _close_listeners(self, keep: set[int]) -> None:
        for port in [p for p in self._listeners if p not in keep]:
            self._listeners.pop(port).close()

    def prepare(self, progress: Progress, view: View, should_stop: ShouldStop) -> None:
        pass  # processes run the program's code where it is

    def start(self, log: LogSink, follow_logs: bool = True) -> None:
        from ._supervisor import Supervisor

        self.supervisor = Supervisor(self.specs, log=log, python=self.python)
        _release_server_ports(self.specs, self.evaluation.ports)
        self.supervisor.start()

    def wait_ready(self, timeout: float, on_ready: Callable[[Any], None], should_stop: ShouldStop) -> None:
        from ._logformat import text as format_log_line

        def ready(replica: Any) -> None:
            for port in replica.spec.ports:
                self.evaluation.ports.release(port)
            on_ready(replica)

        pending = self.supervisor.wait_ready(timeout, on_ready=ready, should_stop=should_stop)
        if should_stop():
            return
        broken = self.supervisor.failed_early()
        if broken or pending:
            who = broken or pending[0]
            tail = "\n".join(format_log_line(line) for line in who.last_lines[-8:])
            reason = f"exited with code {who.exit_codes[-1]}" if broken else f"not serving after {timeout:.0f}s"
            raise RunFailed(f"{who.spec.name} {reason}\n{tail}")

    def endpoints(self) -> dict[str, Any]:
        """Every pattern's entry URLs, the gRPC ports of each role's replicas and, per process,
        where its metrics are scraped."""

        def replicas(plan: Any, role: Any) -> dict[str, Any]:
            specs = [s for s in self.specs if s.topology == plan.topology.name and s.role == role.name]
            return {
                "grpc_ports": list(plan.grpc_ports[role.name]),
                "processes": [{"name": s.name, "grpc_port": s.grpc_port, "metrics_url": s.metrics_url} for s in specs],
            }

        return endpoints_document(
            self.project,
            [
                pattern_endpoints(plan.topology, plan.url, plan.grpc_url, lambda role, p=plan: replicas(p, role))
                for plan in self.evaluation.plans
            ],
        )

    def port_keys(self) -> dict[Any, int]:
        """The ports of the running processes, keyed as the local target reserves them (a
        re-evaluation given them keeps unchanged roles on their ports)."""
        from ._roll import port_keys

        return port_keys(self.specs)

    def reload(self, evaluation: "Evaluation", timeout: float, should_stop: ShouldStop) -> str:
        """Rolls to `evaluation`: starts the replicas of the roles that changed, waits until they
        serve, then stops the old ones (callers first; each drains). On failure the new ones stop,
        the old ones keep serving, and RunFailed says why."""
        from . import _roll

        serving = {plan.http_port for plan in self.evaluation.plans}
        try:
            self._listen(evaluation)
            roll = _roll.plan(self.specs, evaluation, self._function_dir.name)
        except BaseException:
            evaluation.ports.close()
            self._close_listeners(serving)
            raise
        if not roll.start and not roll.stop:
            evaluation.ports.close()
            return "nothing to roll: every role is unchanged"

        def ready(replica: Any) -> None:
            for port in replica.spec.ports:
                evaluation.ports.release(port)

        _release_server_ports(roll.start, evaluation.ports)
        new = self.supervisor.add(roll.start)
        pending = self.supervisor.wait_ready(timeout, on_ready=ready, should_stop=should_stop, replicas=new)
        broken = next((r for r in new if r.gave_up), None)
        if broken is not None or pending:
            from ._logformat import text

            self.supervisor.retire(new)
            evaluation.ports.close()
            self._close_listeners(serving)
            if should_stop():
                return "reload interrupted"
            who = broken or pending[0]
            tail = "\n".join(text(line) for line in who.last_lines[-8:])
            reason = f"exited with code {who.exit_codes[-1]}" if broken else f"not serving after {timeout:.0f}s"
            raise RunFailed(f"the new {who.spec.name} {reason}; still serving the previous version\n{tail}")
        old = {id(spec) for spec in roll.stop}
        replicas = {id(r.spec): r for r in self.supervisor.replicas if id(r.spec) in old}
        for batch in _roll.retire_order(roll.stop):
            self.supervisor.retire([replicas[id(spec)] for spec in batch if id(spec) in replicas])
        self.evaluation.ports.close()
        self.evaluation = evaluation
        self._close_listeners({plan.http_port for plan in evaluation.plans})
        self.specs = roll.keep + roll.start
        self.names = [spec.name for spec in self.specs]
        return (
            f"rolled {', '.join(roll.roles)}: {len(roll.start)} new processes serve, "
            f"{len(roll.stop)} old ones stopped, {len(roll.keep)} kept"
        )

    def restarts(self) -> dict[str, int]:
        """How often each replica (by name) was restarted."""
        if self.supervisor is None:
            return {}
        return {r.spec.name: r.restarts for r in self.supervisor.replicas}

    def poll(self) -> None:
        self.supervisor.poll()

    def stop(self) -> str:
        if self.supervisor is not None:
            self.supervisor.stop()
        self._close_listeners(set())
        self.evaluation.ports.close()
        self._function_dir.cleanup()
        return f"stopped {len(self.specs)} processes"


# --- containers -------------------------------------------------------------------------------------


class ContainerRunner:
    """Every replica as a container on the local engine (`run --target docker`), from the images
    it builds first."""

    noun = "containers"

    def __init__(self, deployment: "Deployment") -> None:
        self.deployment = deployment
        self.project = deployment.plan.project
        self.names = [spec.replica for spec in deployment.plan.containers]

    @classmethod
    def open(cls, evaluation: "Evaluation", directory: Path, *, port: int, python_version: Optional[str]) -> "ContainerRunner":
        """The runner of `evaluation` on the engine DOCKER_HOST names; RunFailed (code 2) when the
        engine cannot run it or an earlier run still does."""
        from . import _containers as containers

        try:
            deployment = containers.Deployment(
                containers.connect(), containers.plan(evaluation, port=port, python_version=python_version)
            )
            running = deployment.existing()
        except containers.EngineError as exc:
            raise RunFailed(str(exc), 2) from None
        if running:
            raise RunFailed(
                f"{evaluation.project} already runs on the engine ({', '.join(running)}); "
                f"remove it with: metaparticle delete {directory} --target docker",
                2,
            )
        return cls(deployment)

    def prepare(self, progress: Progress, view: View, should_stop: ShouldStop) -> None:
        """Builds the images (Ctrl-C stops a build between two of its lines)."""
        images = self.deployment.plan.images
        building = progress.add_task(f"building {len(images)} images", total=len(images))
        current = {"name": ""}

        def on_image(spec: Any) -> None:
            if current["name"]:
                progress.advance(building)
            current["name"] = spec.name

        def on_line(line: str) -> None:
            if should_stop():
                raise KeyboardInterrupt
            progress.update(building, description=f"building {current['name']}: {line[:60]}")

        for image in self._engine(lambda: self.deployment.build(on_image=on_image, on_line=on_line)):
            view.built(image)
        progress.update(building, completed=len(images), description=f"built {len(images)} images")

    def start(self, log: LogSink, follow_logs: bool = True) -> None:
        self._engine(self.deployment.start)
        if follow_logs:
            self.deployment.follow_logs(log)

    def wait_ready(self, timeout: float, on_ready: Callable[[Any], None], should_stop: ShouldStop) -> None:
        pending = self._engine(lambda: self.deployment.wait_ready(timeout, on_ready=on_ready, should_stop=should_stop))
        if pending and not should_stop():
            who = pending[0]
            raise RunFailed(f"{who.replica} not serving after {timeout:.0f}s\n" + "\n".join(self.deployment.logs(who, 8)))

    def endpoints(self) -> dict[str, Any]:
        return self._engine(self.deployment.endpoints)

    def poll(self) -> None:
        pass  # the engine restarts containers itself

    def restarts(self) -> dict[str, int]:
        """How often the engine restarted each container (by name), for the live view."""
        return self._engine(self.deployment.restarts)

    def stop(self) -> str:
        count = len(self.deployment.containers)
        self.deployment.stop()
        return f"removed {count} containers and their networks" if count else ""

    @staticmethod
    def _engine(operation: Callable[[], Any]) -> Any:
        from ._containers import EngineError

        try:
            return operation()
        except EngineError as exc:
            raise RunFailed(str(exc)) from None
