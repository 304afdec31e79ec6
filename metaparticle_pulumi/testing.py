"""Unit tests for infrastructure built from metaparticle patterns: offline, with Pulumi's mocks.

    import metaparticle_pulumi as mp
    from metaparticle_pulumi import testing

    def test_api_has_three_replicas():
        with testing.mocked(target="kubernetes") as stack:
            mp.Spread("api", function=handler, replicas=3)
        (replicas,) = stack.objects(kind="Deployment", name="api-replica")
        assert replicas["spec"]["replicas"] == 3

    stack = testing.evaluate("path/to/program")          # a whole Pulumi program
    stack.resources(type="kubernetes:apps/v1:Deployment")
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

import pulumi

from . import _registry
from ._outputs import event_loop
from ._program import MockResource, RecordingMocks, is_secret, reveal
from ._program import evaluate as _evaluate_program

__all__ = ["MockedStack", "Mocks", "evaluate", "is_secret", "mocked", "reveal"]


#: The mocks `mocked()` and `evaluate()` use: every registration recorded, plausible computed values.
Mocks = RecordingMocks


@dataclass
class MockedStack:
    """What a program or a `mocked()` block registered, with helpers to look at it."""

    mocks: RecordingMocks
    patterns: list[Any] = field(default_factory=list)

    def resources(self, type: Optional[str] = None, name: Optional[str] = None) -> list[MockResource]:
        """Registered resources, optionally only those of one type token and/or Pulumi name."""
        return [
            r for r in self.mocks.resources if (type is None or r.type == type) and (name is None or r.name == name)
        ]

    def resource(self, type: str, name: str) -> MockResource:
        """The one resource of this type and name (fails if there is none or several)."""
        found = self.resources(type=type, name=name)
        if len(found) != 1:
            raise LookupError(f"expected one {type} named {name!r}, found {len(found)}")
        return found[0]

    def objects(self, kind: Optional[str] = None, name: Optional[str] = None) -> list[dict[str, Any]]:
        """Kubernetes objects as registered (apiVersion, kind, metadata, spec...), by kind and metadata.name."""
        out = []
        for r in self.mocks.resources:
            if not r.type.startswith("kubernetes:") or r.type.startswith("pulumi:providers"):
                continue
            obj = r.inputs
            if kind is not None and obj.get("kind") != kind:
                continue
            if name is not None and (obj.get("metadata") or {}).get("name") != name:
                continue
            out.append(obj)
        return out

    def value(self, output: Any) -> Any:
        """The value of an Output (None while unknown, as in a preview)."""
        if not isinstance(output, pulumi.Output):
            return output
        return event_loop().run_until_complete(output.future())

    def settle(self, timeout: float = 60.0) -> None:
        """Waits until every registration the code made so far has completed (at most `timeout` s)."""
        loop = event_loop()
        deadline = time.monotonic() + timeout
        while pending := [t for t in asyncio.all_tasks(loop) if not t.done()]:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{len(pending)} registrations still pending after {timeout} s")
            loop.run_until_complete(asyncio.wait(pending, timeout=left))
        self.patterns = _registry.declared()


@contextmanager
def mocked(
    target: str = "kubernetes",
    *,
    config: Optional[Mapping[str, str]] = None,
    preview: bool = False,
    project: str = "test",
    stack: str = "test",
    source_dir: Optional[str | os.PathLike[str]] = None,
) -> Iterator[MockedStack]:
    """Declares patterns inside the block against mocks instead of a cloud.

    `source_dir` is the program's directory that images are built from (default: an empty
    temporary one, removed afterwards). `config` adds Pulumi config ("metaparticle:registry": ...).
    The stack settles when the block ends; call `stack.settle()` to look inside the block.
    """
    temporary = None
    if source_dir is None:
        temporary = tempfile.mkdtemp(prefix="metaparticle-test-")
        source_dir = temporary
    event_loop()
    mocks = Mocks(preview=preview)
    pulumi.runtime.set_mocks(mocks, project=project, stack=stack, preview=preview)
    pulumi.runtime.set_all_config({"metaparticle:target": target, **dict(config or {})})
    _registry.reset(str(Path(source_dir).resolve()))
    result = MockedStack(mocks)
    try:
        try:
            yield result
        except BaseException:
            # Let what was registered before the failure finish, so it cannot fail a later stack.
            try:
                result.settle()
            except Exception:  # noqa: BLE001 - the original failure is the one to report
                pass
            raise
        result.settle()
    finally:
        _registry.reset(None)
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)


def evaluate(
    directory: str | os.PathLike[str],
    target: str = "kubernetes",
    *,
    config: Optional[Mapping[str, str]] = None,
    preview: bool = False,
    stack: str = "dev",
) -> MockedStack:
    """Runs the Pulumi program in `directory` under mocks, as `pulumi up` (or preview) would."""
    evaluation = _evaluate_program(directory, target=target, config=config, preview=preview, stack=stack)
    mocks = RecordingMocks(preview=preview)
    mocks.resources = evaluation.resources
    return MockedStack(mocks, list(evaluation.patterns))
