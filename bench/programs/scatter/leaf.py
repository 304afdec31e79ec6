"""The scatter/gather benchmark's leaf and gather functions.

A leaf "works" for `work_ms` (default 1 ms, env BENCH_WORK_MS) by sleeping: on a 2-core machine
that runs up to 33 processes, CPU-bound work would measure the scheduler, not the fan-out. With
probability `straggler_rate` (env BENCH_STRAGGLER_RATE, default 0) a call is a straggler and
sleeps `straggler_ms` more (env BENCH_STRAGGLER_MS, default 50). A request may override all three
with fields of the same names, so one topology serves every variant of the benchmark.

With BENCH_COUNTER_DIR set, each leaf process counts the calls it received in a memory-mapped
8-byte file named after its pid (read by the benchmark to count hedged calls).
"""

import mmap
import os
import random
import struct
import threading
import time

WORK_MS = float(os.environ.get("BENCH_WORK_MS", "1"))
STRAGGLER_RATE = float(os.environ.get("BENCH_STRAGGLER_RATE", "0"))
STRAGGLER_MS = float(os.environ.get("BENCH_STRAGGLER_MS", "50"))

_lock = threading.Lock()
_calls = 0
_counter = None
if os.environ.get("BENCH_COUNTER_DIR"):
    _path = os.path.join(os.environ["BENCH_COUNTER_DIR"], f"leaf-{os.getpid()}")
    with open(_path, "wb") as _fh:
        _fh.write(b"\0" * 8)
    with open(_path, "r+b") as _fh:
        _counter = mmap.mmap(_fh.fileno(), 8)


def _count() -> None:
    global _calls
    if _counter is None:
        return
    with _lock:
        _calls += 1
        struct.pack_into("<Q", _counter, 0, _calls)


def leaf(request, ctx):
    _count()
    seconds = float(request.get("work_ms", WORK_MS)) / 1000.0
    rate = float(request.get("straggler_rate", STRAGGLER_RATE))
    if rate > 0 and random.random() < rate:
        seconds += float(request.get("straggler_ms", STRAGGLER_MS)) / 1000.0
    if seconds > 0:
        time.sleep(seconds)
    return {"leaf": ctx.index}


def gather(results):
    return {"leaves": [r["leaf"] for r in results]}
