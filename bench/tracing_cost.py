"""What tracing costs per request: the function server (called directly) and a Spread router in
front of one function server, each in three builds measured side by side in every repeat:

- `off`: the runtime as shipped, no OTLP endpoint (the default);
- `no_hooks`: the same runtime with its tracing hooks replaced by no-ops in that process only
  (bench/untraced.py): the baseline for "off costs nothing measurable";
- `on`: OTLP/HTTP to a local sink that decodes every export (bench/otlp_sink.py), sampler always_on.

Each build has its own processes (a router setup's router and function server are the same build).
After the runs, the spans the sink received are compared with the requests each traced process
answered (its metaparticle_requests_total): every traced request should arrive as one span.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

from .common import Settings, log
from .processes import Processes, RoleProcess
from .throughput import Setup, ratio, run_setups, split
from .tools import HOST, PROGRAMS, grpc_frame, grpc_specs, json_body, spread, verify, write

BUILDS = ("off", "no_hooks", "on")


def traced_env(sink_port: int) -> dict[str, str]:
    """The standard OTEL_* variables of the `on` build."""
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{HOST}:{sink_port}",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_TRACES_SAMPLER": "always_on",
    }


def requests_answered(metrics_url: str) -> float:
    """The sum of metaparticle_requests_total over its labels, from a role's /metrics."""
    with urllib.request.urlopen(metrics_url, timeout=5) as resp:
        text = resp.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("metaparticle_requests_total{"))


def sink_counts(port: int) -> dict[str, int]:
    with urllib.request.urlopen(f"http://{HOST}:{port}/counts", timeout=5) as resp:
        return json.loads(resp.read())


def ratios(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per repeat, for the function server and the router setup: CPU per request and req/s of
    `off` and `on` over `no_hooks`."""
    out: dict[str, Any] = {}
    for setup, group in (("function", "servers"), ("router", "proxy")):
        for build in ("off", "on"):
            a, b = f"{setup}/{build}", f"{setup}/no_hooks"
            out[f"{setup}_{build}_cpu_over_no_hooks"] = ratio(runs, a, b, f"cpu:{group}")
            out[f"{setup}_{build}_rps_over_no_hooks"] = ratio(runs, a, b)
        out["router_on_servers_cpu_over_no_hooks"] = ratio(runs, "router/on", "router/no_hooks", "cpu:servers")
    return {k: v for k, v in out.items() if v is not None}


def _passthrough(metadata: Any = None) -> Any:
    return metadata


class _Echo:
    """A role answering its request at once: what is left to time is the server's own path."""

    upstreams: list[Any] = []
    uses_threads = False

    async def call(self, message: bytes, deadline: float) -> bytes:
        return message


def hook_cost_ns(calls: int = 100_000, rounds: int = 5) -> dict[str, Any]:
    """Nanoseconds per call of the tracing-off hooks, in this process: `Runtime.dispatch` (as the
    servers call it) against `Runtime._dispatch` (the same path without the hooks) on a role that
    answers at once, interleaved in `rounds`; and `tracing.with_trace` against passing the
    metadata on. What the HTTP and gRPC servers add around these is the same in both."""
    import asyncio

    from metaparticle_runtime import tracing
    from metaparticle_runtime.config import RuntimeConfig
    from metaparticle_runtime.server import Runtime

    cfg = RuntimeConfig(role="function", function="echo:echo", source_dir=str(PROGRAMS / "spread"), replica="hooks")
    runtime = Runtime(cfg)
    if runtime.tracing is not None:
        raise RuntimeError("hook_cost_ns needs tracing off (no OTEL_EXPORTER_OTLP_*ENDPOINT in the environment)")
    runtime.role = _Echo()  # type: ignore[assignment]
    message, deadline = b"x", time.monotonic() + 3600

    async def loop(fn: Any) -> float:
        start = time.perf_counter_ns()
        for _ in range(calls):
            await fn(message, deadline)
        return (time.perf_counter_ns() - start) / calls

    async def run() -> dict[str, list[float]]:
        out: dict[str, list[float]] = {"dispatch": [], "bare": []}
        for _ in range(rounds):
            out["dispatch"].append(await loop(runtime.dispatch))
            out["bare"].append(await loop(runtime._dispatch))
        return out

    timed = asyncio.run(run())
    metadata = (("a", "b"),)
    with_trace, passed = [], []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        for _ in range(calls):
            tracing.with_trace(metadata)
        with_trace.append((time.perf_counter_ns() - start) / calls)
        start = time.perf_counter_ns()
        for _ in range(calls):
            _passthrough(metadata)
        passed.append((time.perf_counter_ns() - start) / calls)
    return {
        "dispatch_ns": spread(timed["dispatch"]),
        "without_hooks_ns": spread(timed["bare"]),
        "dispatch_hooks_ns": spread([a - b for a, b in zip(timed["dispatch"], timed["bare"])]),
        "with_trace_hook_ns": spread([a - b for a, b in zip(with_trace, passed)]),
    }


def bench_tracing(st: Settings, workdir: Path) -> dict[str, Any]:
    from metaparticle_pulumi._program import evaluate
    from metaparticle_pulumi._targets.local import free_port

    evaluation = evaluate(PROGRAMS / "spread", target="local", port=free_port(), config={"bench:replicas": "1"})
    function_dir = tempfile.mkdtemp(prefix="bench-fn-")
    specs = evaluation.plans[0].processes(function_dir)
    router_spec = next(s for s in specs if s.config.role == "spread")
    fn_spec = next(s for s in specs if s.config.role == "function")
    sink_port = free_port()
    started: list[Any] = []
    try:
        sink = Processes([[sys.executable, "-m", "bench.otlp_sink", str(sink_port)]], [sink_port], what="OTLP sink")
        started.append(sink)
        fns: dict[str, RoleProcess] = {}
        routers: dict[str, RoleProcess] = {}
        for build in BUILDS:
            log(f"tracing: starting the function server and a router, build {build}")
            env = {**fn_spec.extra_env, **(traced_env(sink_port) if build == "on" else {})}
            module = "bench.untraced" if build == "no_hooks" else None
            fcfg = replace(fn_spec.config, grpc_port=free_port(), http_port=None, metrics_port=free_port(), replica=f"fn-{build}")
            fns[build] = RoleProcess(fcfg, module=module, env=env)
            started.append(fns[build])
            rcfg = replace(
                router_spec.config, grpc_port=free_port(), http_port=free_port(), http_fd=None, router="python",
                router_binary=None, upstreams=(f"ipv4:{HOST}:{fcfg.grpc_port}",), replica=f"router-{build}",
            )
            routers[build] = RoleProcess(rcfg, module=module, env={**router_spec.extra_env, **env})
            started.append(routers[build])

        body = json_body(100, user="u-1")
        expect = json.loads(body)
        frame = write(workdir, "tracing.bin", grpc_frame(body))
        c, m = st.clients, st.streams

        def setup(port: int, groups: dict[str, list[int]]) -> Setup:
            return Setup(grpc_specs([f"http://{HOST}:{port}"] * 3, frame, c, m), groups,
                         lambda: verify(f"{HOST}:{port}", body, expect, st.verify_calls))

        setups: dict[str, Setup] = {}
        for build in BUILDS:
            setups[f"function/{build}"] = setup(fns[build].config.grpc_port, {"servers": fns[build].pids})
        for build in BUILDS:
            r = routers[build]
            setups[f"router/{build}"] = setup(r.config.grpc_port, {"proxy": r.pids, "servers": fns[build].pids})
        runs = run_setups("tracing", setups, [], st, workdir)
        modes, _ = split(runs)
        answered = {
            "fn-on": requests_answered(f"http://{HOST}:{fns['on'].config.metrics_port}/metrics"),
            "router-on": requests_answered(f"http://{HOST}:{routers['on'].config.http_port}/metrics"),
        }
        for proc in (routers["on"], fns["on"]):
            proc.stop()  # a graceful stop sends what the batch processor still holds
        deadline = time.monotonic() + 10
        counts = sink_counts(sink_port)
        while time.monotonic() < deadline and any(counts.get(k, 0) < v for k, v in answered.items()):
            time.sleep(0.2)
            counts = sink_counts(sink_port)
        exported = {k: {"requests": v, "spans": counts.get(k, 0), "spans_per_request": counts.get(k, 0) / v if v else None}
                    for k, v in answered.items()}
        hooks = hook_cost_ns(20_000 if st.quick else 100_000)
        return {"modes": modes, "runs": runs, "ratios": ratios(runs), "exported": exported, "builds": list(BUILDS), "hooks": hooks}
    finally:
        for thing in reversed(started):
            thing.stop()
        shutil.rmtree(function_dir, ignore_errors=True)
