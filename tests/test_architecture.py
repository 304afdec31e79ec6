"""The import rules of docs/architecture.md, read from the source (ast), so a shortcut fails here."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "metaparticle_pulumi"
RUNTIME = REPO / "runtime" / "metaparticle_runtime"


def _module(path: Path, root: Path, package: str) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = [package, *rel.parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, module: str) -> list[tuple[str, bool]]:
    """(absolute module imported, whether only under `if TYPE_CHECKING:`) for every import."""
    tree = ast.parse(path.read_text())
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typing_only.update(id(n) for child in node.body for n in ast.walk(child))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, id(node) in typing_only) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [target] + [f"{target}.{a.name}" for a in node.names]
            out += [(n, id(node) in typing_only) for n in names]
    return out


def _sources(root: Path, package: str) -> dict[str, Path]:
    return {_module(p, root, package): p for p in root.rglob("*.py") if "proto" not in p.parts}


DEPLOY = _sources(PACKAGE, "metaparticle_pulumi")
SERVE = _sources(RUNTIME, "metaparticle_runtime")


def _runtime_imports(module: str, path: Path) -> set[str]:
    return {name for name, typing_only in _imports(path, module) if not typing_only}


@pytest.mark.parametrize("module", sorted(SERVE))
def test_the_runtime_imports_neither_the_deploy_side_nor_pulumi(module):
    bad = {n for n in _runtime_imports(module, SERVE[module]) if n.split(".")[0] in ("metaparticle_pulumi", "pulumi", "pulumi_kubernetes", "pulumi_docker")}
    assert not bad, f"{module} imports {sorted(bad)}"


@pytest.mark.parametrize("module", sorted(m for m in DEPLOY if m.startswith("metaparticle_pulumi._specs")))
def test_specs_apply_nothing(module):
    forbidden = ("pulumi", "pulumi_kubernetes", "pulumi_docker", "docker", "metaparticle_pulumi._targets", "metaparticle_pulumi._containers",
                 "metaparticle_pulumi._supervisor", "metaparticle_pulumi._cli", "metaparticle_pulumi._engine")
    bad = {n for n in _runtime_imports(module, DEPLOY[module]) if any(n == f or n.startswith(f + ".") for f in forbidden)}
    assert not bad, f"{module} imports {sorted(bad)}"


@pytest.mark.parametrize("module", sorted(m for m in DEPLOY if m.startswith("metaparticle_pulumi._targets")))
def test_targets_import_patterns_only_for_type_checking(module):
    bad = {n for n in _runtime_imports(module, DEPLOY[module]) if n.startswith("metaparticle_pulumi._patterns")}
    assert not bad, f"{module} imports {sorted(bad)} at run time (a cycle with patterns)"


@pytest.mark.parametrize("module", sorted(DEPLOY))
def test_only_users_import_testing_and_nothing_imports_the_cli(module):
    if module in ("metaparticle_pulumi.testing", "metaparticle_pulumi._cli", "metaparticle_pulumi.__main__"):
        return
    names = {n for n, _ in _imports(DEPLOY[module], module)}
    def imports(target: str) -> bool:
        return any(n == target or n.startswith(target + ".") for n in names)

    assert not imports("metaparticle_pulumi.testing"), f"{module} imports testing"
    assert not imports("metaparticle_pulumi._cli"), f"{module} imports the CLI"


@pytest.mark.parametrize("module", sorted(DEPLOY) + sorted(SERVE))
def test_no_private_names_of_other_libraries(module):
    path = DEPLOY.get(module) or SERVE[module]
    ours = ("metaparticle_pulumi", "metaparticle_runtime")
    private = [
        n for n, _ in _imports(path, module)
        if not n.startswith(ours) and any(part.startswith("_") and not part.startswith("__") for part in n.split("."))
    ]
    assert not private, f"{module} imports private names {private}"
    assert "_registered_method" not in path.read_text()
