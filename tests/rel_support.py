"""Running test programs on the local target (`metaparticle run`) and loading them, for the
reliability, bad-input and security tests.

A topology runs as a real `metaparticle run DIR --port P` process; its replicas are found in /proc as
that process's children (their environment says which role and replica each one is). Load loops are
bounded in request count and in time, and report what they saw.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

import grpc

# Below the ephemeral range: an outgoing connection cannot take it before the test binds it.
from metaparticle_pulumi._ports import free_port  # noqa: F401 - tests import it from here

ROOT = Path(__file__).resolve().parents[1]
PROGRAMS = Path(__file__).resolve().parent / "programs"
RESULTS = Path(__file__).resolve().parent / ".results"
RESULTS_FILE = RESULTS / "reliability.json"
HOST = "127.0.0.1"

sys.path.insert(0, str(ROOT / "runtime"))
from metaparticle_runtime import CALL_METHOD, ERROR_METADATA_KEY  # noqa: E402
from metaparticle_runtime.errors import RoleError  # noqa: E402
from metaparticle_runtime.payload import unwrap, wrap  # noqa: E402


# -- /proc ------------------------------------------------------------------------------------------


def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except OSError:
        return None
    fields_ = stat[stat.rindex(")") + 2 :].split()
    return int(fields_[1])


def _state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()[0]


def alive(pid: int) -> bool:
    state = _state(pid)
    return state is not None and state not in ("Z", "X")


def children(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _ppid(int(entry)) == pid:
            kids.append(int(entry))
    return kids


def environ(pid: int) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            raw = fh.read()
    except OSError:
        return {}
    env = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            env[key.decode(errors="replace")] = value.decode(errors="replace")
    return env


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def listening_sockets() -> list[tuple[str, str, int, int]]:
    """(family, local address, port, inode) of every TCP socket in LISTEN state."""
    found = []
    for family, path in (("tcp", "/proc/net/tcp"), ("tcp6", "/proc/net/tcp6")):
        try:
            lines = Path(path).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            local, state, inode = parts[1], parts[3], int(parts[9])
            if state != "0A":
                continue
            addr_hex, port_hex = local.split(":")
            if family == "tcp":
                addr = socket.inet_ntop(socket.AF_INET, bytes.fromhex(addr_hex)[::-1])
            else:
                raw = bytes.fromhex(addr_hex)
                addr = socket.inet_ntop(socket.AF_INET6, b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4)))
            found.append((family, addr, int(port_hex, 16), inode))
    return found


def socket_inodes(pid: int) -> set[int]:
    inodes = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


# -- running a program ------------------------------------------------------------------------------


@dataclass
class Proc:
    pid: int
    name: str  # MP_REPLICA: the replica's name, e.g. "rel-spread-replica-1"
    role: str  # MP_ROLE_NAME
    grpc_port: int
    http_port: int | None
    env: dict[str, str]


class Topology:
    """One `metaparticle run DIR --port P` process and the replicas it supervises."""

    def __init__(self, program: str | Path, env: dict[str, str] | None = None, *, ready_timeout: float = 30.0) -> None:
        self.program = Path(program) if os.path.isabs(str(program)) else PROGRAMS / str(program)
        self.port = free_port()
        self.log_file = tempfile.NamedTemporaryFile(prefix="mp-run-", suffix=".log", delete=False)
        full_env = dict(os.environ)
        full_env.update(env or {})
        full_env["PYTHONUNBUFFERED"] = "1"
        full_env["COLUMNS"] = "200"
        started = time.monotonic()
        self.cli = subprocess.Popen(
            [sys.executable, "-m", "metaparticle_pulumi", "run", str(self.program), "--port", str(self.port)],
            cwd=ROOT,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            self._wait_serving(ready_timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def log(self) -> str:
        return Path(self.log_file.name).read_text(errors="replace")

    def _wait_serving(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.cli.poll() is not None:
                raise RuntimeError(f"metaparticle run exited with {self.cli.returncode}:\n{self.log()[-3000:]}")
            if "Serving." in self.log():
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.program} not serving after {timeout}s:\n{self.log()[-3000:]}")

    def processes(self) -> dict[str, Proc]:
        """The live replicas by name (MP_REPLICA)."""
        procs = {}
        for pid in children(self.cli.pid):
            if not alive(pid):
                continue
            env = environ(pid)
            if "MP_REPLICA" not in env:
                continue
            http = env.get("MP_HTTP_PORT")
            procs[env["MP_REPLICA"]] = Proc(
                pid, env["MP_REPLICA"], env.get("MP_ROLE_NAME", ""), int(env["MP_GRPC_PORT"]), int(http) if http else None, env
            )
        return procs

    def entry(self, pattern: str | None = None) -> Proc:
        """The entry replica (of the pattern named `pattern`, when the program declares several)."""
        entries = self.entries()
        if pattern is None:
            assert len(entries) == 1, f"several patterns: {sorted(entries)}"
            return next(iter(entries.values()))
        return entries[pattern]

    def entries(self) -> dict[str, Proc]:
        """The entry replica of every pattern, by pattern name (MP_NAME)."""
        return {p.env.get("MP_NAME", ""): p for p in self.processes().values() if p.http_port is not None}

    @property
    def grpc_target(self) -> str:
        return f"{HOST}:{self.entry().grpc_port}"

    def pid(self, name: str) -> int:
        return self.processes()[name].pid

    def kill(self, name: str, sig: int = signal.SIGKILL) -> int:
        pid = self.pid(name)
        os.kill(pid, sig)
        return pid

    def wait_replaced(self, name: str, old_pid: int, timeout: float = 15.0) -> int:
        """Waits until the supervisor runs a new process for replica `name`; its pid."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.processes().get(name)
            if proc is not None and proc.pid != old_pid:
                return proc.pid
            time.sleep(0.05)
        raise TimeoutError(f"{name} was not restarted within {timeout}s:\n{self.log()[-2000:]}")

    def wait_healthy(self, timeout: float = 15.0) -> None:
        """Every replica answers SERVING and the entry reports the whole topology serving."""
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            procs = self.processes()
            if procs and all(health(HOST, p.grpc_port) == "SERVING" for p in procs.values()):
                try:
                    with urllib.request.urlopen(self.url + "/healthz", timeout=1) as reply:
                        if reply.status == 200:
                            return
                except OSError:
                    pass
            time.sleep(0.05)
        raise TimeoutError(f"{self.program} not healthy within {timeout}s:\n{self.log()[-2000:]}")

    def stop(self) -> None:
        if self.cli.poll() is None:
            os.kill(self.cli.pid, signal.SIGTERM)
            try:
                self.cli.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.cli.pid, signal.SIGKILL)
                self.cli.wait()
        self.log_file.close()
        try:
            os.unlink(self.log_file.name)
        except OSError:
            pass

    def __enter__(self) -> "Topology":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def health(host: str, port: int, timeout: float = 0.5, credentials: grpc.ChannelCredentials | None = None, options: list | None = None) -> str:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    target = f"{host}:{port}"
    channel = grpc.secure_channel(target, credentials, options=options or []) if credentials else grpc.insecure_channel(target, options=options or [])
    try:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    except grpc.RpcError as err:
        return err.code().name
    finally:
        channel.close()


# -- calling ---------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """One answer: `status` is the HTTP status or the gRPC status code name."""

    index: int
    status: int | str
    ok: bool
    body: Any
    latency: float
    done_at: float
    json_error: bool = True


def error_document(err: grpc.aio.AioRpcError) -> Any:
    for key, value in err.trailing_metadata() or ():
        if key == ERROR_METADATA_KEY:
            try:
                return json.loads(value)
            except ValueError:
                return None
    return None


class GrpcClient:
    """Raw-bytes unary calls to one entry, over one aio channel."""

    def __init__(self, target: str, *, options: list | None = None, credentials: grpc.ChannelCredentials | None = None) -> None:
        opts = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)] + list(options or [])
        if credentials is None:
            self.channel = grpc.aio.insecure_channel(target, options=opts)
        else:
            self.channel = grpc.aio.secure_channel(target, credentials, options=opts)
        self._call = self.channel.unary_unary(CALL_METHOD)

    async def raw(self, message: bytes, index: int = 0, timeout: float = 10.0) -> Outcome:
        start = time.monotonic()
        try:
            reply = await self._call(message, timeout=timeout)
        except grpc.aio.AioRpcError as err:
            doc = error_document(err)
            now = time.monotonic()
            return Outcome(index, err.code().name, False, doc if doc is not None else err.details(), now - start, now, doc is not None)
        now = time.monotonic()
        try:
            body = json.loads(unwrap(reply))
        except ValueError:
            return Outcome(index, "OK", False, unwrap(reply), now - start, now, False)
        return Outcome(index, "OK", True, body, now - start, now)

    async def json(self, body: bytes, index: int = 0, timeout: float = 10.0) -> Outcome:
        return await self.raw(wrap(body), index, timeout)

    async def close(self) -> None:
        await self.channel.close()


class HttpClient:
    def __init__(self, url: str, concurrency: int = 64) -> None:
        import aiohttp

        self.url = url
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=concurrency, force_close=False),
            timeout=aiohttp.ClientTimeout(total=30),
        )

    async def post(self, body: bytes, index: int = 0, *, headers: dict[str, str] | None = None, path: str = "/", method: str = "POST") -> Outcome:
        start = time.monotonic()
        async with self.session.request(method, self.url + path, data=body, headers=headers or {"Content-Type": "application/json"}) as reply:
            raw = await reply.read()
            status = reply.status
            ctype = reply.headers.get("Content-Type", "")
        now = time.monotonic()
        try:
            doc = json.loads(raw)
            is_json = ctype.startswith("application/json")
        except ValueError:
            doc, is_json = raw, False
        return Outcome(index, status, status == 200, doc, now - start, now, is_json)

    async def close(self) -> None:
        await self.session.close()


@dataclass
class LoadResult:
    outcomes: list[Outcome] = field(default_factory=list)
    started: float = 0.0
    finished: float = 0.0
    transport_errors: list[str] = field(default_factory=list)

    @property
    def sent(self) -> int:
        return len(self.outcomes) + len(self.transport_errors)

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    @property
    def seconds(self) -> float:
        return self.finished - self.started

    def statuses(self) -> dict[str, int]:
        counts = Counter(str(o.status) for o in self.outcomes)
        if self.transport_errors:
            counts["transport-error"] = len(self.transport_errors)
        return dict(counts)

    def latency_quantile(self, q: float, which: Callable[[Outcome], bool] = lambda o: True) -> float:
        values = sorted(o.latency for o in self.outcomes if which(o))
        if not values:
            return 0.0
        return values[min(len(values) - 1, int(q * len(values)))]


async def closed_loop(
    send: Callable[[int], Awaitable[Outcome]],
    *,
    total: int,
    concurrency: int,
    time_limit: float,
    keep_going: Callable[[], bool] = lambda: False,
    max_total: int | None = None,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> LoadResult:
    """`concurrency` workers send requests until `total` were sent (and `keep_going()` is false, up
    to `max_total`) or `time_limit` seconds passed."""
    result = LoadResult(started=time.monotonic())
    limit = max_total if max_total is not None else total
    deadline = result.started + time_limit
    counter = 0

    async def worker() -> None:
        nonlocal counter
        while time.monotonic() < deadline:
            if counter >= limit or (counter >= total and not keep_going()):
                return
            i = counter
            counter += 1
            try:
                outcome = await send(i)
            except Exception as exc:  # noqa: BLE001 - a client-side failure is a result too
                result.transport_errors.append(f"{type(exc).__name__}: {exc}")
                continue
            result.outcomes.append(outcome)
            if on_outcome is not None:
                on_outcome(outcome)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.finished = time.monotonic()
    return result


# -- results ----------------------------------------------------------------------------------------


def record(section: str, data: dict[str, Any]) -> None:
    """Writes measured numbers to tests/.results/reliability.json (for docs/reliability.md)."""
    RESULTS.mkdir(exist_ok=True)
    try:
        doc = json.loads(RESULTS_FILE.read_text())
    except (OSError, ValueError):
        doc = {}
    doc[section] = {**data, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    tmp = RESULTS_FILE.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, RESULTS_FILE)
    print(f"\n[{section}] " + json.dumps(data, sort_keys=True))


# -- certificates -----------------------------------------------------------------------------------


@dataclass
class Certs:
    ca: str
    cert: str
    key: str
    rogue_ca: str
    rogue_cert: str
    rogue_key: str


def _openssl(*args: str, cwd: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certs(directory: str | Path) -> Certs:
    """A CA and a certificate it signed for every role (IP SAN 127.0.0.1, server and client use),
    plus a second, untrusted CA with a certificate of its own: made with the openssl CLI."""
    d = str(directory)
    ext = Path(d, "role.ext")
    ext.write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
        "basicConstraints=CA:FALSE\n"
        "keyUsage=digitalSignature,keyEncipherment\n"
    )
    for prefix in ("", "rogue-"):
        _openssl(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{prefix}ca.key", "-out", f"{prefix}ca.crt", "-days", "2",
            "-subj", f"/CN={prefix}metaparticle-test-ca", cwd=d,
        )
        _openssl(
            "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{prefix}role.key", "-out", f"{prefix}role.csr", "-subj", f"/CN={prefix}metaparticle-role", cwd=d,
        )
        _openssl(
            "x509", "-req", "-in", f"{prefix}role.csr", "-CA", f"{prefix}ca.crt", "-CAkey", f"{prefix}ca.key",
            "-CAcreateserial", "-out", f"{prefix}role.crt", "-days", "2", "-extfile", "role.ext", cwd=d,
        )
    p = lambda name: str(Path(d, name).resolve())  # noqa: E731
    return Certs(p("ca.crt"), p("role.crt"), p("role.key"), p("rogue-ca.crt"), p("rogue-role.crt"), p("rogue-role.key"))


# -- the tables of docs/reliability.md --------------------------------------------------------------


def render_markdown(doc: dict[str, Any]) -> str:
    """The fault and bad-input tables of docs/reliability.md from tests/.results/reliability.json:
    `python tests/rel_support.py` prints them after a test run."""

    def get(section: str, key: str, default: Any = "n/a") -> Any:
        return doc.get(section, {}).get(key, default)

    rows = []
    s = "spread_sigkill"
    if s in doc:
        rows.append((
            "Spread (3 replicas): SIGKILL one replica a third of the way in",
            f"{get(s, 'requests')} requests, gRPC, 64 concurrent, 10 ms function",
            f"{get(s, 'failed')} failed ({get(s, 'in_flight_at_kill')} requests in flight at the kill)",
            f"restarted replica answering {get(s, 'recovery_seconds')} s after the kill",
        ))
    s = "spread_rolling_sigterm"
    if s in doc:
        rows.append((
            "Spread (3 replicas): rolling SIGTERM of every replica, one after the other",
            f"{get(s, 'requests')} requests, HTTP, 64 concurrent, 50 ms function",
            f"{get(s, 'failed')} failed; each replica reported NOT_SERVING and finished its in-flight calls "
            f"({get(s, 'in_flight_finished_after_sigterm')} answered after SIGTERM)",
            "each replica answering again " + ", ".join(f"{x} s" for x in get(s, "back_after_seconds", [])) + " after its SIGTERM",
        ))
    s = "shard_only_replica_killed"
    if s in doc:
        rows.append((
            "Shard (3 shards, 1 replica each): SIGKILL shard 1's only replica",
            f"{get(s, 'requests')} requests over 300 keys, HTTP + gRPC, 32 concurrent",
            f"other shards: {get(s, 'other_shards_failed')} of {get(s, 'other_shards_requests')} failed; shard 1: "
            f"{get(s, 'dead_shard_failed')} of {get(s, 'dead_shard_requests')} failed while down, every one 503/UNAVAILABLE "
            f"naming shard 1, in at most {get(s, 'dead_shard_failure_max_ms')} ms",
            f"shard 1 answering {get(s, 'recovery_seconds')} s after the kill",
        ))
    s = "shard_replica_killed_2_per_shard"
    if s in doc:
        rows.append((
            "Shard (3 shards, 2 replicas each): SIGKILL one replica of shard 1",
            f"{get(s, 'requests')} requests, HTTP + gRPC, 32 concurrent",
            f"{get(s, 'failed')} failed",
            f"restarted replica answering {get(s, 'recovery_seconds')} s after the kill",
        ))
    s = "scatter_dead_leaf_fail"
    if s in doc:
        rows.append((
            "Scatter/gather (3 leaves): SIGKILL leaf 1 (on_missing=\"fail\")",
            f"{get(s, 'requests_while_dead')} requests while the leaf was down",
            f"all {get(s, 'failed_naming_leaf')} failed 503/UNAVAILABLE naming leaf 1, in at most {get(s, 'max_latency_ms')} ms",
            "leaf restarted by the supervisor",
        ))
    s = "scatter_dead_leaf_partial"
    if s in doc:
        rows.append((
            "Scatter/gather: SIGKILL leaf 1 (on_missing=\"partial\")",
            f"{get(s, 'requests_while_dead')} requests while the leaf was down",
            f"0 failed: {get(s, 'partial_answers')} merged answers of leaves 0 and 2 with \"missing\": [leaf 1], "
            f"in at most {get(s, 'max_latency_ms')} ms",
            "leaf restarted by the supervisor",
        ))
    s = "scatter_slow_leaf_fail"
    if s in doc:
        rows.append((
            "Scatter/gather: leaf 2 takes 3 s, deadline 1 s (on_missing=\"fail\")",
            f"{get(s, 'requests')} concurrent requests, HTTP + gRPC",
            f"all 504/DEADLINE_EXCEEDED naming leaf 2, the slowest after {get(s, 'max_latency_ms')} ms",
            "n/a",
        ))
    s = "scatter_slow_leaf_partial"
    if s in doc:
        rows.append((
            "Scatter/gather: leaf 2 takes 3 s, deadline 1 s (on_missing=\"partial\")",
            f"{get(s, 'requests')} concurrent requests, HTTP + gRPC",
            f"0 failed: merged answers of leaves 0 and 1 with leaf 2 missing (DEADLINE_EXCEEDED), "
            f"the slowest after {get(s, 'max_latency_ms')} ms",
            "n/a",
        ))
    s = "overload"
    if s in doc:
        rows.append((
            f"Overload: {get(s, 'offered_rps')} requests/s offered to a function that sustains {get(s, 'sustainable_rps')}/s "
            "(4 in flight x 50 ms)",
            f"{get(s, 'requests')} requests in 3 s, open loop, HTTP + gRPC",
            f"served {get(s, 'served')}, refused {get(s, 'refused')} with 429/RESOURCE_EXHAUSTED "
            f"(p50 {get(s, 'refused_p50_ms')} ms, p99 {get(s, 'refused_p99_ms')} ms), {get(s, 'other_failures')} other failures",
            f"RSS {get(s, 'rss_baseline_mib')} MiB before, {get(s, 'rss_peak_mib')} MiB at most during",
        ))
    lines = ["| Fault | Load | Failures seen | Recovery |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    lines.append("")
    lines += ["| Bad input | Tried | Answers | Crashes |", "|---|---|---|---|"]
    s = "bad_input"
    if s in doc:
        statuses = get(s, "statuses", {})
        http = ", ".join(f"{k}: {v}" for k, v in statuses.items() if k.isdigit())
        grpc_ = ", ".join(f"{k}: {v}" for k, v in statuses.items() if not k.isdigit())
        lines.append(
            f"| Generated (hypothesis) and corpus requests to the HTTP and gRPC entry of every pattern "
            f"({get(s, 'entries')} entries) | {get(s, 'requests')} ({get(s, 'generated_requests')} generated, "
            f"{get(s, 'corpus_requests')} corpus) | HTTP {http}; gRPC {grpc_}. All documented statuses; every error "
            f"carries a JSON document except {get(s, 'grpc_oversize_refused_by_transport', 0)} gRPC messages far over the "
            f"limit that gRPC refused before the runtime saw them (and {get(s, 'grpc_oversize_reset_by_goaway', 0)} reset "
            f"while their connection closed) | {get(s, 'crashes')} (restarts: {get(s, 'restarts')}) |"
        )
    s = "invalid_pattern_arguments"
    if s in doc:
        lines.append(
            f"| Invalid pattern arguments at deploy time | {get(s, 'cases')} cases ({get(s, 'cli_cases')} through "
            "`metaparticle run`) | one clear `error:` line, exit code 2 | 0 |"
        )
    s = "security_pickle"
    if s in doc:
        lines.append(
            f"| Pickle payloads (HTTP body, gRPC payload, raw gRPC message, inside JSON) | {get(s, 'requests')} | "
            f"{get(s, 'refused_400')} refused 400/INVALID_ARGUMENT, the rest echoed as data; unpickled: {get(s, 'unpickled')} | 0 |"
        )
    s = "security_limits"
    if s in doc:
        lines.append(
            f"| Bodies over the limit ({get(s, 'max_request_bytes')} bytes, up to 64 MiB), JSON nested deeper than "
            f"{get(s, 'max_json_depth')} | {get(s, 'requests')} | 413/RESOURCE_EXHAUSTED, 400/INVALID_ARGUMENT; RSS +{get(s, 'rss_growth_mib_with_3_64mib_bodies')} MiB "
            "after three 64 MiB bodies | 0 |"
        )
    s = "security_mtls"
    if s in doc:
        lines.append(
            f"| Mutual TLS: {', '.join(get(s, 'refused_kinds', []))} | {get(s, 'refused_connections')} connections | all refused "
            f"(UNAVAILABLE); callers with the CA's certificate served | 0 |"
        )
    s = "security_bind"
    if s in doc:
        lines.append(f"| Listening sockets of a local topology | {get(s, 'listening_sockets')} | all on 127.0.0.1 | n/a |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render_markdown(json.loads(RESULTS_FILE.read_text())))


async def dispatch_json(runtime: Any, body: dict, timeout: float | None = None) -> tuple[str, float, object]:
    """One JSON request through a `Runtime` in this process, as a call from a client would go:
    (status name, seconds taken, the answer or the error message)."""
    start = time.monotonic()
    try:
        reply = await runtime.dispatch(wrap(json.dumps(body).encode()), start + (timeout or runtime.cfg.timeout))
    except RoleError as err:
        return err.code.name, time.monotonic() - start, err.message
    return "OK", time.monotonic() - start, json.loads(unwrap(reply))


def run(coro: Awaitable[Any]) -> Any:
    """Like asyncio.run, on a loop of its own, but leaves this thread's current event loop as it
    was: asyncio.run leaves none, and Pulumi's mocks in later tests need one."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()
