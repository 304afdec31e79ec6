"""Every Pulumi project here (the repository root and each example) is one the Pulumi CLI accepts:
a valid name, the Python runtime with the virtualenv scripts/bootstrap creates, and a program."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
PROJECTS = [REPO] + sorted(p.parent for p in (REPO / "examples").glob("*/Pulumi.yaml"))


def test_every_example_is_a_pulumi_project() -> None:
    examples = {p.name for p in (REPO / "examples").iterdir() if p.is_dir()}
    assert {"hello_world", "spread", "shard", "scatter_gather"} <= examples
    assert examples == {p.name for p in PROJECTS[1:]}


@pytest.mark.parametrize("project", PROJECTS, ids=lambda p: p.name)
def test_project_file_names_python_with_the_bootstrapped_virtualenv(project: Path) -> None:
    doc = yaml.safe_load((project / "Pulumi.yaml").read_text())
    assert re.fullmatch(r"[A-Za-z0-9_.-]+", doc["name"]), doc["name"]
    runtime = doc["runtime"]
    assert runtime["name"] == "python"
    venv = (project / runtime["options"]["virtualenv"]).resolve()
    assert venv == REPO / ".venv", "projects share the venv scripts/bootstrap creates"
    main = project / doc.get("main", ".")
    assert (main / "__main__.py").is_file()
    assert "import metaparticle_pulumi" in (main / "__main__.py").read_text()


def test_the_wheel_lists_every_package_of_the_source() -> None:
    """setuptools takes `packages` as written: a subpackage missing there is missing from the wheel."""
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    roots = {"metaparticle_pulumi": REPO / "metaparticle_pulumi", "metaparticle_runtime": REPO / "runtime" / "metaparticle_runtime"}
    found = {
        ".".join([name, *init.parent.relative_to(root).parts])
        for name, root in roots.items()
        for init in root.rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert found == listed
