"""`python -m bench.router_ceiling [--seconds S] [--json FILE]`: one Go router process (on one core,
GOMAXPROCS=1, and on every core), one Python router process and nginx (one worker, `grpc_pass`,
round robin) in front of the same two near-free backends
(mp-echo-backend: a fixed gRPC reply), one after the other in one run, natural scheduling.

Reports per setup: requests/s, p50/p99 latency, the proxy's CPU µs per request (from /proc/PID/stat)
and the backends' CPU µs per request, then the ratios. A real gRPC client checks each setup's answer
first. Bounded: every h2load run has a duration and a timeout; every process started here is stopped.
Needs Go (scripts/build-router), h2load and nginx (bench/setup.sh).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from metaparticle_pulumi._ports import free_port
from metaparticle_runtime.config import RuntimeConfig

from .processes import Nginx, wait_port
from .tools import CpuMeter, grpc_frame, grpc_specs, h2load, verify, verify_http, write

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent
REPLY = b'{"ok":true}'


def build() -> tuple[str, str]:
    """The router and the echo backend, built with Go's caches (about a second when up to date)."""
    router = subprocess.run([str(ROOT / "scripts" / "build-router")], capture_output=True, text=True, timeout=600, check=True)
    path = router.stdout.strip().splitlines()[-1]
    backend = str(Path(path).with_name("mp-echo-backend"))
    subprocess.run(["go", "build", "-buildvcs=false", "-trimpath", "-o", backend, "./cmd/mp-echo-backend"],
                   cwd=ROOT / "runtime" / "router", check=True, timeout=600)
    return path, backend



def wait_serving(port: int, timeout: float = 30.0) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(f"{HOST}:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise RuntimeError(f"port {port} not SERVING after {timeout}s")


def router_env(role_name: str, port: int, backends: list[int], http_port: int | None = None) -> dict[str, str]:
    cfg = RuntimeConfig(role="spread", role_name=role_name, replica=role_name, bind_host=HOST, grpc_port=port, http_port=http_port,
                        upstreams=("ipv4:" + ",".join(f"{HOST}:{p}" for p in backends),), upstream_names=("echo",))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MP_")}
    env.update(cfg.to_env())
    env["PYTHONPATH"] = str(ROOT / "runtime")
    env["MP_LOG_LEVEL"] = "WARNING"
    return env


def measure(name: str, port: int, pids: list[int], backend_pids: list[int], body: Path, seconds: float, workdir: Path,
            http_port: int | None = None) -> dict[str, Any]:
    """gRPC calls to `port`, or with `http_port` HTTP/1.1 keep-alive POSTs of the JSON to the entry."""
    if http_port is None:
        check = verify(f"{HOST}:{port}", b"{}", json.loads(REPLY), 20)
        specs = grpc_specs([f"http://{HOST}:{port}"], body, c=4, m=16)
    else:
        check = verify_http(f"http://{HOST}:{http_port}/", b"{}", json.loads(REPLY), 20)
        specs = [{"url": f"http://{HOST}:{http_port}/", "body": body, "c": 64, "m": 1, "h1": True, "headers": ["content-type: application/json"]}]
    if check["ok"] != check["calls"]:
        raise RuntimeError(f"{name} answered wrongly: {check}")
    h2load(specs, duration=0.5, cpus=None, workdir=workdir)  # warm-up: connections, caches, JIT-free but fair
    meter = CpuMeter({"proxy": pids, "backends": backend_pids})
    meter.start()
    result = h2load(specs, duration=seconds, cpus=None, workdir=workdir, timeout=seconds + 60)
    used = meter.stop()
    n = max(result.succeeded, 1)
    return {
        "setup": name, "requests": result.requests, "failed": result.failed, "rps": round(result.rps),
        "p50_ms": round(result.p(0.5), 3), "p99_ms": round(result.p(0.99), 3),
        "proxy_cpu_us_per_req": round(used["proxy"] * 1e6 / n, 1), "backends_cpu_us_per_req": round(used["backends"] * 1e6 / n, 1),
        "h2load_cpu_us_per_req": round(result.h2load_cpu * 1e6 / n, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.router_ceiling", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="load duration per setup")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    missing = [tool for tool in ("h2load", "nginx", "go") if shutil.which(tool) is None]
    if missing:
        print(f"bench.router_ceiling: {', '.join(missing)} not found (bench/setup.sh installs h2load and nginx)", file=sys.stderr)
        return 2
    router_bin, backend_bin = build()
    workdir = Path(tempfile.mkdtemp(prefix="bench-ceiling-"))
    request = b'{"user":"u-1","pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}'
    body = write(workdir, "call.bin", grpc_frame(request))
    json_body = write(workdir, "call.json", request)
    procs: list[subprocess.Popen] = []
    nginx = None
    rows = []
    try:
        backend_ports = [free_port(), free_port()]
        for port in backend_ports:
            procs.append(subprocess.Popen([backend_bin, "-listen", f"{HOST}:{port}", "-reply", REPLY.decode()]))
            wait_port(port, 20.0, procs[-1], what=str(procs[-1].args))
        backend_pids = [p.pid for p in procs]
        go1_port, go_port, py_port, nginx_port = free_port(), free_port(), free_port(), free_port()
        go1_http, py_http = free_port(), free_port()
        go1 = subprocess.Popen([router_bin], env={**router_env("go-router-1", go1_port, backend_ports, go1_http), "GOMAXPROCS": "1"},
                               stderr=subprocess.DEVNULL)
        go = subprocess.Popen([router_bin], env=router_env("go-router", go_port, backend_ports), stderr=subprocess.DEVNULL)
        py = subprocess.Popen([sys.executable, "-m", "metaparticle_runtime"], env=router_env("py-router", py_port, backend_ports, py_http),
                              stderr=subprocess.DEVNULL)
        procs += [go1, go, py]
        for port in (go1_port, go_port, py_port):
            wait_serving(port)
        nginx = Nginx(nginx_port, backend_ports, cpus=None)
        setups = (("go router GOMAXPROCS=1", go1_port, [go1.pid]), (f"go router GOMAXPROCS={os.cpu_count()}", go_port, [go.pid]),
                  ("python router", py_port, [py.pid]), ("nginx", nginx_port, nginx.pids))
        for name, port, pids in setups:
            rows.append(measure(name, port, pids, backend_pids, body, args.seconds, workdir))
        # The HTTP/JSON entry (HTTP/1.1 keep-alive POST, 64 connections) of the same two routers.
        for name, port, pids, http_port in (("go router GOMAXPROCS=1, HTTP entry", go1_port, [go1.pid], go1_http),
                                            ("python router, HTTP entry", py_port, [py.pid], py_http)):
            rows.append(measure(name, port, pids, backend_pids, json_body, args.seconds, workdir, http_port))
    finally:
        if nginx is not None:
            nginx.stop()
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)
    go1, go, py, ngx, go1_h, py_h = rows
    cpu = "proxy_cpu_us_per_req"
    ratios = {
        "go(1 core)/nginx cpu per request": round(go1[cpu] / ngx[cpu], 2),
        "go(all cores)/nginx cpu per request": round(go[cpu] / ngx[cpu], 2),
        "python/nginx cpu per request": round(py[cpu] / ngx[cpu], 2),
        "go(1 core)/python cpu per request": round(go1[cpu] / py[cpu], 2),
        "go(1 core)/nginx req/s": round(go1["rps"] / ngx["rps"], 2),
        "go(1 core)/python req/s": round(go1["rps"] / py["rps"], 2),
        "HTTP entry go(1 core)/python cpu per request": round(go1_h[cpu] / py_h[cpu], 2),
        "HTTP entry go(1 core)/nginx gRPC cpu per request": round(go1_h[cpu] / ngx[cpu], 2),
    }
    cols = ["setup", "rps", "p50_ms", "p99_ms", "proxy_cpu_us_per_req", "backends_cpu_us_per_req", "h2load_cpu_us_per_req", "failed"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    for k, v in ratios.items():
        print(f"{k}: {v}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "ratios": ratios, "seconds": args.seconds, "cpus": os.cpu_count()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
