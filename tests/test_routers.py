"""`routers=`: a pattern's router runs as several processes; locally they share the entry port
(SO_REUSEPORT), so a router that dies costs no request made on a new connection."""

from __future__ import annotations

import http.client
import os
import signal
import sys
import time

import pytest

from metaparticle_pulumi._targets.local import router_binary

from rel_support import HOST, Topology

from conftest import write_program

PROGRAM = """
import metaparticle_pulumi as mp
import fns

api = mp.Spread("api", function=fns.echo, replicas=2, routers=2)
"""
FNS = """
def echo(request):
    return request
"""


def _post_new_connection(port: int, i: int) -> int:
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        conn.request("POST", "/", body=f'{{"i": {i}}}', headers={"Content-Type": "application/json"})
        return conn.getresponse().status
    except OSError:
        return 0
    finally:
        conn.close()


@pytest.fixture(params=["python", "go"])
def router(request) -> str:
    """Which router runs: the Python runtime, or the compiled Go router (built by scripts/build-router)."""
    if request.param == "go" and router_binary() is None:
        if os.environ.get("MP_REQUIRE_ROUTER") == "1":
            pytest.fail("MP_REQUIRE_ROUTER=1, but no Go router is built (scripts/build-router)")
        pytest.skip("no Go router built (scripts/build-router needs Go)")
    return request.param


def test_two_local_routers_share_the_entry_and_a_killed_one_costs_no_new_connection(tmp_path, router):
    program = write_program(tmp_path / "routers", PROGRAM, fns=FNS)
    with Topology(program, env={"METAPARTICLE_ROUTER": router}) as topology:
        topology.wait_healthy()
        routers = [p for p in topology.processes().values() if p.role == "api-router"]
        assert len(routers) == 2
        exe = {os.path.realpath(f"/proc/{p.pid}/exe") for p in routers}
        assert exe == ({os.path.realpath(router_binary())} if router == "go" else {os.path.realpath(sys.executable)})
        assert {p.http_port for p in routers} == {topology.port}, "both serve the one entry port"
        assert len({p.grpc_port for p in routers}) == 2
        assert [_post_new_connection(topology.port, i) for i in range(50)] == [200] * 50

        victim = routers[0]
        os.kill(victim.pid, signal.SIGKILL)
        deadline = time.monotonic() + 4.0
        statuses = []
        while time.monotonic() < deadline and len(statuses) < 400:
            statuses.append(_post_new_connection(topology.port, len(statuses)))
        assert statuses and all(s == 200 for s in statuses), f"{statuses.count(200)} of {len(statuses)} answered 200"
        topology.wait_replaced(victim.name, victim.pid)
