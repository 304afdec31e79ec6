"""Fixtures that run programs for real: `metaparticle run DIR` as a subprocess on 127.0.0.1.

`run_program(directory)` starts the whole local topology, waits until every pattern's entry answers
GET /healthz with 200 and yields a `Running` (URLs, gRPC ports, the process tree). Leaving the
context stops it with SIGINT and checks that the stop is clean: exit code 0, no process of the
topology left alive, every port free again.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client as httplib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlparse

import pytest

# Below the ephemeral range: an outgoing connection cannot take it before the test binds it.
from metaparticle_pulumi._ports import free_port  # noqa: F401 - tests import it from here

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
PROGRAMS = Path(__file__).resolve().parent / "programs"
METAPARTICLE = str(Path(sys.executable).with_name("metaparticle"))
HOST = "127.0.0.1"

try:  # psutil when installed, /proc otherwise
    import psutil
except ImportError:  # pragma: no cover - depends on the environment
    psutil = None


@pytest.fixture(autouse=True)
def _a_current_event_loop() -> Iterator[None]:
    """Pulumi registers resources on the thread's current event loop, and asyncio.run() leaves
    none behind: a test after one must not fail for that alone."""
    try:
        asyncio.get_event_loop()
    except RuntimeError:
        asyncio.set_event_loop(asyncio.new_event_loop())
    yield


# -- ports ----------------------------------------------------------------------------------------


def port_is_free(port: int) -> bool:
    """Whether a server could listen on `port` now (connections lingering in TIME_WAIT do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def wait_until(predicate: Any, timeout: float, interval: float = 0.05) -> bool:
    """Polls `predicate` until it is true or `timeout` seconds passed; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


# -- processes ------------------------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat fields after the command name (state is [0], ppid [1], starttime [19])."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw.rsplit(")", 1)[1].split()


def process_identity(pid: int) -> tuple[int, str] | None:
    """(pid, start time): tells a process apart from a later one that reuses its pid."""
    if psutil is not None:
        try:
            return pid, repr(psutil.Process(pid).create_time())
        except psutil.Error:
            return None
    fields = _stat(pid)
    return (pid, fields[19]) if fields else None


def is_alive(identity: tuple[int, str]) -> bool:
    """Whether that very process still runs (a zombie waiting to be reaped does not)."""
    pid = identity[0]
    if psutil is not None:
        try:
            proc = psutil.Process(pid)
            return repr(proc.create_time()) == identity[1] and proc.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False
    fields = _stat(pid)
    return bool(fields) and fields[19] == identity[1] and fields[0] not in ("Z", "X")


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children, their children...)."""
    if psutil is not None:
        try:
            return [p.pid for p in psutil.Process(pid).children(recursive=True)]
        except psutil.Error:
            return []
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields:
                parents.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _listening_inodes(port: int) -> set[str]:
    """Socket inodes listening on 127.0.0.1:`port` (or every address), from /proc/net/tcp and tcp6
    (gRPC listens on an IPv6 socket with the IPv4-mapped address)."""
    inodes = set()
    wanted = {
        f"0100007F:{port:04X}",
        f"00000000:{port:04X}",
        f"0000000000000000FFFF00000100007F:{port:04X}",
        f"{'0' * 32}:{port:04X}",
    }
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            fh = open(table)
        except OSError:
            continue
        with fh:
            next(fh)
            for line in fh:
                parts = line.split()
                if parts[1] in wanted and parts[3] == "0A":  # LISTEN
                    inodes.add(parts[9])
    return inodes


def pid_listening_on(port: int, among: list[int]) -> int | None:
    """The process among `among` that listens on 127.0.0.1:`port`."""
    if psutil is not None:
        for pid in among:
            try:
                proc = psutil.Process(pid)
                conns = (getattr(proc, "net_connections", None) or proc.connections)(kind="tcp")  # psutil < 6
            except psutil.Error:
                continue
            if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in conns):
                return pid
        return None
    inodes = _listening_inodes(port)
    for pid in among:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                return pid
    return None


# -- HTTP and gRPC calls --------------------------------------------------------------------------


@dataclass
class Reply:
    status: int | str
    body: Any
    content_type: str = ""
    seconds: float = 0.0


def http(url: str, body: bytes | None = None, *, method: str = "POST", path: str = "/", timeout: float = 10.0) -> Reply:
    """One HTTP request to 127.0.0.1; the status and the JSON document (or text) of the answer."""
    parsed = urlparse(url)
    assert parsed.hostname == HOST, f"tests only talk to {HOST}, not {parsed.hostname}"
    conn = httplib.HTTPConnection(HOST, parsed.port, timeout=timeout)
    start = time.monotonic()
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
    finally:
        conn.close()
    seconds = time.monotonic() - start
    try:
        doc: Any = json.loads(data)
    except ValueError:
        doc = data.decode("utf-8", "replace")
    return Reply(response.status, doc, response.getheader("Content-Type") or "", seconds)


def grpc_call(grpc_url: str, body: bytes, *, timeout: float = 10.0) -> Reply:
    """One call of the runtime's gRPC method; the status code name and the JSON (error) document."""
    from metaparticle_pulumi._client import CallError, call

    assert urlparse(grpc_url).hostname == HOST
    start = time.monotonic()
    try:
        answer = call(grpc_url, body, timeout=timeout)
    except CallError as err:
        return Reply(err.status or "UNREACHABLE", err.document, seconds=time.monotonic() - start)
    return Reply(answer.status, answer.body, seconds=time.monotonic() - start)


def post_json(url: str, request: Any, **kwargs: Any) -> Reply:
    return http(url, json.dumps(request).encode(), **kwargs)


# -- running programs -----------------------------------------------------------------------------


@dataclass
class Running:
    """A `metaparticle run` process and the topology it serves."""

    process: subprocess.Popen[bytes]
    endpoints: dict[str, Any]
    log_path: Path
    stopped: bool = False
    exit_code: int | None = None
    _identities: list[tuple[int, str]] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The first pattern's HTTP entry (the one on --port)."""
        return self.endpoints["patterns"][0]["url"]

    @property
    def grpc_url(self) -> str:
        return self.endpoints["patterns"][0]["grpc_url"]

    def pattern(self, name: str) -> dict[str, Any]:
        for pattern in self.endpoints["patterns"]:
            if pattern["name"] == name:
                return pattern
        raise KeyError(name)

    def role_ports(self, role: str) -> list[int]:
        for pattern in self.endpoints["patterns"]:
            for r in pattern["roles"]:
                if r["name"] == role:
                    return list(r["grpc_ports"])
        raise KeyError(role)

    def ports(self) -> list[int]:
        ports = []
        for pattern in self.endpoints["patterns"]:
            ports.append(urlparse(pattern["url"]).port)
            for role in pattern["roles"]:
                ports.extend(role["grpc_ports"])
                ports.extend(
                    urlparse(p["metrics_url"]).port for p in role.get("processes", []) if not role["entry"]
                )
        return ports

    def children(self) -> list[int]:
        return descendants(self.process.pid)

    def pid_of(self, port: int) -> int | None:
        """The replica process serving gRPC (or HTTP) on `port`."""
        return pid_listening_on(port, self.children())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGINT, timeout: float = 20.0) -> int:
        """Stops `metaparticle run` with `sig` and waits for it; its exit code."""
        if self.stopped:
            assert self.exit_code is not None
            return self.exit_code
        self._identities = [i for i in (process_identity(p) for p in self.children()) if i]
        self.process.send_signal(sig)
        try:
            self.exit_code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            for identity in self._identities:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(identity[0], signal.SIGKILL)
            raise AssertionError(f"metaparticle run did not stop within {timeout}s\n{self.log()[-3000:]}") from None
        self.stopped = True
        return self.exit_code

    def survivors(self) -> list[int]:
        """Processes of the topology still alive after the stop."""
        return [identity[0] for identity in self._identities if is_alive(identity)]

    def busy_ports(self, timeout: float = 3.0) -> list[int]:
        """Ports of the topology still in use after the stop (waits up to `timeout` for them to free)."""
        busy = self.ports()
        wait_until(lambda: not [p for p in busy if not port_is_free(p)], timeout)
        return [p for p in busy if not port_is_free(p)]

    def assert_stopped_cleanly(self) -> None:
        assert self.exit_code == 0, f"metaparticle run exited with {self.exit_code}\n{self.log()[-3000:]}"
        assert self._identities, "the topology had no processes to stop"
        survivors = self.survivors()
        for pid in survivors:  # do not leave them behind for the next test
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert not survivors, f"processes {survivors} survived metaparticle run"
        busy = self.busy_ports()
        assert not busy, f"ports {busy} are still in use after metaparticle run stopped"


def start(directory: Path, *args: str, port: int | None = None, ready_timeout: float = 30.0, tmp: Path) -> Running:
    """Starts `metaparticle run DIRECTORY --port PORT` and waits until every entry serves."""
    port = port or free_port()
    endpoints_file = tmp / "endpoints.json"
    endpoints_file.unlink(missing_ok=True)
    log_path = tmp / "run.log"
    log = open(log_path, "wb")
    process = subprocess.Popen(
        [METAPARTICLE, "run", str(directory), "--port", str(port), "--endpoints-json", str(endpoints_file), *args],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp,
    )
    log.close()
    running = Running(process, {}, log_path)
    deadline = time.monotonic() + ready_timeout
    try:
        while not endpoints_file.exists():
            if process.poll() is not None:
                raise AssertionError(f"metaparticle run exited with {process.returncode}:\n{running.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"metaparticle run was not ready within {ready_timeout}s:\n{running.log()[-3000:]}")
            time.sleep(0.05)
        running.endpoints = json.loads(endpoints_file.read_text())
        assert urlparse(running.url).port == port
        for pattern in running.endpoints["patterns"]:
            ok = wait_until(lambda: _healthz(pattern["url"]) == 200, max(0.0, deadline - time.monotonic()))
            assert ok, f"{pattern['url']}/healthz never answered 200\n{running.log()[-3000:]}"
    except BaseException:
        if process.poll() is None:
            running.stop(signal.SIGINT)
        raise
    return running


def _healthz(url: str) -> int | None:
    try:
        return http(url, None, method="GET", path="/healthz", timeout=2).status  # type: ignore[return-value]
    except OSError:
        return None


@contextlib.contextmanager
def run_program(directory: Path, *args: str, tmp: Path, port: int | None = None) -> Iterator[Running]:
    """A running topology for the duration of the block, stopped (and checked) afterwards."""
    running = start(directory, *args, port=port, tmp=tmp)
    try:
        yield running
    finally:
        if not running.stopped:
            running.stop(signal.SIGINT)
            running.assert_stopped_cleanly()


@pytest.fixture(scope="session")
def hello_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """examples/hello_world, running for the whole session (cheap, and several modules use it)."""
    with run_program(EXAMPLES / "hello_world", tmp=tmp_path_factory.mktemp("hello_world")) as running:
        yield running


# -- programs written by tests --------------------------------------------------------------------


def write_program(directory: Path, main: str, **modules: str) -> Path:
    """A Pulumi Python program in `directory`: __main__.py is `main`, plus `name=source` modules."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "Pulumi.yaml").write_text(f"name: {directory.name.replace('_', '-')}\nruntime: python\n")
    (directory / "__main__.py").write_text(main)
    for name, source in modules.items():
        (directory / f"{name}.py").write_text(source)
    return directory


# -- a container engine ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def engine() -> Iterator[Any]:
    """The container engine (Docker API) for the tests that run containers: skips without one,
    unless MP_REQUIRE_CONTAINERS=1 (CI), where it fails."""
    from metaparticle_pulumi import _containers as containers
    from metaparticle_pulumi._containers import EngineError

    try:
        client = containers.connect()
    except EngineError as exc:
        if os.environ.get("MP_REQUIRE_CONTAINERS") == "1":
            pytest.fail(f"MP_REQUIRE_CONTAINERS=1, but {exc}")
        pytest.skip(f"no container engine reachable: {exc}")
    yield client
    client.close()
