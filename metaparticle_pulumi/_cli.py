"""The `metaparticle` command: run a program's patterns locally, call them, render and preview them."""

from __future__ import annotations

import json
import signal
import socket
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import typer
from rich.console import Console, Group
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import _live, _logformat
from ._outputs import event_loops_closed
from ._client import CallError, call as call_entry
from ._errors import StackError
from ._program import Evaluation, ProgramError, evaluate

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Distributed-system patterns as one line of Pulumi code: run them locally, call them, render them.",
)
console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

_COLORS = ["cyan", "magenta", "green", "yellow", "blue", "bright_cyan", "bright_magenta", "bright_green"]


def fail(message: str, code: int = 1) -> "typer.Exit":
    err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    return typer.Exit(code)


def _load(directory: Path, **kwargs: Any) -> Evaluation:
    try:
        evaluation = evaluate(directory, **kwargs)
    except ProgramError as exc:
        raise fail(str(exc), 2) from None
    if not evaluation.patterns:
        raise fail(
            f"{directory} declares no patterns; declare one, e.g. mp.Service('hello', function=handler)", 2
        )
    return evaluation


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the entry binds: a port whose old connections linger in TIME_WAIT is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _read_json_argument(value: Optional[str]) -> bytes:
    text = value if value is not None else sys.stdin.read()
    try:
        json.loads(text)
    except ValueError as exc:
        raise fail(f"the request is not valid JSON: {exc}", 2) from None
    return text.encode()


class _Console:
    """How a run looks on the terminal: the `View` of runners.run.

    Logs are `text` (a colour per replica) or `json` (one object per line, see _logformat); with
    `live`, a table per role refreshed every second sits under the logs while serving (_live).
    """

    def __init__(self, directory: Path, *, log_format: str = "text", live: bool = False, runner: Any = None) -> None:
        self.directory = directory
        self.log_format = log_format
        self.live = live
        self.runner = runner
        #: Until set (while starting), only errors and exits of the replicas' output are shown (text).
        self.show_logs = threading.Event()
        self.endpoints: dict[str, Any] = {}
        self._live_stop = threading.Event()
        self._live_thread: Optional[threading.Thread] = None
        self._print_lock = threading.Lock()

    def _json(self, doc: dict[str, Any], stream: Any = None) -> None:
        with self._print_lock:
            print(json.dumps(doc, default=str), file=stream or sys.stdout, flush=True)

    def _who(self) -> dict[str, tuple[str, str]]:
        """Replica name -> (pattern, role), for output lines that do not say."""
        specs = getattr(self.runner, "specs", None) or []
        return {spec.name: (spec.config.pattern, spec.role) for spec in specs}

    def logs(self, names: list[str]) -> Callable[[str, str], None]:
        """A log sink printing `name | line` in a colour per replica, or a JSON record per line."""
        if self.log_format == "json":
            who = self._who()

            def log_json(name: str, line: str) -> None:
                pattern, role = who.get(name, (None, None))
                self._json(_logformat.record(line, name, pattern, role))

            return log_json
        colors = {name: _COLORS[i % len(_COLORS)] for i, name in enumerate(names)}
        width = max((len(name) for name in names), default=0)

        def log(name: str, line: str) -> None:
            line = _logformat.text(line)
            if self.show_logs.is_set() or "error" in line or "exited" in line:
                console.print(f"[{colors.get(name, 'white')}]{name:<{width}}[/] | {escape(line)}", markup=True, soft_wrap=True)

        return log

    def progress(self) -> Progress:
        """Shown while images build and roles start (on stderr, then cleared)."""
        return Progress(
            SpinnerColumn(),
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            console=err_console,
            transient=True,
            disable=self.log_format == "json",
        )

    def built(self, image: Any) -> None:
        state = "cached" if image.cached else f"{image.cache_hits}/{image.steps} steps cached"
        if self.log_format == "json":
            self._json(_logformat.own("info", f"built {image.name}", seconds=image.seconds, cached=image.cached), sys.stderr)
            return
        err_console.print(f"built {image.name} ({image.size / 1e6:.0f} MB, {image.seconds:.1f}s, {state})")

    def ready(self, endpoints: dict[str, Any]) -> None:
        self.endpoints = endpoints
        if self.log_format == "json":
            for pattern in endpoints["patterns"]:
                self._json(_logformat.own("info", "ready", pattern=pattern["pattern"], name=pattern["name"],
                                          url=pattern["url"], grpc_url=pattern["grpc_url"]))
            return
        console.print(_container_table(endpoints) if endpoints.get("target") == "docker" else _table(endpoints))

    def answer(self, result: Any) -> None:
        if self.log_format == "json":
            if isinstance(result, CallError):
                self._json(_logformat.own("error", str(result), document=result.document), sys.stderr)
            else:
                print(json.dumps(result.body), flush=True)
            return
        _print_answer(result)

    def serving(self, url: str, detached: bool) -> None:
        if detached:
            self.note(f"Running at {url}. Remove it with: metaparticle delete {self.directory} --target docker", url=url)
            return
        self.show_logs.set()
        if self.log_format == "json":
            self._json(_logformat.own("info", "serving", url=url))
        else:
            console.print(f"[bold]Serving.[/] Try: metaparticle call {url} '{{\"hello\": \"world\"}}'   (Ctrl-C stops)")
        if self.live:
            self._live_stop.clear()
            self._live_thread = threading.Thread(target=self._show_live, name="live-view", daemon=True)
            self._live_thread.start()

    def _show_live(self) -> None:
        """Scrapes every process once a second and redraws the table under the logs."""
        from rich.live import Live

        before = _live.scrape(_live.metrics_urls(self.endpoints))
        with Live(console=console, auto_refresh=False, transient=True) as live:
            while not self._live_stop.wait(1.0):
                endpoints = self.endpoints  # a --watch roll replaces it
                after = _live.scrape(_live.metrics_urls(endpoints))
                restarts = self.runner.restarts() if hasattr(self.runner, "restarts") else {}
                rows = _live.rows(before, after, _live.groups(endpoints), restarts)
                live.update(_live.table(rows, title=f"{endpoints['project']}: live (Ctrl-C stops)"), refresh=True)
                before = after

    def note(self, message: str, **fields: Any) -> None:
        """A line of the run itself (a reload, a roll)."""
        if self.log_format == "json":
            self._json(_logformat.own("info", message, **fields))
        else:
            console.print(f"[bold]{escape(message)}[/]", soft_wrap=True)

    def stopped(self, message: str) -> None:
        self.show_logs.clear()
        self._live_stop.set()
        if self._live_thread is not None:
            self._live_thread.join(timeout=5.0)
            self._live_thread = None
        if message:
            if self.log_format == "json":
                self._json(_logformat.own("info", message), sys.stderr)
            else:
                err_console.print(message)

    def failed(self, message: str) -> None:
        if self.log_format == "json":
            self._json(_logformat.own("error", message), sys.stderr)
            return
        err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)


@app.command()
def run(
    directory: Path = typer.Argument(..., help="The Pulumi program's directory (with Pulumi.yaml and __main__.py)."),
    port: int = typer.Option(8080, "--port", "-p", min=1, max=65535, help="Port of the (first) entry on 127.0.0.1."),
    request: Optional[str] = typer.Option(
        None, "--request", "-r", help="Send this JSON request once everything serves, print the answer, stop."
    ),
    ready_timeout: float = typer.Option(60.0, "--ready-timeout", min=1.0, help="Seconds to wait for every role to serve."),
    endpoints_json: Optional[Path] = typer.Option(
        None, "--endpoints-json", help="Once everything serves, write every pattern's endpoints to this file as JSON."
    ),
    target: str = typer.Option(
        "local", "--target", "-t", help="local (processes) or docker (containers on the local Docker-compatible engine)."
    ),
    detach: bool = typer.Option(
        False, "--detach", "-d", help="docker: leave the containers running, print the URL (metaparticle delete removes them)."
    ),
    python_version: Optional[str] = typer.Option(
        None, "--python-version", help="docker: the image's Python, major.minor (default: this Python's)."
    ),
    log_format: str = typer.Option(
        "text", "--log-format", help="text, or json: one object per line (time, level, pattern, role, replica, trace_id, message)."
    ),
    live: Optional[bool] = typer.Option(
        None, "--live/--no-live", help="A live table per role under the logs (default: when stdout is a terminal)."
    ),
    watch: bool = typer.Option(
        False, "--watch", "-w", help="local: when a file of DIRECTORY changes, re-evaluate and roll the changed roles."
    ),
) -> None:
    """Run the program's patterns as local processes on 127.0.0.1, or as containers (--target docker)."""
    from . import _runners as runners

    if _port_in_use(port):
        raise fail(f"port {port} on 127.0.0.1 is in use; choose another with --port", 2)
    if target not in ("local", "docker"):
        raise fail(f"--target must be local or docker, got {target!r}", 2)
    if target == "local" and (detach or python_version):
        raise fail("--detach and --python-version apply to --target docker", 2)
    if watch and (target != "local" or request is not None):
        raise fail("--watch applies to --target local, without --request", 2)
    if log_format not in _logformat.FORMATS:
        raise fail(f"--log-format must be text or json, got {log_format!r}", 2)
    body = _read_json_argument(request) if request is not None else None
    runner: runners.Runner
    if target == "docker":
        evaluation = _load(directory, target="docker")
        try:
            runner = runners.ContainerRunner.open(evaluation, directory, port=port, python_version=python_version)
        except runners.RunFailed as exc:
            raise fail(str(exc), exc.code) from None
    else:
        runner = runners.ProcessRunner(_load(directory, target="local", port=port))
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda signum, frame: stop.set())
    if live is None:
        live = console.is_terminal and log_format == "text" and body is None
    view = _Console(directory, log_format=log_format, live=live, runner=runner)
    watcher = None
    if watch:
        from ._watch import Watch

        def reevaluate(reuse: Any) -> Any:
            return evaluate(directory, target="local", port=port, reuse_ports=reuse, listening=runner.listening())

        watcher = Watch(directory, reevaluate, ignore=[endpoints_json] if endpoints_json else []).start()
    try:
        code = runners.run(
            runner, view, ready_timeout=ready_timeout, stop=stop, request=body, endpoints_json=endpoints_json,
            detach=detach, watch=watcher,
        )
    finally:
        if watcher is not None:
            watcher.close()
    if code:
        raise typer.Exit(code)


def _container_table(endpoints: dict[str, Any]) -> Table:
    table = Table(title=f"{endpoints['project']}: containers", title_justify="left")
    table.add_column("pattern")
    table.add_column("role", no_wrap=True)
    table.add_column("kind")
    table.add_column("containers", overflow="fold", no_wrap=False)
    for pattern in endpoints["patterns"]:
        for role in pattern["roles"]:
            names = "\n".join(role["containers"])
            if role["entry"]:
                names = f"[bold]{pattern['url']}[/]\n{pattern['grpc_url']}\n{names}"
            table.add_row(f"{pattern['pattern']} {pattern['name']}", role["name"], role["component"], names)
    return table


def _table(endpoints: dict[str, Any]) -> Group:
    """One table per pattern: its roles, their replicas and endpoints (the entry's URL first)."""
    tables = []
    for pattern in endpoints["patterns"]:
        table = Table(title=f"{pattern['pattern']} {pattern['name']!r}  {pattern['url']}", title_justify="left", title_style="bold")
        table.add_column("role", no_wrap=True)
        table.add_column("kind")
        table.add_column("replicas", justify="right")
        table.add_column("endpoints", no_wrap=True)
        for role in pattern["roles"]:
            ports = "\n".join(f"grpc://127.0.0.1:{p}" for p in role["grpc_ports"])
            if role["entry"]:
                ports = f"[bold]{pattern['url']}[/]\n{ports}"
            table.add_row(role["name"], role["component"], str(len(role["grpc_ports"])), ports)
        tables.append(table)
    return Group(*tables)


def _print_answer(result: Any) -> int:
    """Prints an answer (stdout) or a CallError (stderr, its document on stdout); the exit code."""
    if isinstance(result, CallError):
        err_console.print(f"[bold red]error:[/] {escape(str(result))}", soft_wrap=True)
        if result.document is not None and not isinstance(result.document, str):
            console.print_json(json.dumps(result.document))
        return 1
    console.print_json(json.dumps(result.body))
    return 0


def _send(url: str, body: bytes, timeout: float = 30.0) -> int:
    try:
        return _print_answer(call_entry(url, body, timeout=timeout))
    except CallError as exc:
        return _print_answer(exc)


@app.command()
def call(
    url: str = typer.Argument(..., help="The entry: http://127.0.0.1:8080 or grpc://127.0.0.1:50051."),
    request: Optional[str] = typer.Argument(None, help="The JSON request (read from stdin when omitted)."),
    timeout: float = typer.Option(30.0, "--timeout", "-t", min=0.001, help="Seconds to wait for the answer."),
) -> None:
    """Send one JSON request to a pattern's entry and print the answer."""
    code = _send(url, _read_json_argument(request), timeout)
    if code:
        raise typer.Exit(code)


def _config_pairs(values: list[str]) -> dict[str, str]:
    config: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise fail(f"--config takes KEY=VALUE (e.g. metaparticle:namespace=prod), got {item!r}", 2)
        config[key if ":" in key else f"metaparticle:{key}"] = value
    return config


@app.command()
def render(
    directory: Path = typer.Argument(..., help="The Pulumi program's directory."),
    out: Path = typer.Option(..., "--out", "-o", help="Directory to write the manifests into (one YAML per object)."),
    config: list[str] = typer.Option([], "--config", "-c", help="Pulumi config KEY=VALUE (metaparticle:namespace=prod)."),
    include_secrets: bool = typer.Option(
        False, "--include-secrets", help="Also write the Secrets that hold secret env values (mode 0600)."
    ),
) -> None:
    """Write the Kubernetes manifests the program would apply, offline (`kubectl apply -f OUT` ready)."""
    from ._manifests import render_manifests

    try:
        written = render_manifests(directory, out, config=_config_pairs(config), include_secrets=include_secrets)
    except ProgramError as exc:
        raise fail(str(exc), 2) from None
    if not written and not written.left_out:
        raise fail(f"{directory} declares no Kubernetes objects", 2)
    for path in written:
        console.print(str(path))
    err_console.print(f"wrote {len(written)} manifests to {out}")
    for name in written.left_out:
        err_console.print(f"left out Secret {name}: it holds secret values (--include-secrets writes it, mode 0600)")
    for resource in written.outside:
        err_console.print(f"not rendered: {resource} (declared outside a pattern; pulumi up applies it)")


@app.command()
def preview(
    directory: Path = typer.Argument(..., help="The Pulumi program's directory."),
    target: str = typer.Option("kubernetes", "--target", "-t", help="kubernetes or docker."),
    config: list[str] = typer.Option([], "--config", "-c", help="Pulumi config KEY=VALUE."),
) -> None:
    """Print the resource tree `pulumi up` would create, offline."""
    from ._manifests import preview_tree

    if target not in ("kubernetes", "docker"):
        raise fail(f"--target must be kubernetes or docker, got {target!r}", 2)
    try:
        tree = preview_tree(directory, target, config=_config_pairs(config))
    except ProgramError as exc:
        raise fail(str(exc), 2) from None
    console.print(tree, end="", markup=False, soft_wrap=True)


@app.command()
def delete(
    directory: Path = typer.Argument(..., help="The Pulumi program's directory."),
    target: str = typer.Option(
        "docker", "--target", "-t", help="docker: what `run --target docker --detach` left; local: the data of storage= patterns."
    ),
    images: bool = typer.Option(False, "--images", help="Remove the program's images too (the next run builds them anew)."),
    volumes: bool = typer.Option(False, "--volumes", help="docker: remove the data volumes of storage= patterns too."),
) -> None:
    """Remove the program's containers and networks from the local engine (found by their labels),
    or with --target local the data its storage= patterns keep on disk."""
    from . import _containers as engine
    from ._program import read_project

    if target == "local":
        if images or volumes:
            raise fail("--images and --volumes apply to --target docker", 2)
        _delete_local_state(directory)
        return
    if target != "docker":
        raise fail("delete removes what --target docker runs, or with --target local the local data; Kubernetes objects go with pulumi destroy", 2)
    try:
        project, _ = read_project(directory.resolve())
    except ProgramError as exc:
        raise fail(str(exc), 2) from None
    try:
        removed = engine.delete(engine.connect(), project, images=images, volumes=volumes)
    except engine.EngineError as exc:
        raise fail(str(exc), 1) from None
    if not (removed or removed.images or removed.volumes):
        console.print(f"nothing of {project} is on the engine")
        return
    for name in removed.containers:
        console.print(f"removed container {name}")
    for name in removed.networks:
        console.print(f"removed network {name}")
    for name in removed.images:
        console.print(f"removed image {name}")
    for name in removed.volumes:
        console.print(f"removed volume {name}")
    err_console.print(f"removed {len(removed.containers)} containers and {len(removed.networks)} networks of {project}")
    if not volumes and removed.kept_volumes:
        err_console.print(f"kept {len(removed.kept_volumes)} data volumes (--volumes removes them): {', '.join(removed.kept_volumes)}")


def _delete_local_state(directory: Path) -> None:
    """`delete --target local`: the data directories of the program's storage= patterns."""
    from . import _state as state
    from ._program import read_project

    try:
        read_project(directory.resolve())
    except ProgramError as exc:
        raise fail(str(exc), 2) from None
    try:
        removed = state.delete(directory)
    except OSError as exc:
        raise fail(f"cannot remove {directory / state.STATE_DIR}: {exc.strerror or exc}", 1) from None
    if not removed:
        console.print(f"no local data in {directory / state.STATE_DIR}")
    for path in removed:
        console.print(f"removed {path}")


def _engine_result(result: Any, json_out: Optional[Path]) -> None:
    """The change summary and outputs of an engine operation, on stderr; as JSON into `json_out`."""
    changes = ", ".join(f"{count} {kind}" for kind, count in sorted(result.changes.items())) or "nothing"
    err_console.print(f"{result.operation}: {changes}")
    for key, value in sorted(result.outputs.items()):
        console.print(f"{key}: {value}")
    for key in result.secret_outputs:
        console.print(f"{key}: [secret]", markup=False)
    if json_out is not None:
        json_out.write_text(json.dumps(result.to_json(), indent=2, sort_keys=True) + "\n")


def _open_stack(directory: Path, stack: str, config: list[str], create: bool = True) -> Any:
    from . import _engine

    pairs: dict[str, str] = {}
    for item in config:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise fail(f"--config takes KEY=VALUE (e.g. metaparticle:namespace=prod or replicas=5), got {item!r}", 2)
        pairs[key] = value
    try:
        project = _engine.Project.load(directory)
        # As with `pulumi config set`: a key without a namespace is the project's own.
        qualified = {k if ":" in k else f"{project.name}:{k}": v for k, v in pairs.items()}
        return _engine.open_stack(project, stack, config=qualified, create=create)
    except ProgramError as exc:
        raise fail(str(exc), 2) from None
    except _engine.StackError as exc:
        raise fail(str(exc), 1) from None


@app.command()
def up(
    directory: Path = typer.Argument(..., help="The Pulumi project's directory (with Pulumi.yaml)."),
    stack: str = typer.Option("dev", "--stack", "-s", help="The stack (created when missing)."),
    config: list[str] = typer.Option(
        [], "--config", "-c", help="Stack config KEY=VALUE (a KEY without namespace is the project's), kept in Pulumi.<stack>.yaml."
    ),
    preview_only: bool = typer.Option(False, "--preview", help="Show what would change and change nothing."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the change summary and outputs as JSON here."),
) -> None:
    """Deploy through the Pulumi engine (`pulumi up`), the program run in-process by the Automation API."""
    from . import _engine

    handle = _open_stack(directory, stack, config)
    try:
        with _ctrl_c_lets_the_engine_cancel() as interrupted:
            if preview_only:
                result = _engine.preview(handle, on_output=lambda line: console.print(line, markup=False, highlight=False))
            else:
                result = _engine.up(handle, on_output=lambda line: console.print(line, markup=False, highlight=False))
    except _engine.StackError as exc:
        raise _engine_failure(exc, directory, stack, interrupted) from None
    _engine_result(result, json_out)


@app.command()
def destroy(
    directory: Path = typer.Argument(..., help="The Pulumi project's directory (with Pulumi.yaml)."),
    stack: str = typer.Option("dev", "--stack", "-s", help="The stack to empty."),
    remove: bool = typer.Option(False, "--remove", help="Remove the stack and its config file afterwards (`pulumi stack rm`)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the change summary as JSON here."),
) -> None:
    """Delete every resource of the stack through the Pulumi engine (`pulumi destroy`)."""
    from . import _engine

    handle = _open_stack(directory, stack, [], create=False)
    try:
        with _ctrl_c_lets_the_engine_cancel() as interrupted:
            result = _engine.destroy(handle, remove=remove, on_output=lambda line: console.print(line, markup=False, highlight=False))
    except _engine.StackError as exc:
        raise _engine_failure(exc, directory, stack, interrupted) from None
    _engine_result(result, json_out)


class _Interrupted:
    """How many times Ctrl-C came during an engine operation."""

    def __init__(self) -> None:
        self.count = 0

    def __bool__(self) -> bool:
        return self.count > 0


@contextmanager
def _ctrl_c_lets_the_engine_cancel() -> Iterator[_Interrupted]:
    """A first Ctrl-C waits for the engine, which the terminal interrupts too, to cancel the
    operation, let the resources it has begun finish and release the stack's lock (quitting at once
    left the lock, a pending create and the provider plugins behind); a second quits at once."""
    interrupted = _Interrupted()

    def on_interrupt(signum: int, frame: Any) -> None:
        interrupted.count += 1
        if interrupted.count > 1:
            raise KeyboardInterrupt
        err_console.print(
            "interrupted: the engine cancels the operation and releases the stack's lock once the changes under way "
            "are done; Ctrl-C again to quit at once (the stack then stays locked: metaparticle cancel unlocks it)",
            soft_wrap=True, markup=False,
        )

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield interrupted
    finally:
        signal.signal(signal.SIGINT, previous)


@app.command()
def cancel(
    directory: Path = typer.Argument(..., help="The Pulumi project's directory (with Pulumi.yaml)."),
    stack: str = typer.Option("dev", "--stack", "-s", help="The stack to unlock."),
) -> None:
    """Unlock a stack that a killed `up` or `destroy` left locked (`pulumi cancel`), and list the
    objects that operation was creating (any it created are outside the stack's state)."""
    from . import _engine

    handle = _open_stack(directory, stack, [], create=False)
    try:
        creating = _engine.cancel(handle)
    except _engine.StackError as exc:
        raise fail(str(exc), 1) from None
    err_console.print(f"cancel: stack {stack!r} is unlocked")
    if creating:
        err_console.print(
            "The stopped operation was creating these objects. Any it created are not in the stack's state, "
            "and the next up may fail on them (a field conflict) until they are deleted:",
            soft_wrap=True, markup=False,
        )
        for name in creating:
            console.print(f"  {name}", markup=False)


def _engine_failure(error: StackError, directory: Path, stack: str, interrupted: "_Interrupted") -> "typer.Exit":
    """The exit of a failed engine operation: 130 after Ctrl-C, saying so, else 1."""
    if interrupted:
        return fail(f"interrupted: the engine stopped the operation; run the same command again to finish it\n{error}", 130)
    return fail(_stack_failure(error, directory, stack), 1)


def _stack_failure(error: StackError, directory: Path, stack: str) -> str:
    """The engine's message, and for a locked stack how to unlock it once nothing else runs on it."""
    from . import _engine

    message = str(error)
    if _engine.locked(error):
        message += (
            f"\nIf no other `metaparticle up` or `pulumi` operation runs on stack {stack!r} (one that was killed leaves "
            f"its lock behind), unlock it with: metaparticle cancel {directory} --stack {stack}"
        )
    return message


def main() -> None:
    with event_loops_closed():
        app()


