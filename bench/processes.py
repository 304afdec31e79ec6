"""Processes the benchmark starts and stops: nginx as the baseline proxy, runtime roles (the Python
runtime or the Go router) outside the supervisor, plain servers (backends, bare echo servers), and
bench programs run as topologies by the project's own Supervisor. Every start waits for readiness
within a deadline; every process is stopped by the code that started it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable, Sequence

from .tools import HOST, PROGRAMS, REPO, children, pin


# -- nginx -------------------------------------------------------------------------------------------
# Upstream keep-alive: `keepalive` caches idle upstream connections (per worker), `keepalive_requests`
# and `keepalive_timeout` keep nginx from closing them after 1000 requests or 60 s. nginx's gRPC proxy
# sends one call at a time per upstream connection, so it holds about as many as there are calls in flight.
NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  upstream up {{
    {balance}
{servers}
    keepalive 256;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
  }}
  server {{
    listen {host}:{port}{listen_opts};
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    http2_max_concurrent_streams 256;
    location / {{ {location} }}
  }}
}}
"""

NGINX_LOCATIONS = {
    "grpc": ("", " http2", "grpc_pass grpc://up;"),
    "grpc_hash": ("hash $http_x_shard consistent;", " http2", "grpc_pass grpc://up;"),
    # HTTP/1.1 with keep-alive to the upstreams needs the version and an empty Connection header.
    "http": ("", "", 'proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection "";'),
}


class Nginx:
    """nginx-light with one worker: a gRPC proxy (round robin, or `hash $http_x_shard consistent`)
    or an HTTP/1.1 reverse proxy, with upstream keep-alive."""

    def __init__(self, port: int, upstream_ports: Sequence[int], *, mode: str = "grpc", cpus: Iterable[int] | None = None) -> None:
        if mode not in NGINX_LOCATIONS:
            raise ValueError(f"nginx mode {mode!r}: expected one of {sorted(NGINX_LOCATIONS)}")
        self.dir = Path(tempfile.mkdtemp(prefix="bench-nginx-"))
        self.upstream_ports = list(upstream_ports)
        servers = "\n".join(f"    server {HOST}:{p};" for p in upstream_ports)
        balance, listen_opts, location = NGINX_LOCATIONS[mode]
        conf = NGINX_CONF.format(
            dir=self.dir, balance=balance, servers=servers, host=HOST, port=port, listen_opts=listen_opts, location=location
        )
        (self.dir / "nginx.conf").write_text(conf)
        cmd = ["nginx", "-p", str(self.dir), "-c", str(self.dir / "nginx.conf"), "-e", str(self.dir / "error.log")]
        if cpus is not None:
            cmd = ["taskset", "-c", ",".join(map(str, cpus))] + cmd
        self.port = port
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_port(self.port, 10, self.proc, "nginx")
        # The master listens before it forks its worker; the worker's CPU is the figure.
        deadline = time.monotonic() + 10
        while not children(self.proc.pid):
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("nginx started no worker process within 10 s")
            time.sleep(0.02)

    @property
    def pids(self) -> list[int]:
        return [self.proc.pid] + children(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def wait_port(port: int, timeout: float, proc: subprocess.Popen[Any] | None = None, what: str = "process") -> None:
    """Waits until something accepts TCP connections on HOST:port (fails early if `proc` exits)."""
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise RuntimeError(f"{what} exited with {proc.returncode}: {err[-2000:]}")
        with socket.socket() as sock:
            if sock.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {HOST}:{port} within {timeout:g} s")


# -- processes started outside the supervisor ----------------------------------------------------------
class RoleProcess:
    """One runtime role run from a RuntimeConfig: the Python runtime, or `binary` (the Go router),
    which reads the same MP_* environment, or `module` run with `python -m` (a runtime variant such as
    bench.untraced). Ready once its HTTP /healthz (or gRPC port) answers."""

    def __init__(
        self, config: Any, *, binary: str | None = None, module: str | None = None, ready_timeout: float = 30.0,
        env: dict[str, str] | None = None,
    ) -> None:
        self.config = config
        self.log_path = Path(tempfile.mkstemp(prefix=f"bench-{config.replica}-", suffix=".log")[1])
        full = {k: v for k, v in os.environ.items() if not k.startswith("MP_")}
        full.update(config.to_env())
        full.update(env or {})
        full["PYTHONPATH"] = os.pathsep.join([str(REPO / "runtime"), str(REPO)])
        cmd = [binary] if binary else [sys.executable, "-m", module or "metaparticle_runtime"]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, env=full, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        try:
            self._wait(ready_timeout)
        except Exception:
            self.stop()
            raise

    def _wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.config.replica} exited with {self.proc.returncode}:\n{self.log()[-2000:]}")
            if self.config.http_port is not None:
                try:
                    with urllib.request.urlopen(f"http://{HOST}:{self.config.http_port}/healthz", timeout=1) as resp:
                        if resp.status == 200:
                            return
                except OSError:
                    pass
            else:
                wait_port(self.config.grpc_port, max(0.1, deadline - time.monotonic()), self.proc, self.config.replica)
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.config.replica} was not ready within {timeout:g} s:\n{self.log()[-2000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def pids(self) -> list[int]:
        return [self.proc.pid]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log_path.unlink(missing_ok=True)


class Processes:
    """Plain processes (backends, bare servers) on given ports, each ready once its port accepts."""

    def __init__(
        self, cmds: Sequence[Sequence[str]], ports: Sequence[int], env: dict[str, str] | None = None, what: str = "process",
        envs: Sequence[dict[str, str]] | None = None,
    ) -> None:
        """`env` adds to this process's environment for every command; `envs` (one per command)
        replaces it."""
        self.procs: list[subprocess.Popen[bytes]] = []
        self.ports = list(ports)
        try:
            for i, cmd in enumerate(cmds):
                full = dict(envs[i]) if envs is not None else {**os.environ, **(env or {})}
                self.procs.append(
                    subprocess.Popen(list(cmd), env=full, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                )
            for proc, port in zip(self.procs, self.ports):
                wait_port(port, 30, proc, what)
        except Exception:
            self.stop()
            raise

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


BACKEND_DIR = Path(__file__).resolve().parent / "backend"


def function_servers(name: str, runtime_dir: str | None = None, function: str = "echo:echo", count: int = 3) -> Processes:
    """`count` function servers of the spread bench's echo (`echo:echo` on worker threads or
    `echo:echo_async` on the event loop), each started alone, from `runtime_dir` (another build of
    the runtime) or this checkout's runtime."""
    from metaparticle_pulumi._ports import free_port
    from metaparticle_runtime.config import RuntimeConfig

    ports = [free_port() for _ in range(count)]
    cmds, envs = [], []
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MP_", "OTEL_"))}
    path = runtime_dir or str(REPO / "runtime")
    for i, port in enumerate(ports):
        cfg = RuntimeConfig(role="function", function=function, source_dir=str(PROGRAMS / "spread"), bind_host=HOST,
                            grpc_port=port, replica=f"{name}-{i}")
        envs.append({**base, **cfg.to_env(), "PYTHONPATH": path})
        cmds.append([sys.executable, "-m", "metaparticle_runtime"])
    return Processes(cmds, ports, envs=envs, what=f"function server ({name})")


def build_backend(workdir: Path) -> tuple[str | None, str]:
    """Builds bench/backend (the near-free gRPC backend, Go standard library only): (path, "") or
    (None, why not)."""
    if shutil.which("go") is None:
        return None, "Go is not installed"
    out = workdir / "bench-backend"
    try:
        proc = subprocess.run(["go", "build", "-o", str(out), "."], cwd=BACKEND_DIR, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return None, "go build timed out"
    if proc.returncode != 0:
        return None, f"go build failed: {proc.stderr.strip()[-500:]}"
    return str(out), ""


# -- topologies on the local target --------------------------------------------------------------------
class Topology:
    """A bench program evaluated for the local target and run under the project's own Supervisor."""

    def __init__(
        self,
        program: str,
        *,
        config: dict[str, str] | None = None,
        env: dict[str, str] | None = None,
        cpus: dict[str, Iterable[int] | None] | None = None,
        extra_roots: dict[str, dict[str, str]] | None = None,
        replica_http: bool = False,
        ready_timeout: float = 60.0,
    ) -> None:
        """`cpus` maps "entry" / "function" to CPU sets; `extra_roots` adds copies of the entry role
        (own gRPC port, no HTTP port) with extra environment, e.g. {"unhedged": {"MP_HEDGE_AFTER": "0"}};
        `replica_http` gives every function replica an HTTP entry of its own (`replica_http_ports`)."""
        from metaparticle_pulumi._program import evaluate
        from metaparticle_pulumi._supervisor import Supervisor
        from metaparticle_pulumi._targets.local import ProcessSpec, free_port
        from metaparticle_runtime.config import RuntimeConfig

        self.http_port = free_port()
        evaluation = evaluate(PROGRAMS / program, target="local", port=self.http_port, config=config or {})
        self.plan = evaluation.plans[0]
        self.function_dir = tempfile.mkdtemp(prefix="bench-fn-")
        specs = self.plan.processes(self.function_dir)
        entry_role = self.plan.topology.entry.name
        self.extra_ports: dict[str, int] = {}
        for name, extra in (extra_roots or {}).items():
            base = next(s for s in specs if s.role == entry_role)
            port = free_port()
            config = RuntimeConfig.from_env({**base.env, **extra})
            config = replace(config, grpc_port=port, replica=f"{base.name}-{name}", http_port=None)
            specs.append(ProcessSpec(base.topology, base.role, 1, f"{base.name}-{name}", port, None, config))
            self.extra_ports[name] = port
        if env:
            specs = [replace(s, extra_env={**s.extra_env, **env}) for s in specs]
        self.replica_http_ports: list[int] = []
        if replica_http:
            for i, s in enumerate(specs):
                if s.role != entry_role:
                    port = free_port()
                    specs[i] = replace(s, http_port=port, config=replace(s.config, http_port=port))
                    self.replica_http_ports.append(port)
        self.routers: list[RoleProcess] = []
        self.specs = specs
        self.entry_role = entry_role
        self.cpus = cpus or {}
        self.lines: list[str] = []
        self.supervisor = Supervisor(specs, log=lambda name, line: self.lines.append(f"{name}: {line}"), restart=False)
        self.started = time.monotonic()
        self.supervisor.start()
        self._pin()
        pending = self.supervisor.wait_ready(ready_timeout)
        if pending or self.supervisor.failed_early():
            tail = "\n".join(self.lines[-20:])
            self.stop()
            raise RuntimeError(f"{program}: processes did not become ready:\n{tail}")
        self._wait_http(ready_timeout)
        self.ready_seconds = time.monotonic() - self.started
        self._pin()

    def _pin(self) -> None:
        for replica in self.supervisor.replicas:
            kind = "entry" if replica.spec.role == self.entry_role else "function"
            if replica.pid:
                pin(replica.pid, self.cpus.get(kind))

    def _wait_http(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://{HOST}:{self.http_port}/healthz", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("entry /healthz did not answer 200")

    def pids(self, role: str | None = None, *, entry: bool | None = None) -> list[int]:
        out = []
        for replica in self.supervisor.replicas:
            is_entry = replica.spec.role == self.entry_role
            if role is not None and replica.spec.role != role:
                continue
            if entry is not None and is_entry != entry:
                continue
            if entry and replica.spec.name != self.entry_name:
                continue
            out.append(replica.pid)
        return [p for p in out if p]

    def extra_pid(self, name: str) -> int:
        """The process of the extra root `name` (see `extra_roots`)."""
        spec_name = f"{self.entry_name}-{name}"
        return next(r.pid for r in self.supervisor.replicas if r.spec.name == spec_name and r.pid)

    @property
    def entry_name(self) -> str:
        return next(s.name for s in self.specs if s.role == self.entry_role)

    def ports(self, role: str) -> list[int]:
        return list(self.plan.grpc_ports[role])

    @property
    def entry_port(self) -> int:
        return self.plan.grpc_ports[self.entry_role][0]

    def function_roles(self) -> list[str]:
        return [r.name for r in self.plan.topology.roles if not r.entry]

    def router(self, name: str, *, binary: str | None = None, env: dict[str, str] | None = None) -> RoleProcess:
        """Another router of the same pattern in front of the same replicas, on ports of its own:
        the Python runtime, or `binary` (the Go router) with the same configuration."""
        from metaparticle_pulumi._targets.local import free_port

        base = next(s for s in self.specs if s.name == self.entry_name)
        # Its own ports (not the entry's shared socket), and the Python runtime unless `binary` is given.
        config = replace(
            base.config, grpc_port=free_port(), http_port=free_port(), http_fd=None, router="python", router_binary=None,
            replica=f"{base.name}-{name}",
        )
        proc = RoleProcess(config, binary=binary, env={**base.extra_env, **(env or {})})
        self.routers.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.routers:
            proc.stop()
        self.supervisor.stop(grace=10.0)
        shutil.rmtree(self.function_dir, ignore_errors=True)
