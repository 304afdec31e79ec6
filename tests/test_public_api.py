"""The public surface: what `import metaparticle_pulumi as mp` offers, pinned, and one exception root."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import metaparticle_pulumi as mp

PUBLIC = [
    "BadRequest",
    "CallError",
    "Client",
    "Container",
    "Context",
    "EngineError",
    "Error",
    "FunctionShippingError",
    "PatternArgs",
    "PatternError",
    "ProgramError",
    "ScatterGather",
    "ScatterGatherArgs",
    "Service",
    "ServiceArgs",
    "Shard",
    "ShardArgs",
    "Spread",
    "SpreadArgs",
    "StackError",
    "remove_durably",
    "write_durably",
]


def test_the_package_root_exports_exactly_the_public_api():
    assert sorted(mp.__all__) == PUBLIC
    for name in PUBLIC:
        assert getattr(mp, name) is not None


def test_every_module_but_the_root_and_testing_is_private():
    """Like httpx: what is not re-exported from the root lives in an underscored module, so
    `metaparticle_pulumi.<name>` is the public API and nothing else is importable by a plain name."""
    root = Path(mp.__file__).parent
    public = sorted(
        p.stem if p.is_file() else p.name
        for p in root.iterdir()
        if not p.name.startswith("_") and (p.suffix == ".py" or (p / "__init__.py").is_file())
    )
    assert public == ["testing"]


def test_python_dash_m_runs_the_command():
    done = subprocess.run([sys.executable, "-m", "metaparticle_pulumi", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "render" in done.stdout and "run" in done.stdout


def test_every_error_the_deploy_side_raises_derives_from_one_root():
    for name in ("CallError", "EngineError", "FunctionShippingError", "PatternError", "ProgramError", "StackError"):
        assert issubclass(getattr(mp, name), mp.Error), name
    # Argument errors stay ValueErrors too, as Python code expects of bad arguments.
    assert issubclass(mp.PatternError, ValueError) and issubclass(mp.FunctionShippingError, ValueError)


def test_a_bad_pattern_argument_is_caught_by_the_root():
    try:
        mp.Spread("api", function=lambda r: r, replicas=0, target="local")
    except mp.Error as exc:
        assert "replicas must be a positive integer" in str(exc)
    else:
        raise AssertionError("replicas=0 was accepted")


def test_importing_the_package_loads_neither_testing_nor_the_engine_nor_docker():
    code = (
        "import sys, metaparticle_pulumi; "
        "print(sorted(m for m in ('metaparticle_pulumi.testing', 'metaparticle_pulumi._engine', 'docker') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
