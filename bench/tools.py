"""Measuring tools for the benchmark: h2load runs, CPU accounting from /proc, new connections from
/proc/net/tcp, and a real gRPC client that checks the answers (processes: bench/processes.py).

Every run is bounded: h2load gets a duration (-D) or a request count (-n) and a subprocess timeout.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import struct
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import grpc

from metaparticle_runtime import CALL_METHOD, ERROR_METADATA_KEY
from metaparticle_runtime.payload import unwrap, wrap

HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
REPO = Path(__file__).resolve().parent.parent
PROGRAMS = Path(__file__).resolve().parent / "programs"


# -- statistics ----------------------------------------------------------------------------------------
def spread(values: Sequence[float]) -> dict[str, float]:
    """min / median / max of repeated measurements (n too)."""
    vals = [v for v in values if v is not None]
    if not vals:
        return {"n": 0}
    return {"min": min(vals), "median": statistics.median(vals), "max": max(vals), "n": len(vals)}


def percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    idx = min(len(sorted_values) - 1, max(0, int(round(q * (len(sorted_values) - 1)))))
    return sorted_values[idx]


# -- bodies ------------------------------------------------------------------------------------------
def json_body(size: int = 100, **fields: Any) -> bytes:
    """A JSON object of exactly `size` bytes: `fields` plus a padding string."""
    doc = dict(fields)
    doc["pad"] = ""
    base = len(json.dumps(doc, separators=(",", ":")).encode())
    if base > size:
        raise ValueError(f"fields alone take {base} bytes")
    doc["pad"] = "x" * (size - base)
    data = json.dumps(doc, separators=(",", ":")).encode()
    assert len(data) == size, len(data)
    return data


def grpc_frame(json_bytes: bytes) -> bytes:
    """The HTTP/2 body of a unary gRPC call carrying `Payload{json}`: flag 0, 4-byte length, message."""
    message = wrap(json_bytes)
    return b"\x00" + struct.pack(">I", len(message)) + message


def write(directory: Path, name: str, data: bytes) -> Path:
    path = directory / name
    path.write_bytes(data)
    return path


# -- CPU accounting --------------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), in seconds; 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def alive(pid: int) -> bool:
    """Running: neither gone nor a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                out += [int(p) for p in fh.read().split()]
    except OSError:
        pass
    return out


def pin(pid: int, cpus: Iterable[int] | None) -> None:
    """Pins every thread of `pid` (threads started later inherit the mask)."""
    if cpus is None:
        return
    mask = set(cpus)
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return
    for task in tasks:
        try:
            os.sched_setaffinity(int(task), mask)
        except OSError:
            pass


def busy_seconds() -> float:
    """CPU time spent by everything on the machine (all CPUs, not idle or iowait), in seconds."""
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / CLK_TCK


class CpuMeter:
    """CPU seconds used by named groups of processes between start() and stop()."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups
        self._start: dict[str, float] = {}
        self.used: dict[str, float] = {}

    def _read(self) -> dict[str, float]:
        return {name: sum(cpu_seconds(p) for p in pids) for name, pids in self.groups.items()}

    def start(self) -> None:
        self._start = self._read()
        self._busy = busy_seconds()
        self._t0 = time.monotonic()

    def stop(self) -> dict[str, float]:
        end = self._read()
        self.used = {name: end[name] - self._start.get(name, 0.0) for name in end}
        self.busy = busy_seconds() - self._busy
        self.wall = time.monotonic() - self._t0
        return self.used


# -- h2load ------------------------------------------------------------------------------------------
@dataclass
class LoadResult:
    requests: int = 0
    succeeded: int = 0
    failed: int = 0
    seconds: float = 0.0
    rps: float = 0.0
    latencies_us: list[float] = field(default_factory=list)
    h2load_cpu: float = 0.0

    def p(self, q: float) -> float:
        return percentile(self.latencies_us, q) / 1000.0  # ms


#: h2load's duration units ("finished in 5.01s", "12.30ms", "258us").
_H2LOAD_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def _h2load_seconds(text: str) -> float:
    for unit in ("us", "ms", "s"):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * _H2LOAD_UNITS[unit]
    raise ValueError(f"h2load duration {text!r} has no unit of us, ms or s")


def _parse_h2load(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("finished in"):
            parts = line.replace(",", "").split()
            out["seconds"] = _h2load_seconds(parts[2])
            out["rps"] = float(parts[3])
        elif line.startswith("requests:"):
            words = line.replace(",", "").split()
            for i, w in enumerate(words):
                if w in ("total", "succeeded", "failed", "errored", "timeout") and i > 0:
                    out[w] = float(words[i - 1])
    return out


def h2load(
    specs: Sequence[dict[str, Any]],
    *,
    duration: float | None = None,
    count: int | None = None,
    cpus: Iterable[int] | None = (1,),
    workdir: Path,
    timeout: float = 120.0,
) -> LoadResult:
    """Runs one h2load per spec concurrently (spec: url, body, c, m, headers, h1) and adds them up.

    With `duration`, each runs for that long (-D); with `count`, each sends that many requests (-n;
    a spec's own "n" overrides it).
    """
    procs = []
    logs = []
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    before = usage.ru_utime + usage.ru_stime
    for i, spec in enumerate(specs):
        log = workdir / f"h2load-{i}.tsv"
        if log.exists():
            log.unlink()
        cmd = ["h2load", "-t", "1", "-c", str(spec.get("c", 4)), "-m", str(spec.get("m", 16)), f"--log-file={log}"]
        if duration is not None:
            cmd += ["-D", f"{int(round(duration * 1000))}ms"]
        else:
            cmd += ["-n", str(spec.get("n", count))]
        if spec.get("h1"):
            cmd += ["--h1"]
        if spec.get("rate"):
            cmd += [f"--rps={spec['rate']:g}"]
        for header in spec.get("headers", ()):
            cmd += ["-H", header]
        cmd += ["-d", str(spec["body"]), spec["url"]]
        if cpus is not None:
            cmd = ["taskset", "-c", ",".join(map(str, cpus))] + cmd
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        logs.append(log)
    result = LoadResult()
    deadline = time.monotonic() + timeout
    outputs = []
    for proc in procs:
        try:
            out, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        outputs.append(out)
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    result.h2load_cpu = used.ru_utime + used.ru_stime - before
    for spec, out in zip(specs, outputs):
        parsed = _parse_h2load(out)
        if "rps" not in parsed:
            raise RuntimeError(f"h2load gave no result:\n{out[-2000:]}")
        if parsed.get("total", 0) and not parsed.get("succeeded", 0):
            raise RuntimeError(f"h2load to {spec['url']}: not one request succeeded:\n{out[-2000:]}")
        result.rps += parsed["rps"]
        result.seconds = max(result.seconds, parsed["seconds"])
        result.requests += int(parsed.get("total", 0))
        result.succeeded += int(parsed.get("succeeded", 0))
        result.failed += int(parsed.get("failed", 0) + parsed.get("errored", 0) + parsed.get("timeout", 0))
    lat: list[float] = []
    for log in logs:
        if log.exists():
            for line in log.read_text().splitlines():
                cols = line.split("\t")
                if len(cols) >= 3 and cols[1].startswith("2"):
                    lat.append(float(cols[2]))
    lat.sort()
    result.latencies_us = lat
    return result


def grpc_specs(urls: Sequence[str], body: Path, c: int, m: int, headers: Sequence[Sequence[str]] | None = None) -> list[dict[str, Any]]:
    base = ["content-type: application/grpc", "te: trailers"]
    return [
        {
            "url": url + "/metaparticle.v1.Function/Call",
            "body": body,
            "c": c,
            "m": m,
            "headers": base + list((headers[i] if headers else ())),
        }
        for i, url in enumerate(urls)
    ]


# -- a real client -------------------------------------------------------------------------------------
class Checker:
    """Calls a gRPC target with a real client and checks grpc-status and the answer."""

    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel(address)
        self.stub = self.channel.unary_unary(CALL_METHOD, _registered_method=True)

    def call(self, json_bytes: bytes, metadata: Sequence[tuple[str, str]] = (), timeout: float = 10.0) -> Any:
        try:
            reply = self.stub(wrap(json_bytes), timeout=timeout, metadata=tuple(metadata) or None)
        except grpc.RpcError as err:
            doc = None
            for key, value in err.trailing_metadata() or ():
                if key == ERROR_METADATA_KEY:
                    doc = value
            raise AssertionError(f"grpc-status {err.code().name}: {err.details()} {doc!r}") from None
        return json.loads(unwrap(reply))

    def close(self) -> None:
        self.channel.close()


def verify(address: str, json_bytes: bytes, expect: Any, n: int, metadata: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
    """`n` calls with a real gRPC client: how many had grpc-status OK and the expected answer."""
    checker = Checker(address)
    ok = 0
    errors: list[str] = []
    try:
        for _ in range(n):
            try:
                answer = checker.call(json_bytes, metadata)
            except AssertionError as exc:
                errors.append(str(exc))
                continue
            if expect is None or (expect(answer) if callable(expect) else answer == expect):
                ok += 1
            else:
                errors.append(f"unexpected answer {str(answer)[:200]}")
    finally:
        checker.close()
    return {"calls": n, "ok": ok, "errors": errors[:3]}


def verify_http(url: str, json_bytes: bytes, expect: Any, n: int) -> dict[str, Any]:
    ok = 0
    errors: list[str] = []
    for _ in range(n):
        req = urllib.request.Request(url, data=json_bytes, method="POST", headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                answer = json.loads(resp.read())
        except Exception as exc:  # noqa: BLE001
            errors.append(str(exc))
            continue
        if answer == expect:
            ok += 1
        else:
            errors.append(f"unexpected answer {str(answer)[:200]}")
    return {"calls": n, "ok": ok, "errors": errors[:3]}


# -- connections per request -------------------------------------------------------------------------
def _tcp_tuples(ports: set[int]) -> set[tuple[int, int]]:
    """(client port, server port) of every IPv4 TCP connection to one of `ports`, in any state
    (TIME_WAIT included: the closing side keeps it for 60 s), read from /proc/net/tcp."""
    out: set[tuple[int, int]] = set()
    try:
        with open("/proc/net/tcp") as fh:
            next(fh)
            for line in fh:
                cols = line.split()
                local, remote, state = int(cols[1].rsplit(":", 1)[1], 16), int(cols[2].rsplit(":", 1)[1], 16), cols[3]
                if state == "0A":  # LISTEN
                    continue
                if remote in ports:
                    out.add((local, remote))
                elif local in ports:
                    out.add((remote, local))
    except OSError:
        pass
    return out


class ConnCounter:
    """New TCP connections to `ports` between start() and stop(): connections present at stop (open,
    closing or in TIME_WAIT) that were not present at start. A connection whose port pair was reused
    within the run counts once, so this is a lower bound (exact while ports are not reused)."""

    def __init__(self, ports: Iterable[int]) -> None:
        self.ports = set(ports)
        self._before: set[tuple[int, int]] = set()

    def start(self) -> None:
        self._before = _tcp_tuples(self.ports)

    def stop(self) -> int:
        return len(_tcp_tuples(self.ports) - self._before)


def versions() -> dict[str, str]:
    def run(cmd: list[str]) -> str:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return (out.stdout + out.stderr).strip().splitlines()[0]
        except (OSError, subprocess.TimeoutExpired, IndexError):
            return "missing"

    import platform
    from importlib import metadata

    out = {"python": platform.python_version(), "h2load": run(["h2load", "--version"]), "nginx": run(["nginx", "-v"])}
    for dist in ("grpcio", "protobuf", "aiohttp", "pulumi", "uvloop"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def machine() -> dict[str, Any]:
    import platform

    model = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) // 1024
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_mib": mem,
        "kernel": platform.release(),
        "os": _os_release(),
    }


def _os_release() -> str:
    try:
        for line in open("/etc/os-release"):
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "unknown"
