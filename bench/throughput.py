"""Throughput sections (Spread, Shard, the router ceiling): each setup measured in one run, next to
its baselines, under natural scheduling (the headline: what a user gets) and, for the main setups,
in the pinned layout (servers on CPU 0, proxy and h2load on CPU 1: a secondary figure).

Per setup and repeat: req/s, p50/p99, CPU microseconds per request of the proxy (our router or
nginx), of the function servers (summed) and of h2load, from /proc/PID/stat, and the new TCP
connections the proxy opened to its upstreams per request.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

from . import tools
from .common import Settings, log, loadavg, uvloop_installed
from .processes import Nginx, Processes, RoleProcess, Topology, build_backend, function_servers
from .tools import HOST, ConnCounter, CpuMeter, grpc_specs, h2load, json_body, grpc_frame, pin, spread, verify, write

ALL_CPUS = sorted(os.sched_getaffinity(0))
#: The pinned layout: function servers on CPU 0, the proxy under test and h2load on CPU 1.
PINNED = {"servers": [0], "proxy": [1], "h2load": [1]}
LAYOUTS = ("natural", "pinned")


@dataclass
class Setup:
    """One load: h2load specs, the processes whose CPU is counted (by group), a real-client check,
    and the upstream ports whose new connections are counted."""

    specs: list[dict[str, Any]]
    groups: dict[str, list[int]]
    check: Callable[[], dict[str, Any]] | None = None
    upstream_ports: list[int] = field(default_factory=list)


def place(groups: dict[str, list[int]], layout: str) -> list[int] | None:
    """Pins (pinned) or unpins (natural) every process of the setup; returns h2load's CPUs."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r}: expected one of {LAYOUTS}")
    for name, pids in groups.items():
        cpus = PINNED.get(name, ALL_CPUS) if layout == "pinned" else ALL_CPUS
        for pid in pids:
            pin(pid, cpus)
    return PINNED["h2load"] if layout == "pinned" else None


def warmup_count(spec: dict[str, Any], seconds: float) -> int:
    """Requests of one h2load process's warm-up: about `seconds` at the fixed rate, or at ~600 req/s
    per process (the slowest setups' pace) when saturating; never fewer than its connections."""
    c = int(spec.get("c", 4))
    rate = spec.get("rate")
    n = int(seconds * rate * c) if rate else int(seconds * 600)
    return max(n, c * int(spec.get("m", 1)))


@contextlib.contextmanager
def _naming_dead_processes(groups: dict[str, list[int]]) -> Iterator[None]:
    """A failed load run says which of the setup's processes had ended by then, if any."""
    try:
        yield
    except RuntimeError as exc:
        gone = {name: [pid for pid in pids if not tools.alive(pid)] for name, pids in groups.items()}
        gone = {name: pids for name, pids in gone.items() if pids}
        raise RuntimeError(f"{exc}\nprocesses ended by then: {gone or 'none'}") from exc


def measure(setup: Setup, st: Settings, workdir: Path, layout: str = "natural") -> dict[str, Any]:
    """Warm-up (with the real-client check running under the same load), then the measured run.

    The warm-up sends a fixed number of requests (-n) rather than running for a time (-D): h2load
    -D stops with calls in flight, and nginx closes the upstream connection of each aborted call,
    so a timed warm-up left the measured run to open them again."""
    gen_cpus = place(setup.groups, layout)
    checked: dict[str, Any] = {}
    thread = None
    if setup.check is not None:
        check = setup.check
        thread = threading.Thread(target=lambda: checked.update(check()), daemon=True)
        thread.start()
    warm = [dict(spec, n=warmup_count(spec, st.warmup)) for spec in setup.specs]
    with _naming_dead_processes(setup.groups):
        h2load(warm, count=1, cpus=gen_cpus, workdir=workdir, timeout=st.warmup * 10 + 60)
    if thread is not None:
        thread.join(timeout=60)
    meter = CpuMeter(setup.groups)
    conns = ConnCounter(setup.upstream_ports)
    conns.start()
    meter.start()
    with _naming_dead_processes(setup.groups):
        result = h2load(setup.specs, duration=st.duration, cpus=gen_cpus, workdir=workdir, timeout=st.duration + 60)
    used = meter.stop()
    opened = conns.stop()
    done = max(1, result.succeeded)
    # CPU that the rest of the machine used meanwhile (other programs), as a share of all CPUs.
    ours = sum(used.values()) + result.h2load_cpu
    other = max(0.0, meter.busy - ours) / max(1e-9, meter.wall * (os.cpu_count() or 1))
    out = {
        "layout": layout,
        "rps": result.rps,
        "succeeded": result.succeeded,
        "failed": result.failed,
        "p50_ms": result.p(0.50),
        "p99_ms": result.p(0.99),
        "cpu_us_per_request": {k: v / done * 1e6 for k, v in used.items()},
        "h2load_cpu_us_per_request": result.h2load_cpu / done * 1e6,
        "new_upstream_connections": opened,
        "connections_per_request": opened / done,
        "loadavg": loadavg(),
        "other_cpu_share": other,
    }
    if setup.check is not None:
        out["verified"] = checked or {"calls": 0, "ok": 0, "errors": ["the check did not finish"]}
    return out


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """min/median/max over repeats of every number in the runs."""
    out: dict[str, Any] = {}
    for key in ("rps", "p50_ms", "p99_ms", "h2load_cpu_us_per_request", "other_cpu_share", "connections_per_request"):
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


def ratio(runs: dict[str, list[dict[str, Any]]], a: str, b: str, key: str = "rps", b_key: str | None = None) -> dict[str, float] | None:
    """a/b per repeat (the setups of a repeat ran back to back), then min/median/max. `key` is "rps"
    or "cpu:GROUP" (CPU per request of a group); `b_key` defaults to `key`."""
    if a not in runs or b not in runs:
        return None

    def get(run: dict[str, Any], k: str) -> float:
        return run["cpu_us_per_request"].get(k[4:], 0.0) if k.startswith("cpu:") else run[k]

    pairs = [(get(x, key), get(y, b_key or key)) for x, y in zip(runs[a], runs[b])]
    return spread([x / y for x, y in pairs if y])


def run_setups(section: str, setups: dict[str, Setup], pinned: list[str], st: Settings, workdir: Path) -> dict[str, list[dict[str, Any]]]:
    """Every repeat runs every setup once (natural), then the `pinned` ones in the pinned layout
    (named "pinned/NAME"), so slow periods hit them all."""
    runs: dict[str, list[dict[str, Any]]] = {}
    plan = [(name, "natural") for name in setups] + [(name, "pinned") for name in pinned if name in setups and len(ALL_CPUS) >= 2]
    for rep in range(st.repeats):
        for name, layout in plan:
            key = name if layout == "natural" else f"pinned/{name}"
            log(f"{section}: repeat {rep + 1}/{st.repeats} {key}")
            runs.setdefault(key, []).append(measure(setups[name], st, workdir, layout))
    return runs


def split(runs: dict[str, list[dict[str, Any]]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Summaries of the natural setups and of the pinned ones."""
    natural = {k: summarize(v) for k, v in runs.items() if not k.startswith("pinned/")}
    pinned = {k[len("pinned/"):]: summarize(v) for k, v in runs.items() if k.startswith("pinned/")}
    return natural, pinned


def proxy_ratios(runs: dict[str, list[dict[str, Any]]], routers: list[str], prefix: str = "") -> dict[str, Any]:
    """entry/direct, nginx/direct, router CPU / nginx CPU, router CPU / function-server CPU."""
    out: dict[str, Any] = {"nginx_over_direct": ratio(runs, f"{prefix}nginx", f"{prefix}direct")}
    for router in routers:
        name = f"{prefix}{router}"
        if name not in runs:
            continue
        out[f"{router}_over_direct"] = ratio(runs, name, f"{prefix}direct")
        out[f"{router}_cpu_over_nginx"] = ratio(runs, name, f"{prefix}nginx", "cpu:proxy")
        out[f"{router}_cpu_over_servers"] = ratio(runs, name, name, "cpu:proxy", "cpu:servers")
    return {k: v for k, v in out.items() if v is not None}


def start_go_router(start: Callable[[], Any], section: str, notes: dict[str, Any]) -> Any:
    """Starts the optional Go router; if it fails, the section goes on without it and says why."""
    try:
        return start()
    except Exception as exc:  # noqa: BLE001 - an optional setup must not lose the section
        notes["go_router_error"] = f"{type(exc).__name__}: {str(exc)[:1000]}"
        log(f"{section}: the Go router did not start, measuring without it: {exc}")
        return None


def router_binary_ok(binary: str | None) -> str | None:
    if binary and not os.access(binary, os.X_OK):
        raise RuntimeError(f"router binary {binary} is not an executable file")
    return binary


# -- Spread ---------------------------------------------------------------------------------------
def bench_spread(st: Settings, workdir: Path) -> dict[str, Any]:
    from metaparticle_pulumi._targets.local import free_port

    binary = router_binary_ok(st.router_binary)
    log("spread: starting 3 replicas (each with an HTTP entry too) + router" + (" + Go router" if binary else ""))
    topo = Topology("spread", replica_http=True)
    started: list[Any] = []
    try:
        py_asyncio = topo.router("asyncio", env={"MP_EVENT_LOOP": "asyncio"}) if uvloop_installed() and not st.quick else None
        notes: dict[str, Any] = {}
        go = start_go_router(lambda: topo.router("go", binary=binary), "spread", notes) if binary else None
        # The same Go router with Go's stock monitor-thread behaviour (GODEBUG schedtrace=0: sysmon
        # sleeps deeply when idle), at the fixed rate only: what keeping sysmon awake buys. Only
        # once the first one started: else its error would stand in the report for the first's.
        go_sleepy = (
            start_go_router(lambda: topo.router("go-sysmon-sleeps", binary=binary, env={"GODEBUG": "schedtrace=0"}), "spread", notes)
            if go is not None and st.fixed_rate
            else None
        )
        replicas = topo.ports("bench-spread-replica")
        nginx = Nginx(free_port(), replicas)
        started.append(nginx)
        nginx_http = Nginx(free_port(), topo.replica_http_ports, mode="http")
        started.append(nginx_http)
        bare_ports = [free_port() for _ in replicas]
        script = str(Path(__file__).resolve().parent / "bare_echo.py")
        bare = Processes([[sys.executable, script, str(p)] for p in bare_ports], bare_ports, what="bare grpc.aio echo server")
        started.append(bare)
        thread_ports = [free_port() for _ in replicas]
        bare_thread = Processes([[sys.executable, script, str(p), "--thread"] for p in thread_ports], thread_ports,
                                what="bare grpc.aio echo server on a worker thread")
        started.append(bare_thread)
        # The same echo as a coroutine (no worker thread): the function server's own cost apart
        # from the thread a sync function runs on.
        coro = function_servers("async-echo", function="echo:echo_async", count=len(replicas))
        started.append(coro)

        body = json_body(100, user="u-1")
        expect = json.loads(body)
        frame = write(workdir, "spread.bin", grpc_frame(body))
        jbody = write(workdir, "spread.json", body)
        servers = topo.pids(entry=False)
        c, m = st.clients, st.streams

        def grpc_setup(port: int, proxy: list[int] | None) -> Setup:
            groups = {"servers": servers, "proxy": proxy} if proxy is not None else {"servers": servers}
            return Setup(grpc_specs([f"http://{HOST}:{port}"] * 3, frame, c, m), groups,
                         lambda: verify(f"{HOST}:{port}", body, expect, st.verify_calls), replicas)

        def http_setup(ports: list[int], proxy: list[int] | None, upstream: list[int]) -> Setup:
            urls = [f"http://{HOST}:{p}/" for p in (ports * 3)[:3]]
            specs = [{"url": u, "body": jbody, "c": c * m, "m": 1, "h1": True, "headers": ["content-type: application/json"]} for u in urls]
            groups = {"servers": servers, "proxy": proxy} if proxy is not None else {"servers": servers}
            return Setup(specs, groups, lambda: tools.verify_http(urls[0], body, expect, st.verify_calls), upstream)

        setups: dict[str, Setup] = {
            "direct": Setup(
                grpc_specs([f"http://{HOST}:{p}" for p in replicas], frame, c, m), {"servers": servers},
                lambda: verify(f"{HOST}:{replicas[0]}", body, expect, st.verify_calls), replicas,
            ),
            "direct_async": Setup(
                grpc_specs([f"http://{HOST}:{p}" for p in coro.ports], frame, c, m), {"servers": coro.pids},
                lambda: verify(f"{HOST}:{coro.ports[0]}", body, expect, st.verify_calls), coro.ports,
            ),
            "bare_echo": Setup(
                grpc_specs([f"http://{HOST}:{p}" for p in bare_ports], frame, c, m), {"servers": bare.pids},
                lambda: verify(f"{HOST}:{bare_ports[0]}", body, expect, st.verify_calls), bare_ports,
            ),
            "bare_echo_thread": Setup(
                grpc_specs([f"http://{HOST}:{p}" for p in thread_ports], frame, c, m), {"servers": bare_thread.pids},
                lambda: verify(f"{HOST}:{thread_ports[0]}", body, expect, st.verify_calls), thread_ports,
            ),
            "nginx": grpc_setup(nginx.port, nginx.pids),
            "entry": grpc_setup(topo.entry_port, topo.pids(entry=True)),
        }
        if go is not None:
            setups["go_entry"] = grpc_setup(go.config.grpc_port, go.pids)
        if py_asyncio is not None:
            setups["entry_asyncio_loop"] = grpc_setup(py_asyncio.config.grpc_port, py_asyncio.pids)
        setups["http_direct"] = http_setup(topo.replica_http_ports, None, topo.replica_http_ports)
        setups["http_nginx"] = http_setup([nginx_http.port], nginx_http.pids, topo.replica_http_ports)
        setups["http_entry"] = http_setup([topo.http_port], topo.pids(entry=True), replicas)
        if go is not None:
            setups["go_http_entry"] = http_setup([go.config.http_port], go.pids, replicas)
        # The same proxies and servers at one fixed offered rate, below every setup's capacity: CPU per
        # request compared at equal load (at saturation it also depends on how much each batches).
        def at_fixed_rate(base: Setup) -> Setup:
            specs = [dict(sp, c=2, rate=st.fixed_rate / (2 * len(base.specs))) for sp in base.specs]
            return Setup(specs, base.groups, None, base.upstream_ports)

        if st.fixed_rate:
            for name in ("nginx", "entry", "go_entry", "entry_asyncio_loop", "http_nginx", "http_entry", "go_http_entry",
                         "direct", "direct_async", "bare_echo", "bare_echo_thread"):
                if name in setups:
                    setups[f"{name}@{st.fixed_rate}/s"] = at_fixed_rate(setups[name])
            if go_sleepy is not None:
                sleepy = {
                    "go_entry_sysmon_sleeps": grpc_setup(go_sleepy.config.grpc_port, go_sleepy.pids),
                    "go_http_entry_sysmon_sleeps": http_setup([go_sleepy.config.http_port], go_sleepy.pids, replicas),
                }
                for name, base in sleepy.items():
                    setups[f"{name}@{st.fixed_rate}/s"] = at_fixed_rate(base)
        runs = run_setups("spread", setups, ["direct", "nginx", "entry", "go_entry"], st, workdir)
        modes, pinned = split(runs)
        routers = ["entry", "go_entry", "entry_asyncio_loop"]
        result: dict[str, Any] = {"modes": modes, "pinned": pinned, "runs": runs, "fixed_rate": st.fixed_rate, **notes}
        result["ratios"] = proxy_ratios(runs, routers)
        result["pinned_ratios"] = proxy_ratios(runs, routers, "pinned/")
        result["ratios"]["function_server_cpu_over_bare_echo"] = ratio(runs, "direct", "bare_echo", "cpu:servers")
        result["ratios"]["async_function_server_cpu_over_bare_echo"] = ratio(runs, "direct_async", "bare_echo", "cpu:servers")
        result["ratios"]["function_server_cpu_over_bare_echo_thread"] = ratio(runs, "direct", "bare_echo_thread", "cpu:servers")
        result["ratios"]["bare_echo_thread_cpu_over_bare_echo"] = ratio(runs, "bare_echo_thread", "bare_echo", "cpu:servers")
        http = {
            "http_nginx_over_http_direct": ratio(runs, "http_nginx", "http_direct"),
            "http_entry_over_http_direct": ratio(runs, "http_entry", "http_direct"),
            "go_http_entry_over_http_direct": ratio(runs, "go_http_entry", "http_direct"),
            "http_entry_cpu_over_http_nginx": ratio(runs, "http_entry", "http_nginx", "cpu:proxy"),
            "go_http_entry_cpu_over_http_nginx": ratio(runs, "go_http_entry", "http_nginx", "cpu:proxy"),
        }
        result["ratios"].update({k: v for k, v in http.items() if v is not None})
        rate = st.fixed_rate
        fixed = {
            "entry_cpu_over_nginx_at_fixed_rate": ratio(runs, f"entry@{rate}/s", f"nginx@{rate}/s", "cpu:proxy"),
            "go_entry_cpu_over_nginx_at_fixed_rate": ratio(runs, f"go_entry@{rate}/s", f"nginx@{rate}/s", "cpu:proxy"),
            "http_entry_cpu_over_http_nginx_at_fixed_rate": ratio(runs, f"http_entry@{rate}/s", f"http_nginx@{rate}/s", "cpu:proxy"),
            "router_cpu_uvloop_over_asyncio": ratio(runs, f"entry@{rate}/s", f"entry_asyncio_loop@{rate}/s", "cpu:proxy"),
            "function_server_cpu_over_bare_echo_at_fixed_rate": ratio(runs, f"direct@{rate}/s", f"bare_echo@{rate}/s", "cpu:servers"),
            "async_function_server_cpu_over_bare_echo_at_fixed_rate": ratio(
                runs, f"direct_async@{rate}/s", f"bare_echo@{rate}/s", "cpu:servers"
            ),
            "function_server_cpu_over_bare_echo_thread_at_fixed_rate": ratio(
                runs, f"direct@{rate}/s", f"bare_echo_thread@{rate}/s", "cpu:servers"
            ),
            "bare_echo_thread_cpu_over_bare_echo_at_fixed_rate": ratio(
                runs, f"bare_echo_thread@{rate}/s", f"bare_echo@{rate}/s", "cpu:servers"
            ),
            "go_entry_cpu_sysmon_awake_over_asleep_at_fixed_rate": ratio(
                runs, f"go_entry@{rate}/s", f"go_entry_sysmon_sleeps@{rate}/s", "cpu:proxy"
            ),
            "go_http_entry_cpu_sysmon_awake_over_asleep_at_fixed_rate": ratio(
                runs, f"go_http_entry@{rate}/s", f"go_http_entry_sysmon_sleeps@{rate}/s", "cpu:proxy"
            ),
        }
        result["ratios"].update({k: v for k, v in fixed.items() if v is not None})
        result["event_loop"] = "uvloop" if uvloop_installed() else "asyncio"
        result["go_router"] = binary
        if not st.quick:
            result["profile"] = profile_router(topo.pids(entry=True)[0], setups["entry"].specs, workdir)
        return result
    finally:
        for thing in reversed(started):
            thing.stop()
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
    h2load(specs, duration=seconds + 2, cpus=None, workdir=workdir, timeout=seconds + 60)
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
    from metaparticle_pulumi._targets.local import free_port
    from metaparticle_runtime.hashing import shard_for

    binary = router_binary_ok(st.router_binary)
    log("shard: starting 3 shards + router" + (" + Go router" if binary else ""))
    topo = Topology("shard")
    nginx = None
    try:
        notes: dict[str, Any] = {}
        go = start_go_router(lambda: topo.router("go", binary=binary), "shard", notes) if binary else None
        shard_ports = [topo.ports(r)[0] for r in topo.function_roles()]
        nginx = Nginx(free_port(), shard_ports, mode="grpc_hash")
        # One key per shard (our jump hash), one x-shard header value per upstream (nginx's ketama ring).
        keys = [next(f"user-{n}" for n in range(10_000) if shard_for(f"user-{n}", len(shard_ports)) == i) for i in range(len(shard_ports))]
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
        c, m = st.clients, st.streams

        def specs_for(urls: list[str], with_header: bool) -> list[dict[str, Any]]:
            out = []
            for i, url in enumerate(urls):
                extra = [f"x-shard: {headers[i]}"] if with_header else []
                out += grpc_specs([url], frames[i], c, m, [extra])
            return out

        def check_all(address: str, with_header: bool, routed: bool) -> Callable[[], dict[str, Any]]:
            def run() -> dict[str, Any]:
                total: dict[str, Any] = {"calls": 0, "ok": 0, "errors": []}
                for i, body in enumerate(bodies):
                    md = (("x-shard", headers[i]),) if with_header else ()
                    addr = address if routed else f"{HOST}:{shard_ports[i]}"
                    res = verify(addr, body, lambda a, i=i: a["shard"] == i and a["user"] == (keys[i]), max(1, st.verify_calls // 3), md)
                    for k in ("calls", "ok"):
                        total[k] += res[k]
                    total["errors"] += res["errors"]
                return total

            return run

        def routed(port: int, proxy: list[int], header: bool = False) -> Setup:
            return Setup(specs_for([f"http://{HOST}:{port}"] * 3, header), {"servers": servers, "proxy": proxy},
                         check_all(f"{HOST}:{port}", header, True), shard_ports)

        setups = {
            "direct": Setup(specs_for([f"http://{HOST}:{p}" for p in shard_ports], False), {"servers": servers}, check_all("", False, False), shard_ports),
            "nginx": routed(nginx.port, nginx.pids, header=True),
            "entry": routed(topo.entry_port, topo.pids(entry=True)),
        }
        if go is not None:
            setups["go_entry"] = routed(go.config.grpc_port, go.pids)
        runs = run_setups("shard", setups, ["direct", "nginx", "entry", "go_entry"], st, workdir)
        modes, pinned = split(runs)
        result: dict[str, Any] = {"modes": modes, "pinned": pinned, "runs": runs, "go_router": binary, **notes}
        result["ratios"] = proxy_ratios(runs, ["entry", "go_entry"])
        result["pinned_ratios"] = proxy_ratios(runs, ["entry", "go_entry"], "pinned/")
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


# -- the router's ceiling -------------------------------------------------------------------------
def bench_ceiling(st: Settings, workdir: Path) -> dict[str, Any]:
    """One router process in front of near-free backends (bench/backend, Go), next to nginx (one
    worker) on the same backends: how many requests one router process can pass, and its CPU each."""
    from metaparticle_pulumi._targets.local import free_port
    from metaparticle_runtime.config import RuntimeConfig

    binary = router_binary_ok(st.router_binary)
    backend, why = build_backend(workdir)
    if backend is None:
        return {"skipped": f"no near-free backend: {why} (bench/backend needs Go)"}
    ports = [free_port(), free_port()]
    log("ceiling: starting 2 near-free backends, a router" + (", the Go router" if binary else "") + " and nginx")
    started: list[Any] = []
    try:
        # One OS thread of Go code each: the backends stay cheap and leave the CPUs to the proxies.
        backends = Processes([[backend, "-listen", f"{HOST}:{p}"] for p in ports], ports, env={"GOMAXPROCS": "1"}, what="bench backend")
        started.append(backends)
        target = "ipv4:" + ",".join(f"{HOST}:{p}" for p in ports)
        base = RuntimeConfig(
            role="spread", pattern="Spread", name="bench-ceiling", role_name="bench-ceiling-router", replica="bench-ceiling-router",
            bind_host=HOST, grpc_port=free_port(), http_port=free_port(), upstreams=(target,), upstream_names=("bench-ceiling-backend",),
        )
        router = RoleProcess(base)
        started.append(router)
        go = None
        notes: dict[str, Any] = {}
        if binary:
            config = replace(base, grpc_port=free_port(), http_port=free_port(), replica="bench-ceiling-go-router")
            go = start_go_router(lambda: RoleProcess(config, binary=binary), "ceiling", notes)
            if go is not None:
                started.append(go)
        nginx = Nginx(free_port(), ports)
        started.append(nginx)
        body = json_body(100, user="u-1")
        expect = json.loads(body)
        frame = write(workdir, "ceiling.bin", grpc_frame(body))
        c, m = st.clients, st.streams

        def routed(port: int, proxy: list[int]) -> Setup:
            return Setup(grpc_specs([f"http://{HOST}:{port}"] * 3, frame, c, m), {"servers": backends.pids, "proxy": proxy},
                         lambda: verify(f"{HOST}:{port}", body, expect, st.verify_calls), ports)

        setups = {
            "direct": Setup(grpc_specs([f"http://{HOST}:{p}" for p in (ports * 2)[:3]], frame, c, m), {"servers": backends.pids},
                            lambda: verify(f"{HOST}:{ports[0]}", body, expect, st.verify_calls), ports),
            "nginx": routed(nginx.port, nginx.pids),
            "entry": routed(base.grpc_port, router.pids),
        }
        if go is not None:
            setups["go_entry"] = routed(go.config.grpc_port, go.pids)
        runs = run_setups("ceiling", setups, [], st, workdir)
        modes, _ = split(runs)
        return {"modes": modes, "runs": runs, "ratios": proxy_ratios(runs, ["entry", "go_entry"]), "go_router": binary, "backends": len(ports), **notes}
    finally:
        for thing in reversed(started):
            thing.stop()
