"""The four examples end to end: `metaparticle run` on the local target, called over HTTP and gRPC."""

from __future__ import annotations

import http.client
import json
import re
import shutil
import subprocess
from collections import Counter
from urllib.parse import urlparse

import pytest

from metaparticle_runtime.hashing import shard_for
from conftest import EXAMPLES, METAPARTICLE, grpc_call, post_json, run_program


@pytest.fixture(scope="module")
def spread(tmp_path_factory):
    with run_program(EXAMPLES / "spread", tmp=tmp_path_factory.mktemp("spread")) as running:
        yield running


@pytest.fixture(scope="module")
def shard(tmp_path_factory):
    with run_program(EXAMPLES / "shard", tmp=tmp_path_factory.mktemp("shard")) as running:
        yield running


@pytest.fixture(scope="module")
def scatter_gather(tmp_path_factory):
    with run_program(EXAMPLES / "scatter_gather", tmp=tmp_path_factory.mktemp("scatter_gather")) as running:
        yield running


def cli_call(url: str, request: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([METAPARTICLE, "call", url, request], capture_output=True, text=True, timeout=30)


REQUESTS = [{"hello": "world"}, [1, 2, {"x": None}], "text", 42, {"ünï": "cödé ✓", "n": 1.5}]


# -- hello_world ----------------------------------------------------------------------------------


@pytest.mark.parametrize("request_", REQUESTS, ids=["object", "list", "string", "number", "unicode"])
def test_hello_world_answers_A_with_the_request_over_http(hello_world, request_):
    reply = post_json(hello_world.url, request_)
    assert reply.status == 200
    assert reply.content_type.startswith("application/json")
    assert reply.body == {"A": request_}


@pytest.mark.parametrize("request_", REQUESTS, ids=["object", "list", "string", "number", "unicode"])
def test_hello_world_answers_A_with_the_request_over_grpc(hello_world, request_):
    reply = grpc_call(hello_world.grpc_url, json.dumps(request_).encode())
    assert reply.status == "OK"
    assert reply.body == {"A": request_}


def test_metaparticle_call_prints_the_answer_of_hello_world_over_http_and_grpc(hello_world):
    for url in (hello_world.url, hello_world.grpc_url):
        done = cli_call(url, '{"who": "cli"}')
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {"A": {"who": "cli"}}


# -- spread ---------------------------------------------------------------------------------------

SPREAD_REPLICAS = {f"api-replica-{i}" for i in range(3)}


def test_spread_answers_the_replica_and_the_echo_of_the_request(spread):
    reply = post_json(spread.url, {"n": 7})
    assert reply.status == 200
    assert set(reply.body) == {"replica", "echo"}
    assert reply.body["echo"] == {"n": 7}
    assert reply.body["replica"] in SPREAD_REPLICAS


def test_spread_balances_every_request_not_every_connection(spread):
    """30 requests over ONE keep-alive HTTP connection still reach all 3 replicas."""
    conn = http.client.HTTPConnection("127.0.0.1", urlparse(spread.url).port, timeout=10)
    seen: Counter[str] = Counter()
    try:
        for i in range(30):
            conn.request("POST", "/", body=json.dumps({"i": i}), headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            body = json.loads(response.read())
            assert response.status == 200 and body["echo"] == {"i": i}
            seen[body["replica"]] += 1
    finally:
        conn.close()
    assert set(seen) == SPREAD_REPLICAS, seen
    assert max(seen.values()) <= 20, seen


def test_spread_balances_calls_of_one_grpc_channel_too(spread):
    import grpc

    from metaparticle_runtime import CALL_METHOD
    from metaparticle_runtime.payload import unwrap, wrap

    target = urlparse(spread.grpc_url).netloc
    seen: Counter[str] = Counter()
    with grpc.insecure_channel(target) as channel:
        stub = channel.unary_unary(CALL_METHOD)
        for i in range(30):
            seen[json.loads(unwrap(stub(wrap(json.dumps({"i": i}).encode()), timeout=10)))["replica"]] += 1
    assert set(seen) == SPREAD_REPLICAS, seen


# -- shard ----------------------------------------------------------------------------------------


def test_shard_sends_the_same_user_to_the_same_shard(shard):
    for user in ("bob", "alice", "carol"):
        answers = [post_json(shard.url, {"user": user}).body for _ in range(8)]
        assert all(a == answers[0] for a in answers), answers
        assert answers[0]["user"] == user
        assert answers[0]["shard"] in (0, 1, 2) and answers[0]["shards"] == 3
        assert answers[0]["replica"] == f"users-shard-{answers[0]['shard']}"


def test_shard_owner_is_the_consistent_hash_of_the_key(shard):
    for user in [f"user-{i}" for i in range(20)]:
        assert post_json(shard.url, {"user": user}).body["shard"] == shard_for(user, 3)


def test_shard_spreads_many_users_over_all_shards(shard):
    shards = Counter(post_json(shard.url, {"user": f"member-{i}"}).body["shard"] for i in range(60))
    assert set(shards) == {0, 1, 2}, shards
    assert min(shards.values()) >= 5, shards


def test_shard_routes_grpc_calls_like_http_calls(shard):
    for user in ("bob", "dave", "eve", "mallory"):
        over_http = post_json(shard.url, {"user": user}).body
        over_grpc = grpc_call(shard.grpc_url, json.dumps({"user": user}).encode())
        assert over_grpc.status == "OK" and over_grpc.body == over_http


def test_metaparticle_call_reaches_a_shard_over_grpc(shard):
    done = cli_call(shard.grpc_url, '{"user": "bob"}')
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["shard"] == shard_for("bob", 3)


# -- scatter_gather -------------------------------------------------------------------------------


def expected_hits(word: str) -> list[dict]:
    text = (EXAMPLES / "scatter_gather" / "search.py").read_text()
    corpus = re.search(r"CORPUS = \[(.*?)\]", text, re.S).group(1)
    documents = re.findall(r'"([^"]*)"', corpus)
    return [{"id": i, "text": doc} for i, doc in enumerate(documents) if word in doc.split()]


def test_scatter_gather_merges_the_hits_of_all_four_leaves(scatter_gather):
    reply = post_json(scatter_gather.url, {"q": "pulumi"})
    assert reply.status == 200
    hits = expected_hits("pulumi")
    assert len(hits) >= 2  # from more than one leaf
    assert reply.body == {"hits": hits, "count": len(hits), "leaves": [0, 1, 2, 3]}


def test_scatter_gather_hits_come_from_the_leaf_that_holds_each_document(scatter_gather):
    for word in ("code", "every", "leaf"):
        body = post_json(scatter_gather.url, {"q": word}).body
        assert body["hits"] == expected_hits(word)
        assert len({hit["id"] % 4 for hit in body["hits"]}) > 1  # several leaves contributed
        assert body["leaves"] == [0, 1, 2, 3]


def test_scatter_gather_answers_no_hits_for_an_unknown_word(scatter_gather):
    assert post_json(scatter_gather.url, {"q": "zzzz"}).body == {"hits": [], "count": 0, "leaves": [0, 1, 2, 3]}


def test_scatter_gather_answers_the_same_over_grpc(scatter_gather):
    reply = grpc_call(scatter_gather.grpc_url, b'{"q": "pulumi"}')
    assert reply.status == "OK"
    assert reply.body == post_json(scatter_gather.url, {"q": "pulumi"}).body


def test_metaparticle_run_with_a_request_prints_the_answer_and_stops_everything(tmp_path):
    from conftest import free_port, port_is_free

    port = free_port()
    endpoints = tmp_path / "endpoints.json"
    done = subprocess.run(
        [METAPARTICLE, "run", str(EXAMPLES / "scatter_gather"), "--port", str(port), "--request", '{"q": "pulumi"}',
         "--endpoints-json", str(endpoints)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout[done.stdout.index("\n{") :])
    assert answer["hits"] == expected_hits("pulumi") and answer["leaves"] == [0, 1, 2, 3]
    assert "stopped 5 processes" in done.stderr
    ports = [port] + [p for role in json.loads(endpoints.read_text())["patterns"][0]["roles"] for p in role["grpc_ports"]]
    assert len(ports) == 6
    assert [p for p in ports if not port_is_free(p)] == []


# -- polyglot (tests/test_polyglot.py runs it through its failure modes) ---------------------------


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node (Debian's nodejs) for the example's server")
def test_polyglot_answers_a_request_from_its_node_server_and_stops_it(tmp_path):
    done = subprocess.run(
        [METAPARTICLE, "run", str(EXAMPLES / "polyglot"), "--request", '{"name": "Ada"}'],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout[done.stdout.index("\n{") :])
    assert answer["greeting"] == "Hello, Ada!" and answer["language"] == "javascript"
    assert answer["replica"] in {"greeter-replica-0", "greeter-replica-1"}
