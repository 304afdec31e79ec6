"""The benchmark suite: every figure of the report, measured in one run with its baselines.

Layout on this 2-core machine (see the report's "Method"): function servers are pinned to CPU 0;
the load generator (h2load) and the proxy under test (nginx, or our router) share CPU 1. The
function servers are then the bottleneck of every setup, and "entry/direct" says how much of their
capacity survives putting a proxy in front of them; the proxies' own CPU per request is reported
next to it. The scatter/gather and start-up runs are not pinned (they measure latency, not capacity).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import tools
from .tools import HOST, CpuMeter, Nginx, Topology, grpc_specs, h2load, json_body, grpc_frame, spread, verify, write

SERVER_CPUS = [0]
PROXY_CPUS = [1]
GEN_CPUS = [1]


@dataclass
class Settings:
    quick: bool = False
    repeats: int = 3
    duration: float = 5.0
    warmup: float = 1.0
    #: Each load uses 3 h2load processes of `clients` connections x `streams` streams (66 in all).
    clients: int = 2
    streams: int = 11
    verify_calls: int = 20
    leaves: list[int] = field(default_factory=lambda: [4, 8, 16])
    scatter_duration: float = 5.0
    scatter_warmup_requests: int = 200
    startup_repeats: int = 3
    expansion_counts: list[int] = field(default_factory=lambda: [10, 100, 1000])
    kubernetes_counts: list[int] = field(default_factory=lambda: [10, 100, 1000])
    balance_keys: int = 100_000
    #: Offered load (req/s) of the fixed-rate runs that compare proxies' CPU per request.
    fixed_rate: int = 900

    @classmethod
    def make(cls, quick: bool) -> "Settings":
        if not quick:
            return cls()
        return cls(
            quick=True,
            repeats=1,
            duration=1.0,
            warmup=0.5,
            verify_calls=3,
            leaves=[4],
            scatter_duration=1.0,
            scatter_warmup_requests=70,
            startup_repeats=1,
            expansion_counts=[10, 100],
            kubernetes_counts=[10],
            balance_keys=10_000,
        )


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def loadavg() -> float:
    try:
        return float(open("/proc/loadavg").read().split()[0])
    except OSError:
        return float("nan")


def uvloop_installed() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


# -- one measured load ----------------------------------------------------------------------------
def measure(
    specs: list[dict[str, Any]],
    groups: dict[str, list[int]],
    st: Settings,
    workdir: Path,
    check: Callable[[], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Warm-up (with the real-client check running under the same load), then the measured run."""
    checked: dict[str, Any] = {}
    thread = None
    if check is not None:
        thread = threading.Thread(target=lambda: checked.update(check()), daemon=True)
        thread.start()
    h2load(specs, duration=st.warmup, cpus=GEN_CPUS, workdir=workdir)
    if thread is not None:
        thread.join(timeout=60)
    meter = CpuMeter(groups)
    meter.start()
    result = h2load(specs, duration=st.duration, cpus=GEN_CPUS, workdir=workdir, timeout=st.duration + 60)
    used = meter.stop()
    done = max(1, result.succeeded)
    # CPU that the rest of the machine used meanwhile (other programs), as a share of all CPUs.
    ours = sum(used.values()) + result.h2load_cpu
    other = max(0.0, meter.busy - ours) / max(1e-9, meter.wall * (os.cpu_count() or 1))
    out = {
        "rps": result.rps,
        "succeeded": result.succeeded,
        "failed": result.failed,
        "p50_ms": result.p(0.50),
        "p99_ms": result.p(0.99),
        "cpu_us_per_request": {k: v / done * 1e6 for k, v in used.items()},
        "h2load_cpu_us_per_request": result.h2load_cpu / done * 1e6,
        "loadavg": loadavg(),
        "other_cpu_share": other,
    }
    if check is not None:
        out["verified"] = checked or {"calls": 0, "ok": 0, "errors": ["the check did not finish"]}
    return out


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """min/median/max over repeats of every number in the runs."""
    out: dict[str, Any] = {}
    for key in ("rps", "p50_ms", "p99_ms", "h2load_cpu_us_per_request", "other_cpu_share"):
        out[key] = spread([r[key] for r in runs])
    cpu_keys = runs[0]["cpu_us_per_request"].keys() if runs else []
    out["cpu_us_per_request"] = {k: spread([r["cpu_us_per_request"][k] for r in runs]) for k in cpu_keys}
    out["failed"] = sum(r["failed"] for r in runs)
    ver = [r["verified"] for r in runs if "verified" in r]
    if ver:
        out["verified"] = {
            "calls": sum(v["calls"] for v in ver),
            "ok": sum(v["ok"] for v in ver),
            "errors": [e for v in ver for e in v["errors"]][:3],
        }
    return out


def ratios(runs_a: list[dict[str, Any]], runs_b: list[dict[str, Any]], key: str = "rps") -> dict[str, float]:
    """a/b per repeat (repeats are interleaved, so pairs ran side by side), then min/median/max."""
    return spread([a[key] / b[key] for a, b in zip(runs_a, runs_b) if b[key]])


# -- Spread ---------------------------------------------------------------------------------------
def bench_spread(st: Settings, workdir: Path) -> dict[str, Any]:
    log("spread: starting 3 replicas + router")
    extra = {"asyncio": {"MP_EVENT_LOOP": "asyncio"}} if uvloop_installed() else {}
    topo = Topology("spread", cpus={"entry": PROXY_CPUS, "function": SERVER_CPUS}, extra_roots=extra)
    nginx = None
    try:
        replicas = topo.ports("bench-spread-replica")
        from metaparticle_pulumi.targets.local import free_port

        nginx = Nginx(free_port(), replicas, cpus=PROXY_CPUS)
        body = json_body(100, user="u-1")
        expect = json.loads(body)
        frame = write(workdir, "spread.bin", grpc_frame(body))
        jbody = write(workdir, "spread.json", body)
        servers = topo.pids(entry=False)
        router = topo.pids(entry=True)
        asyncio_router = [r.pid for r in topo.supervisor.replicas if r.spec.name.endswith("-asyncio") and r.pid]
        c, m = st.clients, st.streams
        modes: dict[str, tuple[list[dict[str, Any]], dict[str, list[int]], Callable[[], dict[str, Any]]]] = {
            "direct": (
                grpc_specs([f"http://{HOST}:{p}" for p in replicas], frame, c, m),
                {"servers": servers},
                lambda: verify(f"{HOST}:{replicas[0]}", body, expect, st.verify_calls),
            ),
            "nginx": (
                grpc_specs([f"http://{HOST}:{nginx.port}"] * 3, frame, c, m),
                {"servers": servers, "proxy": nginx.pids},
                lambda: verify(f"{HOST}:{nginx.port}", body, expect, st.verify_calls),
            ),
            "entry": (
                grpc_specs([f"http://{HOST}:{topo.entry_port}"] * 3, frame, c, m),
                {"servers": servers, "proxy": router},
                lambda: verify(f"{HOST}:{topo.entry_port}", body, expect, st.verify_calls),
            ),
        }
        if asyncio_router:
            port = topo.extra_ports["asyncio"]
            modes["entry_asyncio_loop"] = (
                grpc_specs([f"http://{HOST}:{port}"] * 3, frame, c, m),
                {"servers": servers, "proxy": asyncio_router},
                lambda: verify(f"{HOST}:{port}", body, expect, st.verify_calls),
            )
        http_url = f"http://{HOST}:{topo.http_port}/"
        modes["http_entry"] = (
            [{"url": http_url, "body": jbody, "c": 3 * c * m, "m": 1, "h1": True, "headers": ["content-type: application/json"]}],
            {"servers": servers, "proxy": router},
            lambda: tools.verify_http(http_url, body, expect, st.verify_calls),
        )
        # The same proxies at one fixed offered rate, below every setup's capacity: CPU per request
        # compared at equal load (at saturation it also depends on how much each batches).
        fixed: dict[str, tuple[list[dict[str, Any]], dict[str, list[int]], None]] = {}
        per_client = st.fixed_rate / 6
        for name in ("nginx", "entry", "entry_asyncio_loop"):
            if name in modes:
                specs = [dict(sp_, c=2, rate=per_client) for sp_ in modes[name][0]]
                fixed[f"{name}@{st.fixed_rate}/s"] = (specs, modes[name][1], None)
        fixed[f"http_entry@{st.fixed_rate}/s"] = (
            [dict(modes["http_entry"][0][0], c=6, rate=per_client)],
            modes["http_entry"][1],
            None,
        )
        runs: dict[str, list[dict[str, Any]]] = {k: [] for k in list(modes) + list(fixed)}
        for rep in range(st.repeats):
            for name, (specs, groups, check) in list(modes.items()) + list(fixed.items()):
                log(f"spread: repeat {rep + 1}/{st.repeats} {name}")
                runs[name].append(measure(specs, groups, st, workdir, check))
        result: dict[str, Any] = {"modes": {k: summarize(v) for k, v in runs.items()}, "runs": runs, "fixed_rate": st.fixed_rate}
        result["entry_over_direct"] = ratios(runs["entry"], runs["direct"])
        result["nginx_over_direct"] = ratios(runs["nginx"], runs["direct"])
        result["http_over_grpc_entry"] = ratios(runs["http_entry"], runs["entry"])
        if "entry_asyncio_loop" in runs:
            result["asyncio_loop_over_direct"] = ratios(runs["entry_asyncio_loop"], runs["direct"])
            a_runs, b_runs = runs[f"entry@{st.fixed_rate}/s"], runs[f"entry_asyncio_loop@{st.fixed_rate}/s"]
            result["router_cpu_uvloop_over_asyncio"] = spread(
                [
                    a["cpu_us_per_request"]["proxy"] / b["cpu_us_per_request"]["proxy"]
                    for a, b in zip(a_runs, b_runs)
                    if b["cpu_us_per_request"]["proxy"]
                ]
            )
        result["router_cpu_over_nginx_at_fixed_rate"] = spread(
            [
                a["cpu_us_per_request"]["proxy"] / b["cpu_us_per_request"]["proxy"]
                for a, b in zip(runs[f"entry@{st.fixed_rate}/s"], runs[f"nginx@{st.fixed_rate}/s"])
                if b["cpu_us_per_request"]["proxy"]
            ]
        )
        result["event_loop"] = "uvloop" if uvloop_installed() else "asyncio"
        if not st.quick:
            specs, _, _ = modes["entry"]
            result["profile"] = profile_router(router[0], specs, workdir)
        return result
    finally:
        if nginx is not None:
            nginx.stop()
        topo.stop()


def py_spy() -> str | None:
    import shutil

    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


def profile_router(pid: int, specs: list[dict[str, Any]], workdir: Path, seconds: float = 6.0) -> dict[str, Any]:
    """Samples the router with py-spy under the entry load: where its CPU goes, by kind of code."""
    from collections import Counter

    exe = py_spy()
    if exe is None:
        return {"skipped": "py-spy is not installed (bench/setup.sh installs it)"}
    raw = workdir / "router-profile.txt"
    log("spread: profiling the router with py-spy")
    spy = subprocess.Popen(
        [exe, "record", "-p", str(pid), "-d", f"{seconds:g}", "-r", "250", "-f", "raw", "-o", str(raw), "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    h2load(specs, duration=seconds + 2, cpus=GEN_CPUS, workdir=workdir, timeout=seconds + 60)
    try:
        spy.wait(timeout=30)
    except subprocess.TimeoutExpired:
        spy.kill()
        spy.wait()
    if not raw.exists():
        return {"skipped": "py-spy wrote no profile (ptrace not permitted?)"}
    own: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        count = int(n)
        total += count
        frames = stack.split(";")
        leaf = frames[-1]
        own[leaf] += count
        if frames[0].startswith("Thread._bootstrap"):
            kinds["other threads (gRPC's completion-queue poller)"] += count
        elif "metaparticle_runtime" in leaf:
            kinds["our runtime's Python code (self time)"] += count
        elif leaf.startswith(("Handle._run", "Runner.run", "BaseEventLoop.run_until_complete")) or "uvloop" in leaf:
            kinds["native code run by the event loop (gRPC's Cython/C core; uvloop)"] += count
        elif "grpc/" in leaf:
            kinds["gRPC's Python layer (grpc.aio)"] += count
        elif "asyncio" in leaf or "selectors" in leaf:
            kinds["asyncio event loop"] += count
        else:
            kinds["other"] += count
    raw.unlink()
    total = max(total, 1)
    return {
        "samples": total,
        "by_kind": {k: v / total for k, v in kinds.most_common()},
        "top_frames": [(f, v / total) for f, v in own.most_common(10)],
    }


# -- Shard ----------------------------------------------------------------------------------------
def bench_shard(st: Settings, workdir: Path) -> dict[str, Any]:
    from metaparticle_runtime.hashing import shard_for

    log("shard: starting 3 shards + router")
    topo = Topology("shard", cpus={"entry": PROXY_CPUS, "function": SERVER_CPUS})
    nginx = None
    try:
        shard_roles = [r for r in topo.function_roles()]
        shard_ports = [topo.ports(r)[0] for r in shard_roles]
        from metaparticle_pulumi.targets.local import free_port

        nginx = Nginx(free_port(), shard_ports, hash_header=True, cpus=PROXY_CPUS)
        # One key per shard (our jump hash), one x-shard header value per upstream (nginx's ketama ring).
        keys: list[str] = []
        for i in range(len(shard_ports)):
            keys.append(next(f"user-{n}" for n in range(10_000) if shard_for(f"user-{n}", len(shard_ports)) == i))
        headers: dict[int, str] = {}
        checker = tools.Checker(f"{HOST}:{nginx.port}")
        try:
            for n in range(500):
                value = f"user-{n}"
                got = checker.call(json_body(100, user=value), metadata=(("x-shard", value),))["shard"]
                headers.setdefault(got, value)
                if len(headers) == len(shard_ports):
                    break
        finally:
            checker.close()
        if len(headers) != len(shard_ports):
            raise RuntimeError(f"nginx's hash sent 500 keys to only {sorted(headers)}")
        bodies = [json_body(100, user=k) for k in keys]
        frames = [write(workdir, f"shard-{i}.bin", grpc_frame(b)) for i, b in enumerate(bodies)]
        servers = topo.pids(entry=False)
        router = topo.pids(entry=True)
        c, m = st.clients, st.streams

        def specs_for(urls: list[str], with_header: bool) -> list[dict[str, Any]]:
            out = []
            for i, url in enumerate(urls):
                extra = [f"x-shard: {headers[i]}"] if with_header else []
                out += grpc_specs([url], frames[i], c, m, [extra])
            return out

        def check_all(address: str, with_header: bool, routed: bool) -> Callable[[], dict[str, Any]]:
            def run() -> dict[str, Any]:
                total = {"calls": 0, "ok": 0, "errors": []}
                for i, body in enumerate(bodies):
                    md = (("x-shard", headers[i]),) if with_header else ()
                    addr = address if routed else f"{HOST}:{shard_ports[i]}"
                    res = verify(addr, body, lambda a, i=i: a["shard"] == i and a["user"] == (keys[i]), max(1, st.verify_calls // 3), md)
                    for k in ("calls", "ok"):
                        total[k] += res[k]
                    total["errors"] += res["errors"]
                return total

            return run

        modes = {
            "direct": (specs_for([f"http://{HOST}:{p}" for p in shard_ports], False), {"servers": servers}, check_all("", False, False)),
            "nginx": (
                specs_for([f"http://{HOST}:{nginx.port}"] * 3, True),
                {"servers": servers, "proxy": nginx.pids},
                check_all(f"{HOST}:{nginx.port}", True, True),
            ),
            "entry": (
                specs_for([f"http://{HOST}:{topo.entry_port}"] * 3, False),
                {"servers": servers, "proxy": router},
                check_all(f"{HOST}:{topo.entry_port}", False, True),
            ),
        }
        runs: dict[str, list[dict[str, Any]]] = {k: [] for k in modes}
        for rep in range(st.repeats):
            for name, (specs, groups, check) in modes.items():
                log(f"shard: repeat {rep + 1}/{st.repeats} {name}")
                runs[name].append(measure(specs, groups, st, workdir, check))
        result: dict[str, Any] = {"modes": {k: summarize(v) for k, v in runs.items()}, "runs": runs}
        result["entry_over_direct"] = ratios(runs["entry"], runs["direct"])
        result["nginx_over_direct"] = ratios(runs["nginx"], runs["direct"])
        result["keys"] = keys
        result["nginx_header_values"] = [headers[i] for i in range(len(shard_ports))]
        result["balance"] = key_balance(st.balance_keys)
        return result
    finally:
        if nginx is not None:
            nginx.stop()
        topo.stop()


def key_balance(n_keys: int, shards: int = 10) -> dict[str, Any]:
    """Load balance (max/mean) of `n_keys` keys over `shards`, and the fraction that moves at +1 shard."""
    from metaparticle_runtime.hashing import key_hash, jump_hash, shard_for

    keys = [f"user-{i}" for i in range(n_keys)]
    start = time.perf_counter()
    before = [shard_for(k, shards) for k in keys]
    lookup_us = (time.perf_counter() - start) / n_keys * 1e6
    after = [jump_hash(key_hash(k), shards + 1) for k in keys]
    counts = [0] * shards
    for s in before:
        counts[s] += 1
    moved = sum(1 for a, b in zip(before, after) if a != b) / n_keys
    moved_to_new = all(b == shards for a, b in zip(before, after) if a != b)
    return {
        "keys": n_keys,
        "shards": shards,
        "max_over_mean": max(counts) / (n_keys / shards),
        "min_over_mean": min(counts) / (n_keys / shards),
        "moved_fraction_10_to_11": moved,
        "ideal_moved_fraction": 1 / (shards + 1),
        "moved_keys_all_went_to_the_new_shard": moved_to_new,
        "lookup_us": lookup_us,
    }


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
                    r = latency_run(url, frames[load], st.scatter_duration, workdir)
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
                        }
                    )
            res["runs"] = runs
            res["summary"] = {
                name: {k: spread([x[k] for x in v]) for k in ("p50_ms", "p99_ms", "extra_leaf_calls", "requests")}
                for name, v in runs.items()
            }
            base = runs["unhedged/plain"]
            res["hedged_straggler_p99_over_no_straggler_p99"] = spread(
                [h["p99_ms"] / b["p99_ms"] for h, b in zip(runs["hedged/straggler"], base)]
            )
            res["unhedged_straggler_p99_over_no_straggler_p99"] = spread(
                [h["p99_ms"] / b["p99_ms"] for h, b in zip(runs["unhedged/straggler"], base)]
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
    from metaparticle_pulumi.targets.local import free_port

    example = tools.REPO / "examples" / "scatter_gather"
    runs = []
    for rep in range(st.startup_repeats):
        port = free_port()
        log(f"startup: repeat {rep + 1}/{st.startup_repeats}: metaparticle run examples/scatter_gather")
        start = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "metaparticle_pulumi.cli", "run", str(example), "--port", str(port)],
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
