"""The bench scripts outside the suite: bench.function_ab (two builds of the function server next
to a bare grpc.aio server) and bench.watch_stress (run --watch under load), in short runs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ENV = {"PYTHONPATH": f"{REPO}:{REPO / 'runtime'}", "PATH": "/usr/local/bin:/usr/bin:/bin"}


def _run(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, env=ENV)


def test_function_ab_refuses_a_build_that_is_not_a_runtime(tmp_path: Path) -> None:
    proc = _run("bench.function_ab", f"old={tmp_path}", timeout=60)
    assert proc.returncode == 2 and "each a directory holding metaparticle_runtime" in proc.stderr


@pytest.mark.skipif(shutil.which("h2load") is None, reason="h2load not installed: run bench/setup.sh")
@pytest.mark.timeout(120)
def test_function_ab_measures_two_builds_and_the_bare_server() -> None:
    proc = _run("bench.function_ab", "one=runtime", "two=runtime", "--repeats", "1", "--duration", "0.5", timeout=110)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    for name in ("bare_echo", "one", "two"):
        assert out[name]["failed"] == 0 and out[name]["verified"]["ok"] == out[name]["verified"]["calls"] > 0, name
        assert out[name]["cpu_us_per_request"]["median"] > 0
    assert out["ratios"]["two_cpu_over_one"]["median"] > 0 and out["ratios"]["one_cpu_over_bare_echo"]["median"] > 0


@pytest.mark.timeout(150)
def test_watch_stress_rolls_under_load_without_a_failed_request() -> None:
    proc = _run("bench.watch_stress", "--rolls", "1", "--clients", "2", "--keepalive", "2", "--router", "python",
                "--seconds", "60", timeout=140)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["rolls"] == 1 and out["requests"] > 100, out
    assert proc.returncode == 0 and out["failed"] == 0, out["failures"][:5]
    assert set(out["versions"]) == {"0", "1"}  # both versions answered: the roll happened under load
