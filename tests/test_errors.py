"""Every error status end to end, over HTTP and gRPC, on real processes (tests/programs/faults).

The program runs four patterns: `echo` (a Service with max_request_bytes=2048 and max_in_flight=1),
`users` (a Shard over 2 shards keyed by "user.id"), `search` (a ScatterGather over 3 leaves with a
0.5 s deadline) and `api` (a Spread over 3 replicas). Its functions misbehave on request.
"""

from __future__ import annotations

import http.client as http_client
import json
import os
import signal
import subprocess
import threading
import time
from urllib.parse import urlparse

import grpc
import pytest

from metaparticle_runtime.hashing import shard_for
from conftest import (
    METAPARTICLE,
    PROGRAMS,
    Reply,
    grpc_call,
    http,
    is_alive,
    post_json,
    process_identity,
    run_program,
    wait_until,
)


@pytest.fixture(scope="module")
def faults(tmp_path_factory):
    with run_program(PROGRAMS / "faults", tmp=tmp_path_factory.mktemp("faults")) as running:
        yield running


def url(faults, pattern: str) -> str:
    return faults.pattern(pattern)["url"]


def grpc_url(faults, pattern: str) -> str:
    return faults.pattern(pattern)["grpc_url"]


def assert_http_error(reply: Reply, status: int, code: str) -> dict:
    """An HTTP error answer: the status, a JSON body {"error": message, "code": code, ...}."""
    assert reply.status == status, reply.body
    assert reply.content_type.startswith("application/json"), reply.content_type
    assert isinstance(reply.body, dict), reply.body
    assert isinstance(reply.body.get("error"), str) and reply.body["error"]
    assert reply.body["code"] == code, reply.body
    return reply.body


def assert_grpc_error(reply: Reply, code: str) -> dict:
    """A gRPC error answer: the status code, and the JSON error document in trailing metadata."""
    assert reply.status == code, reply.body
    assert isinstance(reply.body, dict) and reply.body["code"] == code, reply.body
    assert isinstance(reply.body.get("error"), str) and reply.body["error"]
    return reply.body


def kill_replica(faults, role: str, index: int = 0) -> tuple[int, str]:
    """SIGKILLs the process serving replica `index` of `role`; returns its identity once it is dead."""
    port = faults.role_ports(role)[index]
    pid = faults.pid_of(port)
    assert pid is not None, f"nothing of the topology listens on {role}'s port {port}"
    identity = process_identity(pid)
    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: not is_alive(identity), 5.0)
    return identity


def wait_restarted(faults, role: str, dead: tuple[int, str], index: int = 0, timeout: float = 8.0) -> int:
    """The pid of the new process the supervisor started for `role` (it must listen on the same port)."""
    port = faults.role_ports(role)[index]
    found: list[int] = []

    def restarted() -> bool:
        pid = faults.pid_of(port)
        if pid is not None and pid != dead[0]:
            found.append(pid)
            return True
        return False

    assert wait_until(restarted, timeout, 0.1), f"{role} was not restarted within {timeout}s"
    return found[-1]


# -- 400 ------------------------------------------------------------------------------------------

PATTERNS = ["echo", "users", "search", "api"]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_malformed_json_is_400_over_http_and_invalid_argument_over_grpc(faults, pattern):
    doc = assert_http_error(http(url(faults, pattern), b'{"user": '), 400, "INVALID_ARGUMENT")
    assert "not valid JSON" in doc["error"]
    doc = assert_grpc_error(grpc_call(grpc_url(faults, pattern), b'{"user": '), "INVALID_ARGUMENT")
    assert "not valid JSON" in doc["error"]


@pytest.mark.parametrize("body, words", [(b"", "empty"), (b"   ", "empty"), (b"\xff\xfe", "UTF-8"), (b"[NaN]", "NaN")])
def test_empty_non_utf8_and_non_standard_bodies_are_400(faults, body, words):
    assert words in assert_http_error(http(url(faults, "echo"), body), 400, "INVALID_ARGUMENT")["error"]
    assert words in assert_grpc_error(grpc_call(grpc_url(faults, "echo"), body), "INVALID_ARGUMENT")["error"]


def test_too_deeply_nested_json_is_400(faults):
    body = b"[" * 65 + b"]" * 65
    assert assert_http_error(http(url(faults, "users"), body), 400, "INVALID_ARGUMENT")["limit"] == 64


def test_a_request_without_the_shard_key_is_400_naming_the_field(faults):
    for request, missing in (({"user": "bob"}, "user.id"), ({"name": "bob"}, "user"), ([1, 2], "user")):
        doc = assert_http_error(post_json(url(faults, "users"), request), 400, "INVALID_ARGUMENT")
        assert doc["field"] == "user.id"
        assert f"'{missing}'" in doc["error"]
        doc = assert_grpc_error(grpc_call(grpc_url(faults, "users"), json.dumps(request).encode()), "INVALID_ARGUMENT")
        assert doc["field"] == "user.id"


def test_bad_request_raised_by_the_function_is_400_with_its_message(faults):
    doc = assert_http_error(post_json(url(faults, "echo"), {"bad": "the answer must be 42"}), 400, "INVALID_ARGUMENT")
    assert doc["error"] == "the answer must be 42"
    doc = assert_grpc_error(grpc_call(grpc_url(faults, "echo"), b'{"bad": "no"}'), "INVALID_ARGUMENT")
    assert doc["error"] == "no"


# -- 413 ------------------------------------------------------------------------------------------


def body_of(size: int) -> bytes:
    body = json.dumps({"pad": "x" * size}).encode()
    return body[: len(body) - 2 - (len(body) - size)] + b'"}'


def test_a_body_of_exactly_max_request_bytes_is_accepted(faults):
    body = body_of(2048)
    assert len(body) == 2048
    reply = http(url(faults, "echo"), body)
    assert reply.status == 200 and len(reply.body["echo"]["pad"]) == len(json.loads(body)["pad"])


@pytest.mark.parametrize("size", [2049, 20_000])
def test_a_body_over_max_request_bytes_is_413_with_the_limit(faults, size):
    doc = assert_http_error(http(url(faults, "echo"), body_of(size)), 413, "RESOURCE_EXHAUSTED")
    assert doc["limit"] == 2048
    assert "2048" in doc["error"]


def test_a_message_over_max_request_bytes_is_resource_exhausted_over_grpc(faults):
    doc = assert_grpc_error(grpc_call(grpc_url(faults, "echo"), body_of(2049)), "RESOURCE_EXHAUSTED")
    assert doc["limit"] == 2048 and doc["too_large"] is True
    # Far over the limit, gRPC itself refuses the message before the runtime sees it.
    assert_grpc_error(grpc_call(grpc_url(faults, "echo"), body_of(20_000)), "RESOURCE_EXHAUSTED")
    assert post_json(url(faults, "echo"), {"after": "refusals"}).status == 200


# -- 500 ------------------------------------------------------------------------------------------


def test_a_raising_function_is_500_with_its_exception_type_and_message(faults):
    doc = assert_http_error(post_json(url(faults, "echo"), {"raise": "disk on fire"}), 500, "UNKNOWN")
    assert doc["type"] == "ValueError"
    assert "ValueError: disk on fire" in doc["error"]
    doc = assert_grpc_error(grpc_call(grpc_url(faults, "echo"), b'{"raise": "disk on fire"}'), "UNKNOWN")
    assert doc["type"] == "ValueError" and "disk on fire" in doc["error"]


def test_a_raising_shard_is_500_naming_the_shard(faults):
    request = {"user": {"id": "bob"}, "raise": "shard trouble"}
    shard = shard_for("bob", 2)
    doc = assert_http_error(post_json(url(faults, "users"), request), 500, "UNKNOWN")
    assert doc["shard"] == shard and doc["type"] == "RuntimeError"
    assert f"shard {shard}" in doc["error"] and "shard trouble" in doc["error"]


def test_a_raising_spread_replica_is_500_through_the_router(faults):
    doc = assert_http_error(post_json(url(faults, "api"), {"raise": "replica trouble"}), 500, "UNKNOWN")
    assert doc["type"] == "RuntimeError" and "replica trouble" in doc["error"]
    assert doc["replica"].startswith("api-replica-")


def test_a_raising_leaf_is_500_naming_the_leaf(faults):
    doc = assert_http_error(post_json(url(faults, "search"), {"fail_leaf": 2}), 500, "UNKNOWN")
    assert doc["leaf"] == 2 and doc["type"] == "KeyError"
    assert "leaf 2 has no such document" in doc["error"]
    doc = assert_grpc_error(grpc_call(grpc_url(faults, "search"), b'{"fail_leaf": 0}'), "UNKNOWN")
    assert doc["leaf"] == 0


def test_a_raising_gather_function_is_500(faults):
    doc = assert_http_error(post_json(url(faults, "search"), {"fail_gather": True}), 500, "UNKNOWN")
    assert doc["type"] == "ZeroDivisionError" and "gather divided by zero" in doc["error"]


def test_metaparticle_call_prints_an_error_answer_verbatim_and_fails(faults):
    message = "[bold]not markup[/] [/]"
    done = subprocess.run(
        [METAPARTICLE, "call", url(faults, "echo"), json.dumps({"raise": message})], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert f"HTTP 500: function echo raised ValueError: {message}" in done.stderr
    assert json.loads(done.stdout)["type"] == "ValueError"


# -- 503 ------------------------------------------------------------------------------------------


def test_a_dead_shard_is_503_for_its_keys_while_the_other_shard_serves(faults):
    users = {shard_for(f"u{i}", 2): f"u{i}" for i in range(20)}
    dead_user, live_user = users[0], users[1]
    dead = kill_replica(faults, "users-shard-0")
    doc = assert_http_error(post_json(url(faults, "users"), {"user": {"id": dead_user}}), 503, "UNAVAILABLE")
    assert doc["shard"] == 0 and "shard 0" in doc["error"]
    live = post_json(url(faults, "users"), {"user": {"id": live_user}})
    assert live.status == 200 and live.body["index"] == 1
    doc = assert_grpc_error(grpc_call(grpc_url(faults, "users"), json.dumps({"user": {"id": dead_user}}).encode()), "UNAVAILABLE")
    assert doc["shard"] == 0
    wait_restarted(faults, "users-shard-0", dead)
    assert wait_until(lambda: post_json(url(faults, "users"), {"user": {"id": dead_user}}).status == 200, 8.0, 0.1)


def test_a_dead_leaf_is_503_over_http_and_grpc_until_it_is_restarted(faults):
    dead = kill_replica(faults, "search-leaf-2")
    doc = assert_http_error(post_json(url(faults, "search"), {"q": 1}), 503, "UNAVAILABLE")
    assert doc["leaf"] == 2 and "leaf 2" in doc["error"]
    assert assert_grpc_error(grpc_call(grpc_url(faults, "search"), b'{"q": 1}'), "UNAVAILABLE")["leaf"] == 2
    wait_restarted(faults, "search-leaf-2", dead)
    assert wait_until(lambda: post_json(url(faults, "search"), {"q": 1}).status == 200, 8.0, 0.1)
    assert post_json(url(faults, "search"), {"q": 1}).body == {"leaves": [0, 1, 2], "answered": [0, 1, 2]}


def test_healthz_is_503_while_a_leaf_is_down_and_200_after_the_supervisor_restarts_it(faults):
    healthz = lambda: http(url(faults, "search"), None, method="GET", path="/healthz")  # noqa: E731
    before = healthz()
    assert before.status == 200 and before.body == {"status": "SERVING", "role": "search-root"}
    dead = kill_replica(faults, "search-leaf-0")
    killed_at = time.monotonic()
    down = healthz()
    assert down.status == 503
    assert down.body["status"] == "NOT_SERVING" and down.body["down"] == ["search-leaf-0"]
    new_pid = wait_restarted(faults, "search-leaf-0", dead)
    assert new_pid != dead[0]
    assert wait_until(lambda: healthz().status == 200, 8.0, 0.1)
    assert time.monotonic() - killed_at < 8.0
    assert "search-leaf-0" in faults.log() and "restarting" in faults.log()


def test_a_dead_spread_replica_costs_no_request_because_the_router_retries_another(faults):
    dead = kill_replica(faults, "api-replica", 0)
    replies = [post_json(url(faults, "api"), {"i": i}) for i in range(30)]
    assert [r.status for r in replies] == [200] * 30
    assert {r.body["replica"] for r in replies} <= {"api-replica-1", "api-replica-2"}
    wait_restarted(faults, "api-replica", dead, 0)


def test_a_spread_with_every_replica_down_is_503(faults):
    dead = [kill_replica(faults, "api-replica", i) for i in range(3)]
    reply = post_json(url(faults, "api"), {"i": 1})
    doc = assert_http_error(reply, 503, "UNAVAILABLE")
    assert "api-replica" in doc["error"]
    assert reply.seconds < 3.0
    for i, identity in enumerate(dead):
        wait_restarted(faults, "api-replica", identity, i)
    assert wait_until(lambda: post_json(url(faults, "api"), {"i": 2}).status == 200, 8.0, 0.1)


# -- 504 ------------------------------------------------------------------------------------------


def test_a_slow_leaf_is_504_within_the_deadline_over_http(faults):
    reply = post_json(url(faults, "search"), {"slow_leaf": 1})
    doc = assert_http_error(reply, 504, "DEADLINE_EXCEEDED")
    assert doc["leaf"] == 1
    assert 0.45 <= reply.seconds < 0.5 + 2.0, reply.seconds


def test_a_slow_leaf_is_deadline_exceeded_within_the_deadline_over_grpc(faults):
    reply = grpc_call(grpc_url(faults, "search"), b'{"slow_leaf": 0}', timeout=10)
    assert assert_grpc_error(reply, "DEADLINE_EXCEEDED")["leaf"] == 0
    assert 0.45 <= reply.seconds < 0.5 + 2.0, reply.seconds


def test_a_slow_leaf_does_not_hold_up_the_requests_behind_it(faults):
    slow = threading.Thread(target=post_json, args=(url(faults, "search"), {"slow_leaf": 2}))
    slow.start()
    try:
        time.sleep(0.1)
        fast = post_json(url(faults, "search"), {"q": "fast"})
        assert fast.status == 200 and fast.seconds < 0.4
    finally:
        slow.join(5)


# -- 429 ------------------------------------------------------------------------------------------


def test_requests_over_max_in_flight_are_429_and_served_again_once_capacity_frees(faults):
    slow: dict = {}
    sent = threading.Event()

    def slow_request() -> None:
        conn = http_client.HTTPConnection("127.0.0.1", urlparse(url(faults, "echo")).port, timeout=10)
        try:
            conn.request("POST", "/", body=b'{"sleep": 1.5}', headers={"Content-Type": "application/json"})
            sent.set()
            response = conn.getresponse()
            slow.update(status=response.status, body=json.loads(response.read()))
        finally:
            sent.set()
            conn.close()

    thread = threading.Thread(target=slow_request)
    thread.start()
    refused_http = refused_grpc = None
    try:
        assert sent.wait(5)
        time.sleep(0.1)  # the sent request reaches the function
        deadline = time.monotonic() + 1.0
        for i in range(60):
            if time.monotonic() > deadline or (refused_http and refused_grpc):
                break
            if refused_http is None:
                reply = post_json(url(faults, "echo"), {"n": i})
                refused_http = reply if reply.status == 429 else None
            if refused_grpc is None:
                reply = grpc_call(grpc_url(faults, "echo"), b'{"n": 1}')
                refused_grpc = reply if reply.status == "RESOURCE_EXHAUSTED" else None
            time.sleep(0.02)
    finally:
        thread.join(5)
    assert refused_http is not None, "no request was refused while one was in flight with max_in_flight=1"
    doc = assert_http_error(refused_http, 429, "RESOURCE_EXHAUSTED")
    assert "limit of 1 requests in flight" in doc["error"] and doc["role"] == "echo"
    assert refused_grpc is not None
    assert "in flight" in assert_grpc_error(refused_grpc, "RESOURCE_EXHAUSTED")["error"]
    assert slow == {"status": 200, "body": {"echo": {"sleep": 1.5}}}
    assert post_json(url(faults, "echo"), {"after": "the slow one"}).status == 200


# -- 404 / 405 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("pattern", ["echo", "search"])
def test_an_unknown_path_is_404_json(faults, pattern):
    assert_http_error(http(url(faults, pattern), None, method="GET", path="/nope"), 404, "NOT_FOUND")
    assert_http_error(http(url(faults, pattern), b"{}", path="/v1/call"), 404, "NOT_FOUND")


@pytest.mark.parametrize("method, path", [("GET", "/"), ("PUT", "/"), ("DELETE", "/"), ("POST", "/healthz")])
def test_a_wrong_method_is_405_json(faults, method, path):
    assert_http_error(http(url(faults, "echo"), b"{}" if method != "GET" else None, method=method, path=path), 405, "METHOD_NOT_ALLOWED")


def test_an_unknown_grpc_method_is_unimplemented(faults):
    with grpc.insecure_channel(urlparse(grpc_url(faults, "echo")).netloc) as channel:
        with pytest.raises(grpc.RpcError) as info:
            channel.unary_unary("/metaparticle.v1.Function/Nope")(b"", timeout=5)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


@pytest.mark.parametrize("pattern, role", [("echo", "echo"), ("users", "users-router"), ("search", "search-root"), ("api", "api-router")])
def test_healthz_of_a_serving_pattern_is_200_naming_its_entry(faults, pattern, role):
    reply = http(url(faults, pattern), None, method="GET", path="/healthz")
    assert reply.status == 200 and reply.body == {"status": "SERVING", "role": role}


def test_a_crashed_entry_is_restarted_and_answers_on_the_same_address_again(faults):
    dead = kill_replica(faults, "api-router")

    def answered() -> bool:
        try:
            return post_json(url(faults, "api"), {"after": "restart"}).status == 200
        except OSError:  # connection refused while the entry is down
            return False

    assert wait_until(answered, 8.0, 0.1)
    assert wait_restarted(faults, "api-router", dead) != dead[0]
