"""The tracing-cost bench (bench/tracing_cost.py) in its quick form: every build of the function
server and of the router answered under load, the `on` build exported one span per request it
answered, the no-hooks baseline really runs without the hooks, and the report shows the section."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.common import Settings
from bench.report import tracing_section
from bench.tracing_cost import BUILDS, bench_tracing, hook_cost_ns

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("h2load") is None, reason="h2load not installed: run bench/setup.sh (apt nghttp2-client)")
@pytest.mark.timeout(180)
def test_quick_tracing_section(tmp_path: Path) -> None:
    result = bench_tracing(Settings.make(quick=True), tmp_path)
    for setup in ("function", "router"):
        for build in BUILDS:
            mode = result["modes"][f"{setup}/{build}"]
            assert mode["rps"]["median"] > 0 and mode["failed"] == 0, (setup, build)
            assert mode["verified"]["ok"] == mode["verified"]["calls"] > 0, (setup, build, mode["verified"])
            assert mode["cpu_us_per_request"]["servers"]["median"] > 0
        for build in ("off", "on"):
            assert result["ratios"][f"{setup}_{build}_cpu_over_no_hooks"]["median"] > 0
            assert result["ratios"][f"{setup}_{build}_rps_over_no_hooks"]["median"] > 0
    assert result["modes"]["router/off"]["cpu_us_per_request"]["proxy"]["median"] > 0
    for process, exported in result["exported"].items():
        assert exported["requests"] > 100, process
        assert exported["spans"] == exported["requests"], (process, exported)  # nothing dropped, nothing extra
    lines: list[str] = []
    tracing_section(lines.append, result)
    text = "\n".join(lines)
    assert "## Tracing cost" in text and "| function/no_hooks |" in text and "fn-on" in text


def test_hook_cost_is_timed_against_the_same_path_without_hooks() -> None:
    hooks = hook_cost_ns(calls=2000, rounds=2)
    assert hooks["dispatch_ns"]["n"] == hooks["without_hooks_ns"]["n"] == 2
    assert 0 < hooks["without_hooks_ns"]["median"] < 1e6  # one request through admission and metrics


def test_the_untraced_build_runs_without_the_hooks() -> None:
    """bench.untraced's patch, checked in a fresh interpreter: tracing is never configured even
    with an OTLP endpoint, upstream metadata passes as it is, dispatch has no span wrapper."""
    code = """
import json
from bench.untraced import remove_hooks
remove_hooks()
from metaparticle_runtime import server, tracing
from metaparticle_runtime.config import RuntimeConfig
md = (("k", "v"),)
cfg = RuntimeConfig(role="function", function="echo:echo", source_dir="bench/programs/spread")
print(json.dumps({
    "configured": tracing.configure(cfg, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}) is not None,
    "same_metadata": tracing.with_trace(md) is md,
    "wrapper": server.Runtime.dispatch.__module__,
}))
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": f"{REPO}:{REPO / 'runtime'}", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"configured": False, "same_metadata": True, "wrapper": "bench.untraced"}
