"""Patterns that call patterns (`uses=`): a function's `ctx.call` / `ctx.acall` reach the used
pattern's entry by name on every target, within the caller's deadline, with the callee's errors as
`mp.CallError`; NetworkPolicies allow exactly the declared edges."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pulumi
import pytest

import metaparticle_pulumi as mp
from metaparticle_pulumi import testing

from conftest import EXAMPLES, METAPARTICLE, free_port, post_json, run_program, write_program
from target_support import env_of

CALLER = """
import time
import pulumi
import metaparticle_pulumi as mp
import fns

users = mp.Shard("users", function=fns.profile, shards=2, key="user")
clock = mp.Service("clock", function=fns.remaining)
front = mp.Spread("front", function=fns.front, replicas=2, timeout=3.0, uses={"users": users, "clock": clock})
"""
FNS = """
import asyncio
import time

import metaparticle_pulumi as mp


def profile(request, ctx):
    return {"user": request["user"], "shard": ctx.index}


def remaining(request, ctx):
    return ctx.time_remaining()


def front(request, ctx):
    started = time.monotonic()
    time.sleep(request.get("wait", 0))
    try:
        if request.get("async"):
            return {"answer": asyncio.run(ctx.acall(request["to"], request["body"]))}
        return {"answer": ctx.call(request["to"], request["body"])}
    except mp.CallError as err:
        return {"error": str(err), "status": err.status, "document": err.document, "seconds": time.monotonic() - started}
"""


@pytest.fixture(scope="module")
def caller(tmp_path_factory):
    program = write_program(tmp_path_factory.mktemp("compose") / "compose", CALLER, fns=FNS)
    with run_program(program, tmp=tmp_path_factory.mktemp("compose-run")) as running:
        yield running


def _front(caller, request):
    reply = post_json(caller.url, request, timeout=15)
    assert reply.status == 200, reply.body
    return reply.body


def test_the_main_entry_is_the_pattern_nothing_uses(caller):
    assert caller.endpoints["patterns"][0]["name"] == "front"


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_function_calls_a_used_pattern_by_name(caller, mode):
    for user in ("alice", "bob", "carol"):
        body = _front(caller, {"to": "users", "body": {"user": user}, "async": mode == "async"})
        assert body["answer"]["user"] == user and body["answer"]["shard"] in (0, 1)


def test_the_callees_error_arrives_as_a_call_error_with_its_status_and_document(caller):
    body = _front(caller, {"to": "users", "body": {"no-user": 1}})
    assert body["status"] == "INVALID_ARGUMENT"
    assert body["document"]["code"] == "INVALID_ARGUMENT" and "user" in body["document"]["error"]


def test_a_name_not_in_uses_is_a_clear_error(caller):
    body = _front(caller, {"to": "orders", "body": {}})
    assert "does not use a pattern called 'orders'" in body["error"] and "clock, users" in body["error"]


def test_the_call_gets_the_callers_remaining_deadline(caller):
    """front has 3 s, spends 1 s, then calls: the callee has what is left, not its own 10 s."""
    left = _front(caller, {"to": "clock", "body": {}, "wait": 1.0})["answer"]
    assert 1.0 < left < 2.0, left


def test_the_composition_example_answers_through_three_patterns(tmp_path):
    done = subprocess.run(
        [METAPARTICLE, "run", str(EXAMPLES / "composition"), "--port", str(free_port()), "--request", '{"user": "alice"}'],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    answer = json.loads(done.stdout[done.stdout.index("{\n"):done.stdout.rindex("}") + 1])
    assert answer == {"user": "Alice", "likes": "pulumi", "documents": ["pulumi deploys infrastructure from real code"]}


# --- declaration ---------------------------------------------------------------------------------


def handler(request):
    return request


def test_uses_takes_patterns_of_the_same_target_only():
    with pytest.raises(mp.PatternError, match=r"uses\['db'\] must be a pattern declared before this one"):
        with testing.mocked("local"):
            mp.Service("api", function=handler, uses={"db": "postgres://db"})
    with pytest.raises(mp.PatternError, match=r"uses\['users'\] is Service 'users' on the local target"):
        with testing.mocked("kubernetes"):
            users = mp.Service("users", function=handler, target="local")
            mp.Service("api", function=handler, uses={"users": users})
    with pytest.raises(mp.PatternError, match="uses name 'a b'"):
        with testing.mocked("local"):
            users = mp.Service("users", function=handler)
            mp.Service("api", function=handler, uses={"a b": users})


def test_on_kubernetes_functions_get_the_used_entrys_service_address_and_routers_do_not():
    with testing.mocked("kubernetes") as stack:
        users = mp.Shard("users", function=handler, key="user", namespace="data")
        mp.Spread("api", function=handler, uses={"users": users})
    deployments = {d["metadata"]["name"]: d for d in stack.objects(kind="Deployment")}
    replica = env_of(deployments["api-replica"]["spec"]["template"]["spec"]["containers"][0])
    assert json.loads(replica["MP_USES"]) == {"users": "dns:///users-router.data.svc.cluster.local:50051"}
    router = env_of(deployments["api-router"]["spec"]["template"]["spec"]["containers"][0])
    assert "MP_USES" not in router


def test_restricted_egress_lets_a_caller_reach_exactly_the_used_entry():
    with testing.mocked("kubernetes") as stack:
        users = mp.Shard("users", function=handler, key="user", shards=2, namespace="data")
        mp.Spread("api", function=handler, uses={"users": users}, egress="restricted", namespace="web")
    pods = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"] for d in stack.objects(kind="Deployment")}
    policies = {p["metadata"]["name"]: p["spec"] for p in stack.objects(kind="NetworkPolicy")}
    rules = policies["api-replica"]["egress"]
    (to_pods,) = [r for r in rules if "to" in r]
    reached = sorted(
        name for peer in to_pods["to"] for name, labels in pods.items()
        if peer["podSelector"]["matchLabels"].items() <= labels.items()
    )
    assert reached == ["users-router"], "only the used pattern's entry, not its shards"
    (peer,) = to_pods["to"]
    assert peer["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "data"}}
    router_rules = policies["api-router"]["egress"]
    assert not any("users-router" in json.dumps(r) for r in router_rules), "the router calls only its replicas"


def test_on_docker_callers_join_the_used_patterns_network_and_call_its_entry_alias():
    with testing.mocked("docker") as stack:
        users = mp.Service("users", function=handler)
        mp.Spread("api", function=handler, replicas=1, uses={"users": users})
    containers = {r.name: r.inputs for r in stack.resources(type="docker:index/container:Container")}
    networks = {r.name: r.inputs["name"] for r in stack.resources(type="docker:index/network:Network")}
    replica = containers["api-replica-0"]
    assert [n["name"] for n in replica["networksAdvanced"]] == [networks["api-net"], networks["users-net"]]
    env = dict(e.split("=", 1) for e in replica["envs"])
    assert json.loads(env["MP_USES"]) == {"users": "dns:///users:50051"}
    # The routers (in their holder's network namespace) stay on the api's network alone.
    assert containers["api-router-0"]["networkMode"] == f"container:{containers['api-router-net']['name']}"
    assert [n["name"] for n in containers["api-router-net"]["networksAdvanced"]] == [networks["api-net"]]
