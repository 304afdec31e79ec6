"""Helpers for the target tests: example programs copied out of the repo, objects by kind, env as dicts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Iterable

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
PROGRAMS = Path(__file__).resolve().parent / "programs"

#: The example of each pattern, and the roles it must expand into (name -> replicas).
EXAMPLE_ROLES: dict[str, dict[str, int]] = {
    "hello_world": {"hello": 1},
    "spread": {"api-router": 1, "api-replica": 3},
    "shard": {"users-router": 1, "users-shard-0": 1, "users-shard-1": 1, "users-shard-2": 1},
    "scatter_gather": {
        "search-root": 1,
        "search-leaf-0": 1,
        "search-leaf-1": 1,
        "search-leaf-2": 1,
        "search-leaf-3": 1,
    },
}
#: Each example's entry role.
EXAMPLE_ENTRY = {"hello_world": "hello", "spread": "api-router", "shard": "users-router", "scatter_gather": "search-root"}
#: The replicas of each role on kubernetes and docker, where routers and roots run twice by default.
DEPLOYED_ROLES: dict[str, dict[str, int]] = {
    example: {role: (2 if role == EXAMPLE_ENTRY[example] and example != "hello_world" else n) for role, n in roles.items()}
    for example, roles in EXAMPLE_ROLES.items()
}

FAKE_DIGEST = "@sha256:" + "0" * 64


def copy_program(name: str, destination: Path) -> Path:
    """A copy of an example (or of tests/programs/<name>) so builds never write into the repo."""
    source = EXAMPLES / name if (EXAMPLES / name).is_dir() else PROGRAMS / name
    target = destination / name
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", ".metaparticle"))
    return target


def write_program(directory: Path, source: str, name: str = "test-program", files: dict[str, str] | None = None) -> Path:
    """A small Pulumi program: Pulumi.yaml plus `source` as __main__.py (plus other files)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "Pulumi.yaml").write_text(f"name: {name}\nruntime: python\n")
    (directory / "__main__.py").write_text(source)
    for rel, text in (files or {}).items():
        path = directory / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return directory


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    """A container's env as name -> value (or the valueFrom mapping)."""
    names = [e["name"] for e in container.get("env", [])]
    assert len(names) == len(set(names)), f"duplicate env names: {names}"
    return {e["name"]: e["value"] if "value" in e else {"valueFrom": e["valueFrom"]} for e in container.get("env", [])}


def container_of(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """Whether matchLabels `selector` selects an object with `labels`."""
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def by_name(objects: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for obj in objects:
        name = obj["metadata"]["name"]
        assert name not in out, f"two {obj['kind']} objects named {name}"
        out[name] = obj
    return out


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def evaluate_examples(tmp_path_factory: Any, target: str) -> dict[str, Any]:
    """Every example, copied out of the repo, evaluated once for `target` (as `pulumi up` would run it)."""
    from metaparticle_pulumi import testing

    return {
        name: testing.evaluate(copy_program(name, tmp_path_factory.mktemp(name)), target)
        for name in EXAMPLE_ROLES
    }
