"""examples/polyglot end to end on the local target: a Node.js server (node's own `http`) as the
function of a Spread and a Shard, called through their routers over HTTP and gRPC; its 4xx, a call
past the deadline, and a server that dies (restarted, while the other replica answers)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from metaparticle_runtime.hashing import shard_for
from conftest import EXAMPLES, grpc_call, post_json, run_program, wait_until, write_program

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(shutil.which("node") is None, reason="needs node (Debian's nodejs) for the example's server"),
]

EXAMPLE = EXAMPLES / "polyglot"


@pytest.fixture(scope="module")
def polyglot(tmp_path_factory):
    with run_program(EXAMPLE, tmp=tmp_path_factory.mktemp("polyglot")) as running:
        yield running


def servers(running) -> dict[str, int]:
    """The node processes of the run, by the replica their MP_CONTEXT names."""
    found = {}
    for pid in running.children():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if not cmdline or os.path.basename(cmdline[0]) not in (b"node", b"nodejs"):
            continue
        for item in environ:
            if item.startswith(b"MP_CONTEXT="):
                found[json.loads(item.split(b"=", 1)[1])["replica"]] = pid
    return found


def test_the_spread_spreads_calls_over_the_node_replicas(polyglot):
    seen = Counter()
    for i in range(8):
        reply = post_json(polyglot.url, {"name": f"n{i}"})
        assert reply.status == 200, reply.body
        assert reply.body["greeting"] == f"Hello, n{i}!" and reply.body["language"] == "javascript"
        assert reply.body["role"] == "replica"
        seen[reply.body["replica"]] += 1
    assert set(seen) == {"greeter-replica-0", "greeter-replica-1"}, seen


def test_the_spread_answers_over_grpc_too(polyglot):
    reply = grpc_call(polyglot.grpc_url, json.dumps({"name": "grpc"}).encode())
    assert reply.status == "OK" and reply.body["greeting"] == "Hello, grpc!"


def test_the_shard_sends_every_user_to_the_node_server_that_owns_it(polyglot):
    url = polyglot.pattern("counters")["url"]
    for user in ("alice", "bob", "carol", "dave"):
        first = post_json(url, {"user": user}).body
        second = post_json(url, {"user": user}).body
        assert first["shard"] == second["shard"] == shard_for(user, 3)
        assert (first["shards"], first["replica"]) == (3, f"counters-shard-{first['shard']}")
        assert second["count"] == first["count"] + 1  # the same process kept the user's count


def test_a_4xx_of_the_server_is_a_400_with_its_error_document(polyglot):
    reply = post_json(polyglot.url, {"name": 5})
    assert reply.status == 400
    assert reply.body["code"] == "INVALID_ARGUMENT"
    assert reply.body["body"] == {"error": "name must be a non-empty string"}
    assert reply.body["server_status"] == 400
    shard = post_json(polyglot.pattern("counters")["url"], {"user": "x", "work_ms": "no"})
    assert shard.status == 200  # work_ms that is not a number is no work: the example's own rule
    missing = grpc_call(polyglot.pattern("counters")["grpc_url"], json.dumps({"nouser": 1}).encode())
    assert missing.status == "INVALID_ARGUMENT"  # no key: refused by the router before any server


def test_the_servers_get_the_programs_context_and_stop_with_the_run(tmp_path):
    with run_program(EXAMPLE, tmp=tmp_path) as running:
        found = servers(running)
        assert set(found) == {"greeter-replica-0", "greeter-replica-1"} | {f"counters-shard-{i}" for i in range(3)}
        running.stop(signal.SIGINT)
        running.assert_stopped_cleanly()  # the node processes are among the children checked
    assert all(not Path(f"/proc/{pid}").exists() or b"node" not in Path(f"/proc/{pid}/cmdline").read_bytes() for pid in found.values())


SLOW = """
import os
import metaparticle_pulumi as mp

server = mp.Container(build=os.environ["POLYGLOT_DIR"], command=["node", "server.js"])
mp.Spread("slow", function=server, replicas=2, timeout=1.0)
"""


@pytest.fixture(scope="module")
def slow(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("slow")
    program = write_program(tmp / "slow", SLOW)
    os.environ["POLYGLOT_DIR"] = str(EXAMPLE)
    try:
        with run_program(program, tmp=tmp) as running:
            yield running
    finally:
        os.environ.pop("POLYGLOT_DIR", None)


def test_a_call_past_the_deadline_is_504_at_the_deadline(slow):
    started = time.monotonic()
    reply = post_json(slow.url, {"name": "late", "work_ms": 3000})
    took = time.monotonic() - started
    assert reply.status == 504 and reply.body["code"] == "DEADLINE_EXCEEDED", reply.body
    assert took < 2.0
    assert post_json(slow.url, {"name": "quick", "work_ms": 100}).status == 200


def test_a_server_that_dies_is_restarted_and_the_other_replica_answers_meanwhile(slow):
    before = servers(slow)
    os.kill(before["slow-replica-0"], signal.SIGKILL)
    answered = Counter()
    for _ in range(10):  # the replica turns NOT_SERVING; its sibling takes every call
        reply = post_json(slow.url, {"name": "meanwhile"})
        assert reply.status == 200, reply.body
        answered[reply.body["replica"]] += 1
    assert answered["slow-replica-1"] >= 8, answered
    assert wait_until(lambda: servers(slow).get("slow-replica-0") not in (None, before["slow-replica-0"]), 15)
    assert wait_until(lambda: any(post_json(slow.url, {"name": "back"}).body["replica"] == "slow-replica-0" for _ in range(4)), 15)
    log = slow.log()
    assert "[server] exited with code" in log and "restarting" in log
