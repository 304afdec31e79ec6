"""Running the Go router (runtime/router) and Python runtime roles as real processes on 127.0.0.1,
for tests that compare the two routers in front of the same Python function servers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Awaitable, Iterator

import pytest

import rel_support as rs
from rel_support import run  # noqa: F401 - tests call it as router_support.run
from metaparticle_runtime.config import RuntimeConfig

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "scripts" / "build-router"
HOST = "127.0.0.1"

#: A function for the tests: echoes the request with where and when it ran; sleeps on {"sleep": s};
#: answers a string of n bytes on {"big": n}.
FUNCTIONS = '''
import time

def echo(request, ctx):
    if isinstance(request, dict) and isinstance(request.get("sleep"), (int, float)):
        time.sleep(request["sleep"])
    if isinstance(request, dict) and isinstance(request.get("big"), int):
        return {"big": "x" * request["big"], "replica": ctx.replica}
    return {"echo": request, "replica": ctx.replica, "index": ctx.index, "remaining": ctx.time_remaining()}
'''


def router_binary() -> str:
    """The Go router binary: $MP_ROUTER_BIN, else built by scripts/build-router; skips without Go
    (fails instead when MP_REQUIRE_ROUTER=1)."""
    given = os.environ.get("MP_ROUTER_BIN")
    if given:
        assert os.access(given, os.X_OK), f"MP_ROUTER_BIN={given} is not an executable"
        return given
    if shutil.which("go") is None:
        if os.environ.get("MP_REQUIRE_ROUTER") == "1":
            pytest.fail("MP_REQUIRE_ROUTER=1 but Go is not installed, so the Go router cannot be built")
        pytest.skip("Go is not installed: the Go router cannot be built (set MP_REQUIRE_ROUTER=1 to fail instead)")
    out = subprocess.run([str(BUILD)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"scripts/build-router failed:\n{out.stderr[-3000:]}"
    return out.stdout.strip().splitlines()[-1]


@dataclass
class Proc:
    """One role process and its log."""

    popen: subprocess.Popen[bytes]
    cfg: RuntimeConfig
    log_path: Path
    kind: str  # "python" or "go"

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def grpc_target(self) -> str:
        return f"{HOST}:{self.cfg.grpc_port}"

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.cfg.http_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
                raise AssertionError(f"{self.cfg.replica} did not stop within {timeout}s:\n{self.log()[-2000:]}") from None
        return self.popen.returncode


@dataclass
class Processes:
    """Every process a test started; all stopped at the end, whatever happened."""

    tmp: Path
    procs: list[Proc] = field(default_factory=list)

    def start(
        self, cfg: RuntimeConfig, kind: str, binary: str | None = None, env: dict[str, str] | None = None,
        pass_fds: tuple[int, ...] = (),
    ) -> Proc:
        log_path = self.tmp / f"{cfg.replica}.log"
        full = {k: v for k, v in os.environ.items() if not k.startswith("MP_")}
        full.update(cfg.to_env())
        full.update(env or {})
        full["PYTHONPATH"] = str(ROOT / "runtime")
        cmd = [binary] if kind == "go" else [sys.executable, "-m", "metaparticle_runtime"]
        assert cmd[0], "the Go router needs its binary"
        with open(log_path, "wb") as log:
            popen = subprocess.Popen(
                cmd, env=full, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self.tmp, pass_fds=pass_fds
            )
        proc = Proc(popen, cfg, log_path, kind)
        self.procs.append(proc)
        return proc

    def functions(self, name: str, count: int, *, index: int | None = None, **settings: object) -> list[Proc]:
        """`count` Python function servers of the test function (one replica group)."""
        (self.tmp / "rtfn.py").write_text(FUNCTIONS)
        procs = []
        for i in range(count):
            cfg = RuntimeConfig(role="function", function="rtfn:echo", source_dir=str(self.tmp), bind_host=HOST,
                                grpc_port=rs.free_port(), role_name=name, replica=f"{name}-{i}", index=index, **settings)
            procs.append(self.start(cfg, "python"))
        for proc in procs if not settings.get("tls_cert") else ():  # (a plaintext health check cannot reach TLS replicas)
            wait_status(proc)  # every replica serves before a router is put in front: a failed start shows here
        return procs

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.popen.poll() is None:
                proc.popen.kill()
                proc.popen.wait()


@contextlib.contextmanager
def processes() -> Iterator[Processes]:
    tmp = Path(tempfile.mkdtemp(prefix="mp-router-"))
    group = Processes(tmp)
    try:
        yield group
    finally:
        group.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


def target(procs: list[Proc]) -> str:
    """The gRPC target that names every replica of a group, as the local target writes it."""
    return "ipv4:" + ",".join(p.grpc_target for p in procs)


def router_config(role: str, groups: list[list[Proc]], names: list[str], name: str, **settings: object) -> RuntimeConfig:
    return RuntimeConfig(role=role, bind_host=HOST, grpc_port=rs.free_port(), http_port=rs.free_port(), role_name=name,
                         replica=name, upstreams=tuple(target(g) for g in groups), upstream_names=tuple(names), **settings)


def twin(cfg: RuntimeConfig, replica: str) -> RuntimeConfig:
    """The same router configuration on ports of its own."""
    return replace(cfg, grpc_port=rs.free_port(), http_port=rs.free_port() if cfg.http_port else None, replica=replica)


def wait_status(proc: Proc, want: str = "SERVING", timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise AssertionError(f"{proc.cfg.replica} exited with {proc.popen.returncode}:\n{proc.log()[-3000:]}")
        last = rs.health(HOST, proc.cfg.grpc_port)
        if last == want:
            return
        time.sleep(0.05)
    raise AssertionError(f"{proc.cfg.replica} was {last}, not {want}, after {timeout}s:\n{proc.log()[-3000:]}")


