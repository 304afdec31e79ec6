"""Replicas start cleanly while the supervisor's gRPC is busy, and still die with the supervisor.

The supervisor used to spawn children with a `preexec_fn` (to arm PR_SET_PDEATHSIG), which makes
subprocess fork() the whole supervisor; with its gRPC threads running health checks, gRPC's fork
handlers aborted about 3 children in 100 before exec (exit -6, `ev_epoll1_linux.cc ... Check
failed: wakeup_fd_->Wakeup().ok()` or `epoll_wait ... Bad file descriptor`): the flaky start-up
abort of routers and roots, the roles started while the supervisor health-checks their upstreams.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

import rel_support as rs
from metaparticle_pulumi._supervisor import Supervisor
from metaparticle_pulumi._targets.local import ProcessSpec
from metaparticle_runtime.config import RuntimeConfig

pytestmark = pytest.mark.timeout(120)


def test_children_spawned_while_grpc_is_busy_all_start():
    server = grpc.server(futures.ThreadPoolExecutor(4))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = server.add_insecure_port(f"{rs.HOST}:0")
    server.start()
    busy = True

    def check() -> None:
        while busy:
            with grpc.insecure_channel(f"{rs.HOST}:{port}") as channel:
                try:
                    health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
                except grpc.RpcError:
                    pass

    checkers = [threading.Thread(target=check, daemon=True) for _ in range(4)]
    for t in checkers:
        t.start()
    cfg = RuntimeConfig(role="function", function="m:f", replica="r")
    specs = [ProcessSpec("t", "r", i, f"r-{i}", 0, None, cfg) for i in range(500)]
    # /bin/true stands in for Python: what is tested is the spawn (fork/exec), which the old way
    # aborted in the child before exec; each child then exits 0 at once.
    sup = Supervisor(specs, log=lambda name, line: None, python="/bin/true", restart=False)
    try:
        for replica in sup.replicas:
            sup._spawn(replica)
            replica.process.wait(timeout=10)
    finally:
        busy = False
        for t in checkers:
            t.join(timeout=5)
        server.stop(None)
        sup.stop(grace=1)
    codes = [r.process.returncode for r in sup.replicas]
    assert codes == [0] * len(codes), {c: codes.count(c) for c in set(codes)}


def _child_runtime_script(parent_pid_env: str) -> str:
    return f"""
import os, subprocess, sys, time
env = dict(os.environ, MP_ROLE="function", MP_FUNCTION="json:dumps", MP_GRPC_PORT="{rs.free_port()}",
           MP_BIND_HOST="127.0.0.1", {parent_pid_env})
child = subprocess.Popen([sys.executable, "-m", "metaparticle_runtime"], env=env)
print(child.pid, flush=True)
time.sleep(60)
"""


def test_a_replica_dies_with_its_supervisor():
    middle = subprocess.Popen(
        [sys.executable, "-c", _child_runtime_script('MP_PARENT_PID=str(os.getpid())')],
        stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)),
    )
    child = int(middle.stdout.readline())
    time.sleep(1.0)  # the runtime has armed its death signal by now
    assert rs.alive(child)
    middle.kill()
    middle.wait()
    deadline = time.monotonic() + 5
    while rs.alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    alive = rs.alive(child)
    if alive:
        os.kill(child, signal.SIGKILL)
    assert not alive, "the replica outlived its supervisor"


def test_a_replica_whose_supervisor_is_already_gone_exits():
    env = dict(os.environ, MP_ROLE="function", MP_FUNCTION="json:dumps", MP_PARENT_PID="1",
               MP_GRPC_PORT=str(rs.free_port()), MP_BIND_HOST=rs.HOST, PYTHONPATH=os.pathsep.join(sys.path))
    done = subprocess.run([sys.executable, "-m", "metaparticle_runtime"], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and "supervisor 1 is gone" in done.stderr, (done.returncode, done.stderr)
