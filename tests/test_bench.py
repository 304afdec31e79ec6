"""The benchmark suite runs end to end in its --quick mode and writes a complete report.

Figures are not asserted (they depend on the machine); that every section ran, that h2load's load
reached the servers, and that the real-client checks under load all passed, are.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow

_MISSING = [tool for tool in ("h2load", "nginx", "taskset") if shutil.which(tool) is None]


@pytest.mark.skipif(bool(_MISSING), reason=f"{', '.join(_MISSING)} not installed: run bench/setup.sh (apt nghttp2-client, nginx-light)")
@pytest.mark.timeout(600)
def test_quick_suite_writes_a_complete_report(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((tmp_path / "latest.json").read_text())
    markdown = (tmp_path / "latest.md").read_text()
    assert "## Headline figures" in markdown and "## Why" in markdown
    # Meant to take under 90 s; the bound leaves room for a busy shared machine.
    assert report["seconds"] < 150, f"--quick took {report['seconds']:.0f} s"
    for section in ("spread", "shard", "ceiling", "tracing", "scatter", "startup", "expansion"):
        assert "error" not in report[section], report[section]

    spread_modes = ("direct", "bare_echo", "bare_echo_thread", "nginx", "entry", "http_direct", "http_nginx", "http_entry")
    for section, modes in (("spread", spread_modes), ("shard", ("direct", "nginx", "entry"))):
        for mode in modes:
            summary = report[section]["modes"][mode]
            assert summary["rps"]["median"] > 0, (section, mode)
            assert summary["failed"] == 0, (section, mode)
            checked = summary["verified"]
            assert checked["calls"] > 0 and checked["ok"] == checked["calls"], (section, mode, checked)
            assert summary["connections_per_request"]["n"] == 1, (section, mode)
        ratios = report[section]["ratios"]
        for key in ("entry_over_direct", "nginx_over_direct", "entry_cpu_over_nginx", "entry_cpu_over_servers"):
            assert ratios[key]["n"] == 1 and ratios[key]["median"] > 0, (section, key)
        # The pinned layout is the secondary figure, measured in the same run.
        for mode in ("direct", "nginx", "entry"):
            assert report[section]["pinned"][mode]["rps"]["median"] > 0, (section, mode)
            assert report[section]["pinned"][mode]["failed"] == 0, (section, mode)
        # Every proxy's CPU and the servers' were counted (nginx and the router are separate processes).
        assert report[section]["modes"]["nginx"]["cpu_us_per_request"]["proxy"]["median"] > 0
        assert report[section]["modes"]["entry"]["cpu_us_per_request"]["servers"]["median"] > 0
    assert report["spread"]["ratios"]["function_server_cpu_over_bare_echo"]["median"] > 0
    assert report["spread"]["ratios"]["function_server_cpu_over_bare_echo_thread"]["median"] > 0
    assert report["spread"]["ratios"]["bare_echo_thread_cpu_over_bare_echo"]["median"] > 0
    assert "The hop alone" in markdown
    assert report["spread"]["ratios"]["http_entry_cpu_over_http_nginx"]["median"] > 0

    ceiling = report["ceiling"]
    if shutil.which("go") is None:
        assert "Go is not installed" in ceiling["skipped"]
    else:
        for mode in ("direct", "nginx", "entry"):
            assert ceiling["modes"][mode]["rps"]["median"] > 0 and ceiling["modes"][mode]["failed"] == 0, mode
            checked = ceiling["modes"][mode]["verified"]
            assert checked["ok"] == checked["calls"] > 0, (mode, checked)
    if os.environ.get("MP_ROUTER_BIN"):
        for section in ("spread", "shard", "ceiling"):
            assert report[section]["modes"]["go_entry"]["failed"] == 0, section
    assert "## Headline figures (natural scheduling)" in markdown and "Pinned layout" in markdown
    assert "## Tracing cost" in markdown and report["tracing"]["modes"]["function/off"]["failed"] == 0

    balance = report["shard"]["balance"]
    assert balance["moved_keys_all_went_to_the_new_shard"]
    assert 0 < balance["moved_fraction_10_to_11"] < 0.2

    scatter = report["scatter"]["by_leaves"]["4"]
    assert all(v["ok"] == v["calls"] for v in scatter["verified"].values())
    for name, runs in scatter["runs"].items():
        assert runs and runs[0]["requests"] > 0 and runs[0]["failed"] == 0, name
        assert runs[0]["leaf_calls"] >= runs[0]["requests"] * 4, name  # every leaf was called
        assert runs[0]["root_cpu_us"] > 0, name  # the root's own process was measured
    assert scatter["hedged_root_cpu_over_unhedged"]["n"] == 1

    startup = report["startup"]
    assert startup["never_ready"] == 0 and startup["answers_ok"] == 1
    assert startup["runtime_processes"] >= 5

    expansion = report["expansion"]
    assert expansion["local/shard/100"]["roles"] == 101
    assert expansion["local/scatter/100"]["roles"] == 101
