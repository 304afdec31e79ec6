"""Supervises local processes like a tiny Kubernetes: starts, waits for health, restarts, stops.

Every replica runs `python -m metaparticle_runtime` with its role's environment. A replica that
exits is restarted with backoff, whether it had served or not; one that keeps exiting before it
ever serves is given up after `early_restarts` restarts (its last log lines say why). Ctrl-C or
SIGTERM stops everything (SIGTERM, then SIGKILL after a grace period). A replica whose function is
the user's own server (`mp.Container`) has that server as a second process: started before the
runtime, restarted (with backoff) whenever it exits, stopped after the runtime drained; its output
goes to the log under the replica's name, each line marked `[server]`. Children die with the
supervisor even if it is killed: each arms PR_SET_PDEATHSIG itself (MP_PARENT_PID). Children are
spawned without a `preexec_fn`, which would fork() this process while its gRPC threads run: gRPC's
fork handlers then aborted some children before exec.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import grpc
from grpc_health.v1 import health_pb2

from metaparticle_runtime import probe
from metaparticle_runtime.config import RuntimeConfig

from ._logformat import text as format_log_line  # noqa: F401 - where callers have found it
from ._targets.local import HOST, ProcessSpec

#: (replica name, output line as the process wrote it).
LogSink = Callable[[str, str], None]

# The deploying machine's environment reaches local processes only for what Python needs, and
# OpenTelemetry's standard configuration (OTEL_*: where traces go, sampling, service name).
_PASSED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "VIRTUAL_ENV", "PYTHONPATH", "SYSTEMROOT", "TMPDIR")
_PASSED_PREFIXES = ("OTEL_",)


#: Starts a user's server (`mp.Container`) so that it dies with the supervisor, like the runtime
#: replicas (PR_SET_PDEATHSIG survives exec): arm it, check the parent is still there, exec.
_EXEC_WITH_PDEATHSIG = """
import ctypes, os, signal, sys
try:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
except OSError:
    pass
if os.getppid() != int(sys.argv[1]):
    sys.exit(1)
try:
    os.execvp(sys.argv[2], sys.argv[2:])
except OSError as exc:
    print(f"cannot run {sys.argv[2]!r}: {exc.strerror or exc}", flush=True)
    sys.exit(127)
"""


@dataclass
class Replica:
    """One supervised process and its history."""

    spec: ProcessSpec
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = 0.0
    next_start: float = 0.0
    exit_codes: list[int] = field(default_factory=list)
    last_lines: list[str] = field(default_factory=list)
    #: It has served (health SERVING) at least once.
    ready: bool = False
    #: It exited before ever serving too often (or restarts are off): it stays down.
    gave_up: bool = False
    #: The thread that copies the process's output into `last_lines` and the log.
    pump: threading.Thread | None = None
    #: The user's server (`spec.server`) the runtime calls, when the function is an mp.Container.
    server: subprocess.Popen[bytes] | None = None
    server_restarts: int = 0
    server_started_at: float = 0.0
    server_next_start: float = 0.0

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None


def restart_delay(restarts: int, *, stable: bool) -> float:
    """Seconds before restarting a process: doubling from 0.5 s up to 5 s with its restarts, back to
    0.5 s once it had run (and served) for 30 s."""
    return 0.5 if stable else min(5.0, 0.5 * (2 ** min(restarts, 4)))


class Supervisor:
    """Runs the replicas of `specs`; `restart=False` leaves an exited replica down."""

    #: Restarts of a replica that exits before it ever served, before the supervisor gives up on it.
    EARLY_RESTARTS = 3

    def __init__(
        self,
        specs: list[ProcessSpec],
        *,
        log: LogSink,
        python: str = sys.executable,
        restart: bool = True,
        early_restarts: int = EARLY_RESTARTS,
    ) -> None:
        self.replicas = [Replica(s) for s in specs]
        self.log = log
        self.python = python
        self.restart = restart
        self.early_restarts = early_restarts
        self.stopping = False
        self._threads: list[threading.Thread] = []

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> None:
        """Starts every replica whose upstreams serve; `wait_ready` starts the routers in turn.

        Routers start once the replicas they call serve, so their first connections succeed and
        every replica takes its share from the first request (instead of after a reconnect backoff).
        """
        for replica in self.replicas:
            if not self._upstream_roles(replica):
                self._spawn(replica)

    @staticmethod
    def _upstream_roles(replica: Replica) -> set[str]:
        return set(replica.spec.config.upstream_names)

    def _start_routers_whose_upstreams_serve(self, serving_roles: set[str]) -> None:
        for replica in self.replicas:
            if replica.process is None and self._upstream_roles(replica) <= serving_roles:
                self._spawn(replica)

    def _spawn_server(self, replica: Replica) -> None:
        """Starts the replica's own server (`mp.Container`): its command, in its directory."""
        spec = replica.spec.server
        assert spec is not None
        env = {k: v for k, v in os.environ.items() if k in _PASSED_ENV or k.startswith(_PASSED_PREFIXES)}
        env.update(spec.env)
        try:
            process = subprocess.Popen(
                [self.python, "-c", _EXEC_WITH_PDEATHSIG, str(os.getpid()), *spec.command],
                cwd=spec.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            # Not a crash of ours: the runtime stays NOT_SERVING and the run says why.
            self.log(replica.spec.name, f"[server] cannot start {' '.join(spec.command)!r} in {spec.cwd}: {exc.strerror or exc}")
            replica.server = None
            replica.server_next_start = time.monotonic() + 5.0
            return
        replica.server = process
        replica.server_started_at = time.monotonic()
        thread = threading.Thread(target=self._pump, args=(replica, process, "[server] "), daemon=True)
        thread.start()
        self._threads.append(thread)

    def _poll_server(self, replica: Replica, now: float) -> None:
        """Restarts a replica's server that exited (backoff 0.5 s doubling to 5 s)."""
        server = replica.server
        if server is not None and server.poll() is None:
            return
        if replica.server_next_start == 0.0:
            code = server.returncode if server is not None else None
            delay = restart_delay(replica.server_restarts, stable=now - replica.server_started_at > 30)
            replica.server_next_start = now + delay
            self.log(replica.spec.name, f"[server] exited with code {code}; restarting in {delay:.1f}s")
        elif now >= replica.server_next_start:
            replica.server_next_start = 0.0
            replica.server_restarts += 1
            self._spawn_server(replica)

    def _spawn(self, replica: Replica) -> None:
        if replica.spec.server is not None and (replica.server is None or replica.server.poll() is not None):
            replica.server_next_start = 0.0
            self._spawn_server(replica)
        env = {k: v for k, v in os.environ.items() if k in _PASSED_ENV or k.startswith(_PASSED_PREFIXES)}
        env.update(replica.spec.env)
        env["PYTHONUNBUFFERED"] = "1"
        env[RuntimeConfig.env_name("parent_pid")] = str(os.getpid())
        replica.process = subprocess.Popen(
            [self.python, "-m", "metaparticle_runtime"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the supervisor, which stops children in order
            pass_fds=replica.spec.pass_fds,
        )
        replica.started_at = time.monotonic()
        thread = threading.Thread(target=self._pump, args=(replica, replica.process), daemon=True)
        thread.start()
        replica.pump = thread
        self._threads.append(thread)

    def _pump(self, replica: Replica, process: subprocess.Popen[bytes], mark: str = "") -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            line = mark + raw.decode("utf-8", "replace").rstrip()
            replica.last_lines = (replica.last_lines + [line])[-20:]
            self.log(replica.spec.name, line)  # as written: the view formats it

    def poll(self) -> None:
        """Restarts replicas that exited (backoff 0.5 s doubling to 5 s), as a Deployment would.

        A replica that never served is restarted `early_restarts` times at most, then given up.
        """
        now = time.monotonic()
        for replica in self.replicas:
            proc = replica.process
            if proc is None or self.stopping or replica.gave_up:
                continue
            if replica.spec.server is not None:
                self._poll_server(replica, now)
            code = proc.poll()
            if code is None:
                continue
            if replica.next_start == 0.0:
                replica.exit_codes.append(code)
                if not self.restart or (not replica.ready and replica.restarts >= self.early_restarts):
                    replica.gave_up = True
                    if replica.pump is not None:
                        replica.pump.join(timeout=1.0)  # its last output lines say why
                    if self.restart:
                        self.log(replica.spec.name, f"exited with code {code} before serving; gave up after {replica.restarts} restarts")
                    continue
                delay = restart_delay(replica.restarts, stable=replica.ready and now - replica.started_at > 30)
                replica.next_start = now + delay
                self.log(replica.spec.name, f"exited with code {code}; restarting in {delay:.1f}s")
            elif now >= replica.next_start:
                replica.next_start = 0.0
                replica.restarts += 1
                self._spawn(replica)

    def failed_early(self) -> Replica | None:
        """A replica that exited before ever serving and stays down (given up, or restarts off)."""
        self.poll()
        return next((r for r in self.replicas if r.gave_up), None)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM everything, wait up to `grace` seconds, SIGKILL what is left; reap all."""
        self.stopping = True
        self._terminate(self.replicas, grace)
        for thread in self._threads:
            thread.join(timeout=1.0)

    def add(self, specs: list[ProcessSpec]) -> list[Replica]:
        """More replicas to supervise (a `run --watch` roll); `wait_ready(replicas=...)` starts
        each once the roles it calls serve."""
        new = [Replica(spec) for spec in specs]
        self.replicas.extend(new)
        return new

    def retire(self, replicas: list[Replica], grace: float = 10.0) -> None:
        """Stops `replicas` as `stop` does (they drain first) and supervises them no longer."""
        gone = {id(r) for r in replicas}
        self.replicas = [r for r in self.replicas if id(r) not in gone]
        self._terminate(replicas, grace)
        for replica in replicas:
            if replica.pump is not None:
                replica.pump.join(timeout=1.0)

    @staticmethod
    def _terminate(replicas: list[Replica], grace: float) -> None:
        """Runtimes first (they drain, calling their servers meanwhile), then the servers."""
        deadline = time.monotonic() + grace
        Supervisor._signal_and_reap([r.process for r in replicas if r.process is not None], deadline)
        servers = [r.server for r in replicas if r.server is not None]
        Supervisor._signal_and_reap(servers, max(deadline, time.monotonic() + 2.0))

    @staticmethod
    def _signal_and_reap(procs: list[subprocess.Popen[bytes]], deadline: float) -> None:
        for proc in procs:
            if proc.poll() is None:
                try:
                    proc.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for proc in procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    # -- health ----------------------------------------------------------------------------------------
    def serving(self, replica: Replica, timeout: float = 0.5) -> bool:
        config = replica.spec.config
        # Roles with mutual TLS answer only peers with a certificate: present the roles' own.
        tls = (config.tls_cert, config.tls_key, config.tls_ca)
        try:
            status = probe.check(f"{HOST}:{replica.spec.grpc_port}", timeout=timeout, tls=tls)
        except grpc.RpcError:
            return False
        return status == health_pb2.HealthCheckResponse.SERVING

    def wait_ready(
        self,
        timeout: float,
        on_ready: Callable[[Replica], None] | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        replicas: list[Replica] | None = None,
    ) -> list[Replica]:
        """Waits until every replica (of `replicas`, default all) serves, restarting those that
        exit; returns those that did not serve within `timeout`, or as soon as one is given up
        (`failed_early`)."""
        pending = list(self.replicas if replicas is None else replicas)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline and not should_stop():
            for replica in list(pending):
                if replica.process is not None and replica.process.poll() is None and self.serving(replica):
                    replica.ready = True
                    pending.remove(replica)
                    if on_ready:
                        on_ready(replica)
            waiting_roles = {r.spec.role for r in pending}
            self._start_routers_whose_upstreams_serve({r.spec.role for r in self.replicas} - waiting_roles)
            if self.failed_early():
                break
            if pending:
                time.sleep(0.05)
        return pending
