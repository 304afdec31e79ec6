"""`routers=`: a pattern's router runs as several processes; locally they share the entry port
(SO_REUSEPORT), so a router that dies costs no request made on a new connection."""

from __future__ import annotations

import http.client
import os
import signal
import time

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


def test_two_local_routers_share_the_entry_and_a_killed_one_costs_no_new_connection(tmp_path):
    program = write_program(tmp_path / "routers", PROGRAM, fns=FNS)
    with Topology(program) as topology:
        topology.wait_healthy()
        routers = [p for p in topology.processes().values() if p.role == "api-router"]
        assert len(routers) == 2
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
