"""The benchmark suite: every figure of the report, measured in one run with its baselines.

The throughput sections (Spread, Shard, the router ceiling) are in bench/throughput.py: natural
scheduling for the headline figures, the pinned layout as a secondary one. The scatter/gather and
start-up runs here are not pinned (they measure latency, not capacity); expansion runs under mocks.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from . import tools
from .common import Settings, log, loadavg
from .throughput import bench_ceiling, bench_shard, bench_spread
from .processes import Topology
from .tracing_cost import bench_tracing
from .tools import HOST, grpc_specs, h2load, grpc_frame, spread, verify, write

__all__ = ["Settings", "run_suite"]


# -- Scatter/gather ---------------------------------------------------------------------------------
def read_counters(directory: Path) -> int:
    total = 0
    for path in directory.glob("leaf-*"):
        data = path.read_bytes()
        if len(data) >= 8:
            total += int.from_bytes(data[:8], "little")
    return total


def latency_run(url: str, body: Path, duration: float, workdir: Path) -> tools.LoadResult:
    specs = grpc_specs([url], body, 1, 1)
    return h2load(specs, duration=duration, cpus=None, workdir=workdir, timeout=duration + 60)


def bench_scatter(st: Settings, workdir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"leaf_work_ms": 1.0, "straggler_rate": 0.01, "straggler_ms": 50.0, "by_leaves": {}}
    plain = json.dumps({"q": "bench", "work_ms": 1, "straggler_rate": 0}).encode()
    straggly = json.dumps({"q": "bench", "work_ms": 1, "straggler_rate": 0.01, "straggler_ms": 50}).encode()
    frames = {"plain": write(workdir, "sg-plain.bin", grpc_frame(plain)), "straggler": write(workdir, "sg-strag.bin", grpc_frame(straggly))}
    for leaves in st.leaves:
        counters = Path(tempfile.mkdtemp(prefix="bench-counters-"))
        log(f"scatter: starting {leaves} leaves x 2 replicas + 2 roots (hedged, unhedged)")
        topo = Topology(
            "scatter",
            config={"bench:leaves": str(leaves), "bench:replicas": "2"},
            env={"BENCH_COUNTER_DIR": str(counters)},
            extra_roots={"unhedged": {"MP_HEDGE_AFTER": "0"}},
        )
        try:
            roots = {"hedged": topo.entry_port, "unhedged": topo.extra_ports["unhedged"]}
            root_pids = {"hedged": topo.pids(entry=True)[0], "unhedged": topo.extra_pid("unhedged")}
            expect = {"leaves": list(range(leaves))}
            verified = {name: verify(f"{HOST}:{port}", plain, expect, st.verify_calls) for name, port in roots.items()}
            res: dict[str, Any] = {"verified": verified, "runs": {}}
            if leaves == st.leaves[0]:
                leaf_port = topo.ports(topo.function_roles()[0])[0]
                direct = []
                for rep in range(st.repeats):
                    r = latency_run(f"http://{HOST}:{leaf_port}", frames["plain"], st.scatter_duration, workdir)
                    direct.append({"p50_ms": r.p(0.5), "p99_ms": r.p(0.99), "requests": r.succeeded})
                out["direct_leaf"] = {"p50_ms": spread([d["p50_ms"] for d in direct]), "p99_ms": spread([d["p99_ms"] for d in direct]), "runs": direct}
            variants = [(root, load) for load in ("plain", "straggler") for root in ("unhedged", "hedged")]
            runs: dict[str, list[dict[str, Any]]] = {f"{r}/{l}": [] for r, l in variants}
            for rep in range(st.repeats):
                for root, load in variants:
                    name = f"{root}/{load}"
                    log(f"scatter {leaves}: repeat {rep + 1}/{st.repeats} {name}")
                    url = f"http://{HOST}:{roots[root]}"
                    h2load(grpc_specs([url], frames[load], 1, 1), count=st.scatter_warmup_requests, cpus=None, workdir=workdir)
                    time.sleep(0.2)
                    calls_before = read_counters(counters)
                    cpu_before = tools.cpu_seconds(root_pids[root])
                    r = latency_run(url, frames[load], st.scatter_duration, workdir)
                    root_cpu = tools.cpu_seconds(root_pids[root]) - cpu_before
                    time.sleep(0.3)  # hedged calls that lost the race still arrive and count
                    calls = read_counters(counters) - calls_before
                    requests = r.succeeded + r.failed
                    runs[name].append(
                        {
                            "requests": requests,
                            "failed": r.failed,
                            "p50_ms": r.p(0.5),
                            "p99_ms": r.p(0.99),
                            "leaf_calls": calls,
                            "extra_leaf_calls": calls / max(1, requests * leaves) - 1,
                            "root_cpu_us": root_cpu / max(1, requests) * 1e6,
                        }
                    )
            res["runs"] = runs
            res["summary"] = {
                name: {k: spread([x[k] for x in v]) for k in ("p50_ms", "p99_ms", "extra_leaf_calls", "requests", "root_cpu_us")}
                for name, v in runs.items()
            }
            base = runs["unhedged/plain"]
            res["hedged_straggler_p99_over_no_straggler_p99"] = spread(
                [h["p99_ms"] / b["p99_ms"] for h, b in zip(runs["hedged/straggler"], base)]
            )
            res["unhedged_straggler_p99_over_no_straggler_p99"] = spread(
                [h["p99_ms"] / b["p99_ms"] for h, b in zip(runs["unhedged/straggler"], base)]
            )
            # What hedging costs the root (its own CPU per request), with no straggler to hedge.
            res["hedged_root_cpu_over_unhedged"] = spread(
                [h["root_cpu_us"] / b["root_cpu_us"] for h, b in zip(runs["hedged/plain"], base) if b["root_cpu_us"] > 0]
            )
            out["by_leaves"][str(leaves)] = res
        finally:
            topo.stop()
            for path in counters.glob("*"):
                path.unlink()
            counters.rmdir()
    # Added latency per leaf: (fan-out p50 - one direct leaf call p50) / leaves.
    d50 = out["direct_leaf"]["p50_ms"]["median"]
    d99 = out["direct_leaf"]["p99_ms"]["median"]
    per_leaf = {}
    for leaves, res in out["by_leaves"].items():
        runs = res["runs"]["unhedged/plain"]
        per_leaf[leaves] = {
            "p50_ms": spread([(r["p50_ms"] - d50) / int(leaves) for r in runs]),
            "p99_ms": spread([(r["p99_ms"] - d99) / int(leaves) for r in runs]),
        }
    out["added_latency_per_leaf"] = per_leaf
    if len(out["by_leaves"]) >= 2:
        xs = [int(k) for k in out["by_leaves"]]
        ys = [out["by_leaves"][k]["summary"]["unhedged/plain"]["p50_ms"]["median"] for k in out["by_leaves"]]
        out["p50_slope_ms_per_leaf"] = _slope(xs, ys)
    return out


def _slope(xs: list[float], ys: list[float]) -> float:
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else float("nan")


# -- Start-up ---------------------------------------------------------------------------------------
def bench_startup(st: Settings) -> dict[str, Any]:
    from metaparticle_pulumi._targets.local import free_port

    example = tools.REPO / "examples" / "scatter_gather"
    runs = []
    for rep in range(st.startup_repeats):
        port = free_port()
        log(f"startup: repeat {rep + 1}/{st.startup_repeats}: metaparticle run examples/scatter_gather")
        start = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "metaparticle_pulumi", "run", str(example), "--port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=tools.REPO,
        )
        ready = None
        try:
            deadline = start + 60
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    with urllib.request.urlopen(f"http://{HOST}:{port}/healthz", timeout=1) as resp:
                        if resp.status == 200:
                            ready = time.monotonic() - start
                            break
                except OSError:
                    pass
                time.sleep(0.01)
            time.sleep(0.5)
            kids = tools.children(proc.pid)
            rss = sorted(tools.rss_kib(p) for p in kids)
            run = {"ready_s": ready, "processes": len(kids), "runtime_rss_mib": [r / 1024 for r in rss], "cli_rss_mib": tools.rss_kib(proc.pid) / 1024}
            answer = None
            try:
                req = urllib.request.Request(f"http://{HOST}:{port}/", data=b'{"q": "pulumi"}', method="POST", headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=10) as resp:
                    answer = json.loads(resp.read())
            except Exception as exc:  # noqa: BLE001
                answer = {"error": str(exc)}
            run["answer_ok"] = isinstance(answer, dict) and answer.get("count", 0) >= 1
        finally:
            stop_start = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            run["stop_s"] = time.monotonic() - stop_start
        runs.append(run)
    all_rss = [r for run in runs for r in run["runtime_rss_mib"]]
    return {
        "ready_s": spread([r["ready_s"] for r in runs if r["ready_s"] is not None]),
        "never_ready": sum(1 for r in runs if r["ready_s"] is None),
        "stop_s": spread([r["stop_s"] for r in runs]),
        "runtime_rss_mib": spread(all_rss),
        "runtime_processes": runs[0]["processes"] if runs else 0,
        "answers_ok": sum(1 for r in runs if r.get("answer_ok")),
        "runs": runs,
    }


# -- Expansion --------------------------------------------------------------------------------------
def bench_expansion(st: Settings) -> dict[str, Any]:
    plan: list[tuple[str, str, int, int]] = []
    for target, counts in (("local", st.expansion_counts), ("kubernetes", st.kubernetes_counts)):
        for pattern in ("shard", "scatter"):
            for count in counts:
                reps = 1 if (target == "kubernetes" and count >= 1000) else st.repeats
                plan.append((target, pattern, count, reps))
    results: dict[str, Any] = {}
    for target, pattern, count, reps in plan:
        samples = []
        error = None
        for rep in range(reps):
            log(f"expansion: {target} {pattern} {count} ({rep + 1}/{reps})")
            try:
                out = subprocess.run(
                    [sys.executable, "-m", "bench.expand", pattern, str(count), target],
                    capture_output=True, text=True, timeout=300, cwd=tools.REPO,
                )
            except subprocess.TimeoutExpired:
                error = "timed out after 300 s"
                break
            lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
            if out.returncode != 0 or not lines:
                error = (out.stderr.strip().splitlines() or ["no output"])[-1]
                break
            samples.append(json.loads(lines[-1]))
        key = f"{target}/{pattern}/{count}"
        if error:
            results[key] = {"error": error}
            continue
        results[key] = {
            "target": target,
            "pattern": pattern,
            "count": count,
            "seconds": spread([s["seconds"] for s in samples]),
            "growth_mib": spread([s["growth_kib"] / 1024 for s in samples]),
            "resources": samples[0]["resources"],
            "roles": samples[0]["roles"],
            "us_per_unit": spread([s["seconds"] / count * 1e6 for s in samples]),
        }
    return results


# -- the whole run ----------------------------------------------------------------------------------
def run_suite(st: Settings, out_dir: Path, only: list[str] | None = None) -> dict[str, Any]:
    started = time.time()
    workdir = Path(tempfile.mkdtemp(prefix="bench-work-"))
    report: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
        "mode": "quick" if st.quick else "full",
        "machine": tools.machine(),
        "versions": tools.versions(),
        "settings": asdict(st),
        "loadavg_at_start": loadavg(),
        "commit": _git_commit(),
    }
    sections: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("spread", lambda: bench_spread(st, workdir)),
        ("shard", lambda: bench_shard(st, workdir)),
        ("ceiling", lambda: bench_ceiling(st, workdir)),
        ("tracing", lambda: bench_tracing(st, workdir)),
        ("scatter", lambda: bench_scatter(st, workdir)),
        ("startup", lambda: bench_startup(st)),
        ("expansion", lambda: bench_expansion(st)),
    ]
    for name, fn in sections:
        if only and name not in only:
            continue
        t0 = time.monotonic()
        try:
            report[name] = fn()
        except Exception as exc:  # noqa: BLE001 - one broken section must not lose the others
            import traceback

            report[name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}
            log(f"{name} failed: {exc}")
        report.setdefault("section_seconds", {})[name] = time.monotonic() - t0
    report["loadavg_at_end"] = loadavg()
    report["seconds"] = time.time() - started
    for path in workdir.glob("*"):
        path.unlink()
    workdir.rmdir()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "latest.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    from .report import render

    (out_dir / "latest.md").write_text(render(report))
    return report


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=tools.REPO, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "runtime", "metaparticle_pulumi"], capture_output=True, text=True, cwd=tools.REPO, timeout=10)
        return out.stdout.strip() + ("+uncommitted runtime/deploy changes" if dirty.stdout.strip() else "")
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
