"""`python -m bench.expand PATTERN COUNT TARGET`: expands bench/programs/expand under Pulumi's mocks once,
in a fresh process, and prints one JSON line: seconds, memory growth, resources and roles.

Run in a fresh process per measurement so that the memory figures are this expansion's alone.
"""

from __future__ import annotations

import gc
import json
import resource
import sys
import time

from .tools import PROGRAMS, rss_kib


def _reset_peak() -> None:
    """Resets this process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def _peak_kib() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main() -> int:
    pattern, count, target = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    import os

    from metaparticle_pulumi._program import evaluate

    # Imports and Pulumi's own set-up happen once, before the clock (a tiny expansion warms them).
    evaluate(PROGRAMS / "expand", target=target, config={"bench:pattern": pattern, "bench:count": "1"})
    gc.collect()
    before = rss_kib(os.getpid())
    _reset_peak()
    start = time.perf_counter()
    evaluation = evaluate(PROGRAMS / "expand", target=target, config={"bench:pattern": pattern, "bench:count": str(count)})
    seconds = time.perf_counter() - start
    peak = _peak_kib()
    roles = sum(len(p.topology.roles) for p in evaluation.patterns)
    print(
        json.dumps(
            {
                "pattern": pattern,
                "count": count,
                "target": target,
                "seconds": seconds,
                "rss_before_kib": before,
                "peak_rss_kib": peak,
                "growth_kib": max(0, peak - before),
                "resources": len(evaluation.resources),
                "roles": roles,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
