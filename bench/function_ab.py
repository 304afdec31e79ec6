"""`python -m bench.function_ab NAME=RUNTIME_DIR [NAME=RUNTIME_DIR] [--repeats N] [--duration S] [--rate R]`:
the function server of one or two builds of the runtime (each RUNTIME_DIR holds a
`metaparticle_runtime` package, e.g. an older commit's `runtime/` from `git archive`) against the
bare grpc.aio echo server, measured side by side as the spread section's `direct` and `bare_echo`
setups are: three processes per build, one h2load of 2 connections x 11 streams at each, setups
interleaved in every repeat. Prints one JSON document: CPU microseconds per request and req/s per
build, and per-repeat ratios (each build over bare_echo; the second build over the first).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from .common import Settings
from .processes import Processes, function_servers
from .throughput import Setup, ratio, run_setups, split
from .tools import HOST, PROGRAMS, grpc_frame, grpc_specs, json_body, verify, write


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.function_ab", description=__doc__.split("\n\n")[0])
    parser.add_argument("builds", nargs="+", help="NAME=RUNTIME_DIR, one or two")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=0,
                        help="offer this many req/s to each setup in all (h2load --rps) instead of saturating it")
    parser.add_argument("--function", default="echo:echo",
                        help="the function served: echo:echo (sync, on a worker thread) or echo:echo_async (on the loop)")
    args = parser.parse_args(argv)
    builds = dict(b.split("=", 1) for b in args.builds)
    if not 1 <= len(builds) <= 2 or any(not Path(d, "metaparticle_runtime").is_dir() for d in builds.values()):
        parser.error("give one or two NAME=RUNTIME_DIR, each a directory holding metaparticle_runtime")
    st = Settings(repeats=args.repeats, duration=args.duration, verify_calls=5)
    workdir = Path(tempfile.mkdtemp(prefix="bench-ab-"))
    body = json_body(100, user="u-1")
    expect = json.loads(body)
    frame = write(workdir, "ab.bin", grpc_frame(body))
    from metaparticle_pulumi._ports import free_port

    bare_ports = [free_port() for _ in range(3)]
    script = str(Path(__file__).resolve().parent / "bare_echo.py")
    started: list[Processes] = []
    try:
        started.append(Processes([[sys.executable, script, str(p)] for p in bare_ports], bare_ports, what="bare echo"))
        groups: dict[str, Processes] = {"bare_echo": started[-1]}
        for name, runtime_dir in builds.items():
            started.append(function_servers(name, str(Path(runtime_dir).resolve()), args.function))
            groups[name] = started[-1]

        def setup(procs: Processes) -> Setup:
            specs = grpc_specs([f"http://{HOST}:{p}" for p in procs.ports], frame, st.clients, st.streams)
            if args.rate:  # as the spread section's fixed-rate setups
                specs = [dict(sp, c=2, rate=args.rate / (2 * len(specs))) for sp in specs]
            return Setup(specs, {"servers": procs.pids}, lambda: verify(f"{HOST}:{procs.ports[0]}", body, expect, st.verify_calls))

        runs = run_setups("function_ab", {name: setup(p) for name, p in groups.items()}, [], st, workdir)
    finally:
        for procs in reversed(started):
            procs.stop()
    modes, _ = split(runs)
    names = list(builds)
    out: dict[str, Any] = {
        name: {"cpu_us_per_request": m["cpu_us_per_request"]["servers"], "rps": m["rps"], "failed": m["failed"], "verified": m.get("verified")}
        for name, m in modes.items()
    }
    out["ratios"] = {f"{n}_cpu_over_bare_echo": ratio(runs, n, "bare_echo", "cpu:servers") for n in names}
    if len(names) == 2:
        out["ratios"][f"{names[1]}_cpu_over_{names[0]}"] = ratio(runs, names[1], names[0], "cpu:servers")
        out["ratios"][f"{names[1]}_rps_over_{names[0]}"] = ratio(runs, names[1], names[0])
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
