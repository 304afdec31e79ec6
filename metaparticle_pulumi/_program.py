"""Evaluating a Pulumi program offline, with Pulumi's own mock runtime, into its patterns.

This is how `metaparticle run`, `render` and `preview` read a program without the Pulumi CLI: the
program runs exactly as `pulumi up` would run it, but every resource registration is answered by
mocks instead of a cloud.
"""

from __future__ import annotations

import os
import runpy
import sys
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection, Iterator, Mapping

import pulumi
import yaml

from . import _registry
from ._errors import Error, PatternError
from ._ports import Ports
from ._outputs import event_loop
from ._targets import local


class ProgramError(Error):
    """The program cannot be evaluated; the message is one line meant for the user."""


#: How Pulumi's resource protocol marks a secret value: a mapping whose signature key holds the
#: secret signature, the plain value under "value" (the same on every language SDK and the engine).
SIGNATURE_KEY = "4dabf18193072939515e22adb298388d"
SECRET_SIGNATURE = "1b47061264138c4ac30d75fd1eb44270"


def is_secret(value: Any) -> bool:
    """Whether a registered input value is marked secret (Pulumi keeps it encrypted in state)."""
    return isinstance(value, dict) and value.get(SIGNATURE_KEY) == SECRET_SIGNATURE


def reveal(value: Any) -> Any:
    """A registered input value with every secret marker removed (the plain values)."""
    if is_secret(value):
        return reveal(value["value"])
    if isinstance(value, dict):
        return {k: reveal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [reveal(v) for v in value]
    return value


@dataclass
class MockResource:
    """One resource the program registered."""

    type: str
    name: str
    inputs: dict[str, Any]
    provider: str | None = None
    id: str = ""


@dataclass
class Evaluation:
    """What a program declared."""

    directory: Path
    project: str
    patterns: list[Any]
    resources: list[MockResource] = field(default_factory=list)
    plans: list[local.LocalPlan] = field(default_factory=list)
    #: The local target's ports, held until each process that serves on one binds it.
    ports: Ports = field(default_factory=Ports)


class RecordingMocks(pulumi.runtime.Mocks):
    """Answers every registration with its inputs (plus plausible computed values) and records it."""

    def __init__(self, preview: bool = False) -> None:
        self.resources: list[MockResource] = []
        self.preview = preview
        self._next_host_port = 32768

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        outputs = dict(args.inputs)
        rid = f"{args.name}-id"
        if args.typ == "docker:index/image:Image" or args.typ == "docker-build:index:Image":
            name = outputs.get("imageName") or outputs.get("tags", [args.name])[0]
            if not self.preview:
                outputs.setdefault("repoDigest", f"{str(name).split(':')[0]}@sha256:{'0' * 64}")
                outputs.setdefault("imageName", name)
        if args.typ.startswith("kubernetes:") and "metadata" in outputs:
            meta = dict(outputs.get("metadata") or {})
            meta.setdefault("name", args.name)
            meta.setdefault("namespace", "default")
            outputs["metadata"] = meta
        if args.typ == "docker:index/container:Container" and not self.preview:
            # The host ports Docker assigns to published ports that name none.
            ports = []
            for port in outputs.get("ports") or []:
                port = dict(port)
                if not port.get("external"):
                    port["external"] = self._next_host_port
                    self._next_host_port += 1
                ports.append(port)
            outputs["ports"] = ports
        if args.typ == "kubernetes:core/v1:Service":
            spec = outputs.get("spec") or {}
            if spec.get("type") == "LoadBalancer":
                outputs["status"] = {"loadBalancer": {"ingress": [{"ip": "203.0.113.10"}]}}
        self.resources.append(MockResource(args.typ, args.name, dict(args.inputs), args.provider, rid))
        return rid, outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        return {}, None


def read_project(directory: Path) -> tuple[str, Path]:
    """The project's name and its main program file, from Pulumi.yaml."""
    project_file = directory / "Pulumi.yaml"
    name = directory.name
    main = directory / "__main__.py"
    if project_file.exists():
        try:
            doc = yaml.safe_load(project_file.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ProgramError(f"{project_file} is not valid YAML: {str(exc).splitlines()[0]}") from None
        if not isinstance(doc, dict):
            raise ProgramError(f"{project_file} must be a mapping with name and runtime")
        name = str(doc.get("name") or name)
        runtime = doc.get("runtime")
        runtime_name = runtime.get("name") if isinstance(runtime, dict) else runtime
        if runtime_name not in (None, "python"):
            raise ProgramError(f"{project_file}: runtime is {runtime_name!r}; only Python programs are supported")
        if doc.get("main"):
            main = directory / str(doc["main"])
            root = directory.resolve()
            if main.resolve() != root and root not in main.resolve().parents:
                raise ProgramError(f"{project_file}: main {doc['main']!r} lies outside the project directory {root}")
            if main.is_dir():
                main = main / "__main__.py"
    if not main.exists():
        raise ProgramError(f"{directory} has no __main__.py: not a Pulumi Python program")
    return name, main


@contextmanager
def _program_environment(directory: Path, code_dir: Path) -> Iterator[None]:
    """cwd (the project), sys.path (the program's code first) and sys.modules as `pulumi up` gives a
    program; restored afterwards."""
    old_cwd = os.getcwd()
    old_path = list(sys.path)
    before = set(sys.modules)
    os.chdir(directory)
    sys.path.insert(0, str(code_dir))
    try:
        yield
    finally:
        os.chdir(old_cwd)
        sys.path[:] = old_path
        prefix = str(code_dir) + os.sep
        for name in set(sys.modules) - before:
            file = getattr(sys.modules.get(name), "__file__", None) or ""
            if file.startswith(prefix):
                del sys.modules[name]


def evaluate(
    directory: str | os.PathLike[str],
    *,
    target: str = "local",
    port: int | None = None,
    config: Mapping[str, str] | None = None,
    stack: str = "dev",
    preview: bool = False,
    reuse_ports: Mapping[Any, int] | None = None,
    listening: Collection[int] = (),
) -> Evaluation:
    """Runs the program in `directory` under Pulumi's mocks with `metaparticle:target` = `target`;
    `reuse_ports` are an earlier evaluation's `ports.keys` and `listening` the entry ports the run
    listens on (for `run --watch`)."""
    directory = Path(directory).resolve()
    if not directory.is_dir():
        raise ProgramError(f"{directory} is not a directory")
    project, main = read_project(directory)
    mocks = RecordingMocks(preview=preview)
    event_loop()  # Pulumi schedules on the thread's loop; a finished asyncio.run() left none
    pulumi.runtime.set_mocks(mocks, project=project, stack=stack, preview=preview)
    settings: dict[str, str] = {"metaparticle:target": target}
    settings.update(config or {})
    pulumi.runtime.set_all_config(settings)
    code_dir = main.parent.resolve()
    ports = Ports(entry=port, reuse=reuse_ports, listening=listening)
    _registry.reset(str(code_dir), ports)

    # pulumi.runtime.test runs a function under the mocks and waits for everything it registered.
    @pulumi.runtime.test
    def run_program() -> None:
        runpy.run_path(str(main), run_name="__main__")

    patterns: list[Any] = []
    try:
        with _program_environment(directory, code_dir):
            run_program()
            patterns = _registry.declared()
    except BaseException as exc:
        ports.close()
        if isinstance(exc, SyntaxError):
            where = f"{exc.filename}:{exc.lineno}" if exc.filename else str(main)
            raise ProgramError(f"{where}: SyntaxError: {exc.msg}") from None
        if isinstance(exc, Exception) and not isinstance(exc, ProgramError):  # any failure of the user's program
            raise ProgramError(_one_line(exc, main)) from None
        raise
    finally:
        _registry.reset(None)
    patterns = _registry.main_first(patterns)
    plans = [p.local_plan for p in patterns if getattr(p, "local_plan", None) is not None]
    return Evaluation(directory, project, patterns, mocks.resources, plans, ports)


def _one_line(exc: BaseException, main: Path) -> str:
    """`file:line: Type: message` at the deepest frame inside the program, else the message alone."""
    if isinstance(exc, PatternError):
        return str(exc)
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.startswith(str(main.parent))]
    where = f"{frames[-1].filename}:{frames[-1].lineno}: " if frames else ""
    return f"{where}{type(exc).__name__}: {exc}"
