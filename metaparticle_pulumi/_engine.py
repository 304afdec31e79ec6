"""Deploying a program through the real Pulumi engine: preview, up, destroy and stack removal.

This drives the Pulumi CLI with the Automation API and runs the program in-process, exactly as the
Python language host would run it (its directory as cwd, its code first on sys.path, `__main__`),
so only the `pulumi` CLI and the providers' plugins are needed, not the `pulumi-language-python`
plugin. State, config and secrets live wherever the CLI is pointed at (`PULUMI_BACKEND_URL`,
`PULUMI_CONFIG_PASSPHRASE`); stack config files land in the project's directory as with `pulumi`.
"""

from __future__ import annotations

import runpy
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from pulumi import automation as auto

from . import _registry
from ._errors import StackError
from ._program import ProgramError, _program_environment, read_project


@dataclass(frozen=True)
class Project:
    """A Pulumi project on disk: its directory (with Pulumi.yaml), name and main program file."""

    directory: Path
    name: str
    main: Path

    @classmethod
    def load(cls, directory: str | Path) -> "Project":
        path = Path(directory).resolve()
        if not path.is_dir():
            raise ProgramError(f"{path} is not a directory")
        if not (path / "Pulumi.yaml").is_file():
            raise ProgramError(f"{path} has no Pulumi.yaml: not a Pulumi project")
        name, main = read_project(path)
        return cls(path, name, main.resolve())

    def program(self) -> Callable[[], None]:
        """The program as the Automation API runs it inline: as `pulumi up` would run `main`."""
        code_dir = self.main.parent

        def run() -> None:
            _registry.reset(str(code_dir))
            try:
                with _program_environment(self.directory, code_dir):
                    runpy.run_path(str(self.main), run_name="__main__")
            finally:
                _registry.reset(None)

        return run


@dataclass
class Result:
    """What one engine operation did: resource changes by kind of step, and the stack's outputs."""

    operation: str
    changes: dict[str, int]
    outputs: dict[str, Any] = field(default_factory=dict)
    #: Names of the outputs that are secrets (their values are left out of `outputs`).
    secret_outputs: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "operation": self.operation,
            "changes": self.changes,
            "outputs": self.outputs,
            "secret_outputs": self.secret_outputs,
        }


def pulumi_cli() -> str:
    """The `pulumi` executable on PATH, or a clear error saying how to get one."""
    found = shutil.which("pulumi")
    if not found:
        raise StackError(
            "no `pulumi` on PATH: install the Pulumi CLI, or build one with `scripts/cluster build` "
            "and `eval \"$(scripts/cluster env)\"`"
        )
    return found


def open_stack(
    project: Project,
    stack: str,
    *,
    config: Optional[Mapping[str, str]] = None,
    create: bool = True,
) -> auto.Stack:
    """The stack `stack` of `project` (created when `create` and missing), with `config` set on it."""
    pulumi_cli()
    options = auto.LocalWorkspaceOptions(work_dir=str(project.directory))
    try:
        if create:
            handle = auto.create_or_select_stack(stack, project.name, project.program(), opts=options)
        else:
            handle = auto.select_stack(stack, project.name, project.program(), opts=options)
        values = {k: auto.ConfigValue(v) for k, v in (config or {}).items()}
        if values:
            handle.set_all_config(values)
    except auto.StackNotFoundError:
        raise StackError(f"{project.name}: no stack {stack!r}") from None
    except auto.CommandError as exc:
        raise StackError(_cli_message(exc)) from None
    return handle


def preview(handle: auto.Stack, *, on_output: Optional[Callable[[str], None]] = None) -> Result:
    """What `pulumi up` would change, without changing anything."""
    try:
        result = handle.preview(on_output=on_output, diff=True)
    except auto.CommandError as exc:
        raise StackError(_cli_message(exc)) from None
    return Result("preview", {str(k): int(v) for k, v in result.change_summary.items()})


def up(handle: auto.Stack, *, on_output: Optional[Callable[[str], None]] = None) -> Result:
    """Creates, updates and deletes resources until the stack matches the program."""
    try:
        result = handle.up(on_output=on_output, diff=True)
    except auto.CommandError as exc:
        raise StackError(_cli_message(exc)) from None
    changes = {str(k): int(v) for k, v in (result.summary.resource_changes or {}).items()}
    return Result("up", changes, *_outputs(result.outputs))


def destroy(
    handle: auto.Stack, *, remove: bool = False, on_output: Optional[Callable[[str], None]] = None
) -> Result:
    """Deletes every resource of the stack; `remove` also deletes the stack and its config file."""
    try:
        result = handle.destroy(on_output=on_output)
        if remove:
            handle.workspace.remove_stack(handle.name)
    except auto.CommandError as exc:
        raise StackError(_cli_message(exc)) from None
    changes = {str(k): int(v) for k, v in (result.summary.resource_changes or {}).items()}
    return Result("destroy", changes)


def cancel(handle: auto.Stack) -> list[str]:
    """Ends the stack's current update and removes its lock (`pulumi cancel`): for a stack left
    locked by an operation that was killed midway, not one still running elsewhere.

    Returns the objects that operation was creating ("TYPE NAME", Kubernetes ones as
    "Kind namespace/name"): those it had created exist without being in the stack's state."""
    try:
        handle.cancel()
        pending = handle.export_stack().deployment.get("pending_operations") or []
    except auto.CommandError as exc:
        raise StackError(_cli_message(exc)) from None
    return [_pending_object(op["resource"]) for op in pending if op.get("type") == "creating" and op.get("resource")]


def _pending_object(resource: Mapping[str, Any]) -> str:
    kind = str(resource.get("type", "?"))
    metadata = (resource.get("inputs") or {}).get("metadata") or {}
    if kind.startswith("kubernetes:") and metadata.get("name"):
        where = f"{metadata['namespace']}/{metadata['name']}" if metadata.get("namespace") else metadata["name"]
        return f"{kind.rsplit(':', 1)[-1]} {where}"
    return f"{kind} {str(resource.get('urn', '')).rsplit('::', 1)[-1]}"


def locked(error: StackError) -> bool:
    """Whether the engine refused because another operation holds the stack's lock."""
    return "currently locked" in str(error)


def outputs(handle: auto.Stack) -> Result:
    """The stack's current outputs."""
    try:
        values = handle.outputs()
    except auto.CommandError as exc:
        raise StackError(_cli_message(exc)) from None
    return Result("outputs", {}, *_outputs(values))


def _outputs(values: Mapping[str, auto.OutputValue]) -> tuple[dict[str, Any], list[str]]:
    plain = {k: v.value for k, v in values.items() if not v.secret}
    return plain, sorted(k for k, v in values.items() if v.secret)


def _cli_message(exc: auto.CommandError) -> str:
    """The lines of the CLI's output that say what went wrong (its `error:` lines and diagnostics)."""
    text = str(exc)
    lines = [line.rstrip() for line in text.splitlines()]
    errors = [line.strip() for line in lines if "error:" in line or line.strip().startswith("error")]
    return "\n".join(dict.fromkeys(errors)) if errors else text.strip()
