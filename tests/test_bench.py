"""The benchmark suite runs end to end in its --quick mode and writes a complete report.

Figures are not asserted (they depend on the machine); that every section ran, that h2load's load
reached the servers, and that the real-client checks under load all passed, are.
"""

from __future__ import annotations

import json
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
    for section in ("spread", "shard", "scatter", "startup", "expansion"):
        assert "error" not in report[section], report[section]

    for section, modes in (("spread", ("direct", "nginx", "entry", "http_entry")), ("shard", ("direct", "nginx", "entry"))):
        for mode in modes:
            summary = report[section]["modes"][mode]
            assert summary["rps"]["median"] > 0, (section, mode)
            assert summary["failed"] == 0, (section, mode)
            checked = summary["verified"]
            assert checked["calls"] > 0 and checked["ok"] == checked["calls"], (section, mode, checked)
        assert report[section]["entry_over_direct"]["n"] == 1

    balance = report["shard"]["balance"]
    assert balance["moved_keys_all_went_to_the_new_shard"]
    assert 0 < balance["moved_fraction_10_to_11"] < 0.2

    scatter = report["scatter"]["by_leaves"]["4"]
    assert all(v["ok"] == v["calls"] for v in scatter["verified"].values())
    for name, runs in scatter["runs"].items():
        assert runs and runs[0]["requests"] > 0 and runs[0]["failed"] == 0, name
        assert runs[0]["leaf_calls"] >= runs[0]["requests"] * 4, name  # every leaf was called

    startup = report["startup"]
    assert startup["never_ready"] == 0 and startup["answers_ok"] == 1
    assert startup["runtime_processes"] >= 5

    expansion = report["expansion"]
    assert expansion["local/shard/100"]["roles"] == 101
    assert expansion["local/scatter/100"]["roles"] == 101
