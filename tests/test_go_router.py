"""The Go router (runtime/router) as a real process in front of Python function servers, side by side
with the Python router on the same replicas: the same answers, the same error documents, retries,
deadlines and the graceful stop; and the rest of the runtime's contract (MP_REUSE_PORT, MP_PARENT_PID, the
metrics, the caller's trace context). Skipped without Go unless MP_REQUIRE_ROUTER=1 (router_support)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent import futures
from dataclasses import replace
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

import rel_support as rs
import router_support as rt
from metaparticle_runtime.config import RuntimeConfig
from metaparticle_runtime.hashing import shard_for
from metaparticle_runtime.payload import unwrap, wrap

LIMIT = 65536  # max_request_bytes of every process here


def norm(doc: Any) -> Any:
    """A document without what differs between two calls of the same request (which replica, how late)."""
    if isinstance(doc, dict):
        return {k: norm(v) for k, v in doc.items() if k not in ("replica", "remaining")}
    return doc


def grpc_calls(target: str, messages: list[bytes], timeout: float = 10.0, concurrency: int = 1) -> list[rs.Outcome]:
    async def run() -> list[rs.Outcome]:
        client = rs.GrpcClient(target)
        sem = asyncio.Semaphore(concurrency)

        async def one(i: int, m: bytes) -> rs.Outcome:
            async with sem:
                return await client.raw(m, i, timeout)

        try:
            return list(await asyncio.gather(*(one(i, m) for i, m in enumerate(messages))))
        finally:
            await client.close()

    return rt.run(run())


def grpc_json(target: str, body: bytes, timeout: float = 10.0) -> rs.Outcome:
    return grpc_calls(target, [wrap(body)], timeout)[0]


@pytest.fixture(scope="module")
def binary() -> str:
    return rt.router_binary()


@pytest.fixture(scope="module")
def stack(binary):
    """A replica group of 2 and 3 shards of 1 (Python function servers), each behind a Python and a
    Go router configured alike."""
    with rt.processes() as procs:
        replicas = procs.functions("api-replica", 2, max_request_bytes=LIMIT)
        shards = [procs.functions(f"db-shard-{i}", 1, index=i, max_request_bytes=LIMIT) for i in range(3)]
        spread = rt.router_config("spread", [replicas], ["api-replica"], "api-router", max_request_bytes=LIMIT)
        shard = rt.router_config("shard", shards, [f"db-shard-{i}" for i in range(3)], "db-router", key_path="user.id",
                                 max_request_bytes=LIMIT)
        routers = {
            ("spread", "python"): procs.start(spread, "python"),
            ("spread", "go"): procs.start(rt.twin(spread, "api-router-go"), "go", binary),
            ("shard", "python"): procs.start(shard, "python"),
            ("shard", "go"): procs.start(rt.twin(shard, "db-router-go"), "go", binary),
        }
        for proc in routers.values():
            rt.wait_status(proc)
        yield {"procs": procs, "routers": routers, "replicas": replicas, "shards": shards, "spread": spread}


REQUESTS = [b'{"a": 1}', b"[1, 2.5, null, true]", b'"text \\u00e9"', b"3.5", '{"nested": {"ü": [null, "日本"]}}'.encode(), b"0"]


@pytest.mark.parametrize("role", ["spread", "shard"])
def test_the_go_router_answers_what_the_python_router_answers(stack, role):
    python, go = stack["routers"][(role, "python")], stack["routers"][(role, "go")]
    bodies = REQUESTS if role == "spread" else [json.dumps({"user": {"id": k}, "x": [1]}).encode() for k in ("alice", 7, 2.5, ["a"], None)]
    for body in bodies:
        want, got = rs_http(python.url, body), rs_http(go.url, body)
        assert (got.status, got.content_type, norm(got.body)) == (want.status, want.content_type, norm(want.body)), body
        assert want.status == 200 and norm(want.body)["echo"] == json.loads(body)
        want, got = grpc_json(python.grpc_target, body), grpc_json(go.grpc_target, body)
        assert (got.status, norm(got.body)) == (want.status, norm(want.body)) and want.status == "OK", body


def rs_http(url: str, body: bytes | None, method: str = "POST", path: str = "/") -> Any:
    from conftest import http

    return http(url, body, method=method, path=path)


def test_the_go_spread_router_balances_every_call_over_the_replicas(stack):
    go = stack["routers"][("spread", "go")]
    answers = grpc_calls(go.grpc_target, [wrap(b"{}")] * 20)
    replicas = [a.body["replica"] for a in answers]
    assert all(a.status == "OK" for a in answers)
    # Round robin per call over one connection, not per connection: the replicas alternate.
    assert sorted(set(replicas)) == ["api-replica-0", "api-replica-1"]
    assert all(replicas[i] != replicas[i + 1] for i in range(len(replicas) - 1)), replicas


KEYS: list[Any] = ["alice", "", "ünïcödé ✓", "😀", "日本語", 0, 1, -7, 42, 10**20, 2.5, -0.0, 1e16, 1e-7, 0.1, True, False, None,
                   [], {}, ["a", 1], {"b": 2, "a": [1, {"z": None}]}, "tab\tquote\"", "a" * 300] + [f"user-{i}" for i in range(40)]


def test_both_shard_routers_send_every_key_to_the_shard_shard_for_names(stack):
    python, go = stack["routers"][("shard", "python")], stack["routers"][("shard", "go")]
    messages = [wrap(json.dumps({"user": {"id": k}}, ensure_ascii=i % 2 == 0).encode()) for i, k in enumerate(KEYS)]
    by_python = [a.body["index"] for a in grpc_calls(python.grpc_target, messages, concurrency=8)]
    by_go = [a.body["index"] for a in grpc_calls(go.grpc_target, messages, concurrency=8)]
    assert by_go == by_python == [shard_for(k, 3) for k in KEYS]
    assert set(by_go) == {0, 1, 2}


BAD = {
    "bad JSON": b'{"user": ',
    "not UTF-8": b'{"user": "\xff"}',
    "NaN": b'{"user": {"id": NaN}}',
    "empty": b"",
    "too deep": b"[" * 65 + b"]" * 65,
    "too large for the function": b'"' + b"x" * LIMIT + b'"',
    "missing key": b'{"user": {"name": "x"}}',
    "key path through a list": b'{"user": [1]}',
}


@pytest.mark.parametrize("role", ["spread", "shard"])
def test_bad_input_gets_the_same_error_documents_from_both_routers(stack, role):
    python, go = stack["routers"][(role, "python")], stack["routers"][(role, "go")]
    seen = set()
    for name, body in BAD.items():
        want, got = rs_http(python.url, body), rs_http(go.url, body)
        assert (got.status, got.content_type, norm(got.body)) == (want.status, want.content_type, norm(want.body)), name
        want_g, got_g = grpc_json(python.grpc_target, body), grpc_json(go.grpc_target, body)
        assert (got_g.status, norm(got_g.body)) == (want_g.status, norm(want_g.body)), name
        assert want.status != 200 or (role == "spread" and name in ("missing key", "key path through a list")), name
        seen.add(want.status)
    assert {400, 413} <= seen
    # Over the HTTP entry's limit, answered by the router itself; and a message that is not a Payload.
    huge = b"[" + b"1," * LIMIT + b"1]"
    want, got = rs_http(python.url, huge), rs_http(go.url, huge)
    assert (got.status, got.content_type, got.body) == (want.status, want.content_type, want.body) == (
        413, "application/json; charset=utf-8",
        {"error": f"request body is larger than the limit of {LIMIT} bytes", "code": "RESOURCE_EXHAUSTED", "too_large": True, "limit": LIMIT})
    [want_g], [got_g] = grpc_calls(python.grpc_target, [b"\xff\xff"]), grpc_calls(go.grpc_target, [b"\xff\xff"])
    assert (got_g.status, norm(got_g.body)) == (want_g.status, norm(want_g.body))
    assert want_g.status == "INVALID_ARGUMENT"


def test_the_http_entry_refuses_other_paths_and_methods_and_reports_health_alike(stack):
    python, go = stack["routers"][("spread", "python")], stack["routers"][("spread", "go")]
    for method, path in (("GET", "/"), ("POST", "/healthz"), ("GET", "/nope"), ("POST", "/nope"), ("GET", "/healthz")):
        want, got = rs_http(python.url, None, method, path), rs_http(go.url, None, method, path)
        assert (got.status, got.content_type, got.body) == (want.status, want.content_type, want.body), (method, path)
    assert rs_http(go.url, None, "GET", "/healthz").body == {"status": "SERVING", "role": "api-router"}


def test_payload_bytes_are_forwarded_exactly_as_they_came(binary):
    """Behind both Go router roles, a backend that echoes the raw message: whatever bytes the caller
    sent (an unknown field, a repeated field) come back unchanged, so nothing was re-encoded."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    echo = grpc.method_handlers_generic_handler("metaparticle.v1.Function", {"Call": grpc.unary_unary_rpc_method_handler(lambda m, ctx: m)})
    server.add_generic_rpc_handlers((echo,))
    servicer = health.HealthServicer()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with rt.processes() as procs:
            backend = f"ipv4:127.0.0.1:{port}"
            spread = replace(rt.router_config("spread", [], ["echo"], "echo-router"), upstreams=(backend,), http_port=None)
            shard = replace(rt.router_config("shard", [], ["e0", "e1"], "echo-shards", key_path="k"), upstreams=(backend, backend), http_port=None)
            routers = [procs.start(spread, "go", binary), procs.start(shard, "go", binary)]
            for proc in routers:
                rt.wait_status(proc)
            message = wrap(b'{"k": "v"}') + b"\x12\x03xyz" + wrap(b'{"k": 1}')
            for proc in routers:
                channel = grpc.insecure_channel(proc.grpc_target)
                try:
                    assert channel.unary_unary("/metaparticle.v1.Function/Call")(message, timeout=5) == message
                finally:
                    channel.close()
    finally:
        server.stop(0)


def test_a_killed_replica_costs_no_request(binary):
    with rt.processes() as procs:
        replicas = procs.functions("kill-replica", 2)
        router = procs.start(rt.router_config("spread", [replicas], ["kill-replica"], "kill-router"), "go", binary)
        rt.wait_status(router)

        async def load() -> list[rs.Outcome]:
            client = rs.GrpcClient(router.grpc_target)
            sem = asyncio.Semaphore(16)
            done = 0

            async def one(i: int) -> rs.Outcome:
                nonlocal done
                async with sem:
                    out = await client.json(b'{"sleep": 0.005}', i, timeout=10)
                done += 1
                if done == 150:
                    replicas[0].popen.kill()
                return out

            try:
                return list(await asyncio.gather(*(one(i) for i in range(500))))
            finally:
                await client.close()

        outcomes = rt.run(load())
        failed = [(o.status, o.body) for o in outcomes if not o.ok]
        assert replicas[0].popen.wait(5) == -signal.SIGKILL
        assert not failed, (len(failed), failed[:3], router.log()[-1500:])
        after = [o.body["replica"] for o in outcomes[-100:]]
        assert set(after) == {"kill-replica-1"}


def test_deadlines_answer_504_and_reach_the_function(stack, binary):
    procs = stack["procs"]
    short = replace(stack["spread"], timeout=1.0)
    go = procs.start(rt.twin(short, "api-router-go-1s"), "go", binary)
    python = procs.start(rt.twin(short, "api-router-py-1s"), "python")
    rt.wait_status(go)
    rt.wait_status(python)
    for proc in (python, go):
        start = time.monotonic()
        reply = rs_http(proc.url, b'{"sleep": 2.5}')
        assert reply.status == 504 and reply.body["code"] == "DEADLINE_EXCEEDED", (proc.kind, reply.body)
        assert reply.body["role"] == "api-replica" and reply.body["error"].startswith("api-replica: ") and "deadline" in reply.body["error"]
        assert time.monotonic() - start < 1.8
    for kind in ("python", "go"):
        router = stack["routers"][("spread", kind)]
        # The caller's deadline, shorter than the router's timeout, is what reaches the function.
        answer = grpc_json(router.grpc_target, b'{"x": 1}', timeout=0.8)
        assert answer.status == "OK" and 0.5 < answer.body["remaining"] <= 0.8, kind
        # Past the caller's deadline: DEADLINE_EXCEEDED (never CANCELLED), answered with its document
        # before the caller's own timer fires.
        for _ in range(5):
            late = grpc_json(router.grpc_target, b'{"sleep": 2}', timeout=0.5)
            assert late.status == "DEADLINE_EXCEEDED" and late.json_error, (kind, late.status, late.body)
            assert late.body["code"] == "DEADLINE_EXCEEDED" and late.body["role"] == "api-replica", (kind, late.body)


def test_sigterm_turns_not_serving_drains_and_exits_cleanly(stack, binary):
    go = stack["procs"].start(rt.twin(replace(stack["spread"], drain_seconds=3.0), "api-router-go-drain"), "go", binary)
    rt.wait_status(go)
    channel = grpc.insecure_channel(go.grpc_target)
    try:
        # A call that runs past the drain: it is finished, not cut, before the process exits.
        long_call = channel.unary_unary("/metaparticle.v1.Function/Call").future(wrap(b'{"sleep": 4.0}'), timeout=10)
        time.sleep(0.3)
        go.popen.send_signal(signal.SIGTERM)
        rt.wait_status(go, "NOT_SERVING", timeout=2.0)
        # While draining, calls already on their way are still answered and /healthz says 503.
        during = grpc_json(go.grpc_target, b'{"during": "drain"}')
        assert during.status == "OK", (during.status, during.body, go.log()[-2000:])
        health_reply = rs_http(go.url, None, "GET", "/healthz")
        assert (health_reply.status, health_reply.body) == (503, {"status": "NOT_SERVING", "role": "api-router"})
        assert json.loads(unwrap(long_call.result()))["echo"] == {"sleep": 4.0}
    finally:
        channel.close()
    assert go.popen.wait(timeout=10) == 0
    assert '"msg": "stopped"' in go.log()


def test_a_saturated_go_router_refuses_at_once_like_the_python_one(stack, binary):
    procs = stack["procs"]
    small = replace(stack["spread"], max_in_flight=2)
    routers = [procs.start(rt.twin(small, f"api-router-{kind}-small"), kind, binary if kind == "go" else None) for kind in ("python", "go")]
    docs = []
    for proc in routers:
        rt.wait_status(proc)
        outcomes = grpc_calls(proc.grpc_target, [wrap(b'{"sleep": 0.6}')] * 6, concurrency=6)
        refused = [o for o in outcomes if o.status == "RESOURCE_EXHAUSTED"]
        assert len(refused) == 4 and sum(o.ok for o in outcomes) == 2, [o.status for o in outcomes]
        docs.append({k: v for k, v in refused[0].body.items() if k != "replica"})
        assert refused[0].body["replica"] == proc.cfg.replica
        samples = scrape(proc.url)
        labels = (("pattern", "Service"), ("role", "api-router"))
        assert samples[("metaparticle_refused_total", labels)] == 4, proc.kind
        assert samples[("metaparticle_requests_total", (("code", "RESOURCE_EXHAUSTED"),) + labels)] == 4, proc.kind
    assert docs[0] == docs[1] == {"error": "api-router is at its limit of 2 requests in flight; retry later",
                                  "code": "RESOURCE_EXHAUSTED", "role": "api-router"}


@pytest.mark.parametrize("env, message", [
    ({"MP_ROLE": "function", "MP_FUNCTION": "x:y"}, "runs on the Python runtime"),
    ({"MP_ROLE": "shard", "MP_UPSTREAMS": '["ipv4:127.0.0.1:1"]', "MP_FUNCTION": "x:y"}, "runs on the Python runtime"),
    ({"MP_ROLE": "spread"}, "the spread role needs MP_UPSTREAMS"),
    ({"MP_ROLE": "spread", "MP_UPSTREAMS": '["a", "b"]'}, "routes to exactly one upstream group"),
    ({"MP_ROLE": "spread", "MP_UPSTREAMS": '["a"]', "MP_TIMEOUT": "soon"}, "MP_TIMEOUT must be a float"),
])
def test_configurations_the_go_router_cannot_run_exit_2_with_a_reason(binary, env, message):
    out = subprocess.run([binary], env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True, timeout=10)
    assert out.returncode == 2 and "configuration error" in out.stderr and message in out.stderr, out.stderr


def test_the_go_router_talks_mutual_tls_and_refuses_peers_without_a_valid_certificate(binary, tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("the openssl CLI is needed to make test certificates")
    certs = rs.make_certs(tmp_path)
    tls = {"tls_cert": certs.cert, "tls_key": certs.key, "tls_ca": certs.ca}
    with rt.processes() as procs:
        replicas = procs.functions("tls-replica", 2, **tls)
        router = procs.start(rt.router_config("spread", [replicas], ["tls-replica"], "tls-router", **tls), "go", binary)
        deadline = time.monotonic() + 20
        while rt_call(router.cfg.grpc_port, valid_credentials(certs)) != "OK" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert router.popen.poll() is None, router.log()[-3000:]
        # Both replicas over mutual TLS (the second may join the rotation a moment after the first).
        seen = set()
        until = time.monotonic() + 5
        while len(seen) < 2 and time.monotonic() < until:
            reply = rs_http(router.url, b'{"x": 1}')  # the HTTP entry stays plain HTTP on 127.0.0.1
            assert reply.status == 200, reply.body
            seen.add(reply.body["replica"])
            time.sleep(0.02)
        assert seen == {"tls-replica-0", "tls-replica-1"}
        refused = {
            "plaintext": None,
            "TLS without a client certificate": grpc.ssl_channel_credentials(root_certificates=read(certs.ca)),
            "client certificate of another CA": grpc.ssl_channel_credentials(
                root_certificates=read(certs.ca), private_key=read(certs.rogue_key), certificate_chain=read(certs.rogue_cert)),
        }
        assert {name: rt_call(router.cfg.grpc_port, creds) for name, creds in refused.items()} == dict.fromkeys(refused, "UNAVAILABLE")
        assert rt_call(router.cfg.grpc_port, valid_credentials(certs)) == "OK"


def read(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def valid_credentials(certs: rs.Certs) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(root_certificates=read(certs.ca), private_key=read(certs.key), certificate_chain=read(certs.cert))


def rt_call(port: int, credentials: grpc.ChannelCredentials | None) -> str:
    target = f"127.0.0.1:{port}"
    channel = grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)
    try:
        channel.unary_unary("/metaparticle.v1.Function/Call")(wrap(b'{"x": 1}'), timeout=3)
        return "OK"
    except grpc.RpcError as err:
        return err.code().name
    finally:
        channel.close()


def test_the_go_router_resolves_dns_targets(binary):
    with rt.processes() as procs:
        [replica] = procs.functions("dns-replica", 1)
        cfg = replace(rt.router_config("spread", [[replica]], ["dns-replica"], "dns-router"), upstreams=(f"dns:///localhost:{replica.cfg.grpc_port}",))
        router = procs.start(cfg, "go", binary)
        rt.wait_status(router)
        answers = grpc_calls(router.grpc_target, [wrap(b'{"via": "dns"}')] * 3)
        assert [(a.status, a.body["replica"]) for a in answers] == [("OK", "dns-replica-0")] * 3


def test_results_up_to_max_response_bytes_pass_and_larger_ones_are_named(stack, binary):
    """Replies are accepted up to MP_MAX_RESPONSE_BYTES (default 16 MiB), not the request limit; a
    larger one answers RESOURCE_EXHAUSTED (HTTP 500) naming the limit and the group."""
    go = stack["routers"][("spread", "go")]
    big = grpc_calls(go.grpc_target, [wrap(json.dumps({"big": 2 * LIMIT}).encode())])[0]
    assert big.status == "OK" and len(big.body["big"]) == 2 * LIMIT  # twice max_request_bytes
    small = stack["procs"].start(rt.twin(stack["spread"], "api-router-go-small-replies"), "go", binary,
                                 env={"MP_MAX_RESPONSE_BYTES": str(LIMIT)})
    rt.wait_status(small)
    reply = rs_http(small.url, json.dumps({"big": 2 * LIMIT}).encode())
    assert (reply.status, reply.body) == (500, {
        "error": f"api-replica: its result is larger than max_response_bytes ({LIMIT})", "code": "RESOURCE_EXHAUSTED",
        "response_too_large": True, "limit": LIMIT, "role": "api-replica"})


def test_a_hedge_of_a_call_already_running_on_the_router_is_refused(stack):
    go = stack["routers"][("spread", "go")]
    channel = grpc.insecure_channel(go.grpc_target)
    call = channel.unary_unary("/metaparticle.v1.Function/Call")
    try:
        first = call.future(wrap(b'{"sleep": 0.6}'), timeout=5, metadata=(("mp-call-id", "c-1"),))
        time.sleep(0.2)
        with pytest.raises(grpc.RpcError) as hedge:
            call(wrap(b'{"sleep": 0.6}'), timeout=5, metadata=(("mp-call-id", "c-1"), ("mp-hedge", "1")))
        assert hedge.value.code() == grpc.StatusCode.ABORTED
        doc = dict(hedge.value.trailing_metadata())["mp-error-bin"]
        assert json.loads(doc) == {"error": "api-router: the hedged call already runs on this replica", "code": "ABORTED",
                                   "hedge": "same-replica", "replica": "api-router-go"}
        assert json.loads(unwrap(first.result()))["echo"] == {"sleep": 0.6}
        # Once the first call is over, the same id runs again.
        assert call(wrap(b"{}"), timeout=5, metadata=(("mp-call-id", "c-1"), ("mp-hedge", "1")))
    finally:
        channel.close()


def test_health_watchers_see_not_serving_and_their_stream_ends_so_the_stop_is_prompt(stack, binary):
    go = stack["procs"].start(rt.twin(replace(stack["spread"], drain_seconds=0.5), "api-router-go-watch"), "go", binary)
    rt.wait_status(go)
    channel = grpc.insecure_channel(go.grpc_target)
    try:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""), timeout=20)
        seen = [next(watch).status]
        start = time.monotonic()
        go.popen.send_signal(signal.SIGTERM)
        seen += [reply.status for reply in watch]  # ends cleanly: no error raised
    finally:
        channel.close()
    assert seen == [health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING]
    assert go.popen.wait(timeout=10) == 0
    # Not held for the 10 s request timeout by the watch: drain (0.5 s) and out.
    assert time.monotonic() - start < 3.0


# --- The rest of the runtime's contract: MP_REUSE_PORT, MP_PARENT_PID, metrics, trace context ---


def test_the_go_router_binds_ports_the_local_target_holds_with_reuse_port(binary):
    """The local target holds each port (bound, not listening, SO_REUSEPORT) until its process binds
    it: with MP_REUSE_PORT the Go router binds next to the hold; without, the port is in use."""
    from metaparticle_pulumi._ports import Ports

    ports = Ports()
    try:
        with rt.processes() as procs:
            [replica] = procs.functions("held-replica", 1)
            base = rt.router_config("spread", [[replica]], ["held-replica"], "held-router")
            refused = procs.start(replace(base, grpc_port=ports.reserve(), http_port=ports.reserve(), replica="held-router-plain"), "go", binary)
            assert refused.popen.wait(timeout=10) == 1
            assert "cannot listen" in refused.log() and "address already in use" in refused.log(), refused.log()[-1500:]
            cfg = replace(base, grpc_port=ports.reserve(), http_port=ports.reserve(), reuse_port=True)
            assert {cfg.grpc_port, cfg.http_port} <= set(ports.held())
            router = procs.start(cfg, "go", binary)
            rt.wait_status(router)
            assert grpc_json(router.grpc_target, b'{"held": 1}').body["echo"] == {"held": 1}  # the hold takes no connections
            assert rs_http(router.url, b'{"held": 2}').body["echo"] == {"held": 2}
    finally:
        ports.close()


PARENT = """
import os, subprocess, sys, time
os.environ["MP_PARENT_PID"] = str(os.getpid())
child = subprocess.Popen([sys.argv[1]], stdin=subprocess.DEVNULL, stdout=open(sys.argv[2], "wb"), stderr=subprocess.STDOUT)
print(child.pid, flush=True)
time.sleep(120)
"""


def _gone(pid: int) -> bool:
    """Whether `pid` has exited (a zombie waiting for init to reap it counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_go_router_dies_with_its_parent_given_mp_parent_pid(binary, tmp_path):
    with rt.processes() as procs:
        [replica] = procs.functions("orphan-replica", 1)
        cfg = rt.router_config("spread", [[replica]], ["orphan-replica"], "orphan-router")
        env = {k: v for k, v in os.environ.items() if not k.startswith("MP_")} | cfg.to_env()
        parent = subprocess.Popen([sys.executable, "-c", PARENT, binary, str(tmp_path / "router.log")], env=env, stdout=subprocess.PIPE)
        router_pid = int(parent.stdout.readline())
        try:
            deadline = time.monotonic() + 20
            while rs.health(rt.HOST, cfg.grpc_port) != "SERVING":
                assert time.monotonic() < deadline and not _gone(router_pid), (tmp_path / "router.log").read_text()
                time.sleep(0.05)
            parent.kill()
            parent.wait()
            deadline = time.monotonic() + 5
            while not _gone(router_pid):
                assert time.monotonic() < deadline, "the router outlived its parent"
                time.sleep(0.02)
        finally:
            if not _gone(router_pid):
                os.kill(router_pid, signal.SIGKILL)
            parent.kill()
            parent.wait()
    # A parent that is gone before the router starts (the router's parent here is this test, not pid 1).
    out = subprocess.run([binary], env={"PATH": "/usr/bin:/bin", **cfg.to_env(), "MP_PARENT_PID": "1"}, capture_output=True, text=True, timeout=10)
    assert out.returncode == 1 and "supervisor 1 is gone" in out.stderr, out.stderr


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every metaparticle_* sample at `url` (GET /metrics), by name and labels (no *_created)."""
    from prometheus_client.parser import text_string_to_metric_families

    reply = rs_http(url, None, "GET", "/metrics")
    assert reply.status == 200 and reply.content_type.startswith("text/plain"), reply
    # A bucket's bound as a number: Go writes le="1" where Python writes le="1.0" (Prometheus 3 reads both as 1.0).
    return {
        (s.name, tuple(sorted((k, repr(float(v)) if k == "le" else v) for k, v in s.labels.items()))): s.value
        for family in text_string_to_metric_families(reply.body)
        for s in family.samples
        if s.name.startswith("metaparticle_") and not s.name.endswith("_created")
    }


def test_go_and_python_routers_count_the_same_requests_in_the_same_series(stack, binary):
    procs = stack["procs"]
    metrics_port = rs.free_port()
    routers = {"python": procs.start(rt.twin(stack["spread"], "api-router-py-metrics"), "python"),
               "go": procs.start(rt.twin(stack["spread"], "api-router-go-metrics"), "go", binary, env={"MP_METRICS_PORT": str(metrics_port)})}
    samples = {}
    for kind, proc in routers.items():
        rt.wait_status(proc)
        for body in (b'{"a": 1}', b"[1]", b'{"a": '):
            rs_http(proc.url, body)
        grpc_calls(proc.grpc_target, [wrap(b"{}")] * 4)
        samples[kind] = scrape(proc.url)
    py, go = samples["python"], samples["go"]
    assert set(go) == set(py), set(go) ^ set(py)
    buckets = {k for k in go if k[0] == "metaparticle_request_duration_seconds_bucket"}
    assert len(buckets) == 17  # the same 16 buckets and +Inf
    assert {k: v for k, v in go.items() if k not in buckets and not k[0].endswith("_sum")} == \
           {k: v for k, v in py.items() if k not in buckets and not k[0].endswith("_sum")}
    labels = (("pattern", "Service"), ("role", "api-router"))
    assert go[("metaparticle_requests_total", (("code", "OK"),) + labels)] == 6
    assert go[("metaparticle_requests_total", (("code", "INVALID_ARGUMENT"),) + labels)] == 1
    assert go[("metaparticle_upstream_calls_total", (("outcome", "OK"),) + labels + (("upstream", "api-replica"),))] == 6
    assert go[("metaparticle_in_flight", labels)] == 0
    # The metrics port serves the same registry.
    assert scrape(f"http://{rt.HOST}:{metrics_port}") == scrape(routers["go"].url)


def test_requests_received_as_a_grpc_retry_are_counted(stack, binary):
    """A caller whose first attempt failed UNAVAILABLE on another server retries on the Go router
    (grpc-previous-rpc-attempts): the router counts exactly those."""
    failed = []  # calls whose first attempt failed here: each reaches the router once as a retry

    def unavailable(message: bytes, context: grpc.ServicerContext) -> bytes:
        if not any(key == "grpc-previous-rpc-attempts" for key, _ in context.invocation_metadata()):
            failed.append(1)
        context.abort(grpc.StatusCode.UNAVAILABLE, "down")

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "metaparticle.v1.Function", {"Call": grpc.unary_unary_rpc_method_handler(unavailable)}),))
    bad = server.add_insecure_port("127.0.0.1:0")
    server.start()
    go = stack["procs"].start(rt.twin(stack["spread"], "api-router-go-retries"), "go", binary)
    rt.wait_status(go)
    config = json.dumps({"loadBalancingConfig": [{"round_robin": {}}], "methodConfig": [{
        "name": [{"service": "metaparticle.v1.Function"}], "retryPolicy": {
            "maxAttempts": 3, "initialBackoff": "0.01s", "maxBackoff": "0.1s", "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"]}}]})
    channel = grpc.insecure_channel(f"ipv4:127.0.0.1:{bad},{go.grpc_target}", options=[("grpc.service_config", config)])
    try:
        call = channel.unary_unary("/metaparticle.v1.Function/Call")
        for i in range(6):
            assert json.loads(unwrap(call(wrap(b'{"retry": %d}' % i), timeout=10)))["echo"] == {"retry": i}
    finally:
        channel.close()
        server.stop(0)
    samples = scrape(go.url)
    labels = (("pattern", "Service"), ("role", "api-router"))
    assert len(failed) >= 1
    assert samples[("metaparticle_retries_total", labels)] == len(failed)
    assert samples[("metaparticle_requests_total", (("code", "OK"),) + labels)] == 6


def test_the_metrics_port_healthz_turns_503_while_the_go_router_drains(stack, binary):
    port = rs.free_port()
    go = stack["procs"].start(rt.twin(replace(stack["spread"], drain_seconds=2.0), "api-router-go-ops"), "go", binary,
                              env={"MP_METRICS_PORT": str(port)})
    ops = f"http://{rt.HOST}:{port}"
    rt.wait_status(go)
    assert (lambda r: (r.status, r.content_type, r.body))(rs_http(ops, None, "GET", "/healthz")) == (
        200, "application/json; charset=utf-8", {"status": "SERVING"})
    assert rs_http(ops, None, "POST", "/healthz").status == 405 and rs_http(ops, None, "GET", "/").status == 404
    go.popen.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 1.5
    while (reply := rs_http(ops, None, "GET", "/healthz")).status != 503:
        assert time.monotonic() < deadline, reply
        time.sleep(0.02)
    assert reply.body == {"status": "NOT_SERVING"}
    assert go.popen.poll() is None  # still draining
    assert ("metaparticle_in_flight", (("pattern", "Service"), ("role", "api-router"))) in scrape(ops)
    assert go.popen.wait(timeout=10) == 0


def test_a_trace_stays_one_trace_across_the_go_router(binary):
    """The Go router makes no span; it passes the caller's traceparent on, so the replica's span
    (the Python runtime exporting to an OTLP/HTTP receiver) is the caller's child, over both entries."""
    from test_tracing import Receiver, _wait_for

    receiver = Receiver()
    try:
        with rt.processes() as procs:
            (procs.tmp / "rtfn.py").write_text(rt.FUNCTIONS)
            cfg = RuntimeConfig(role="function", function="rtfn:echo", source_dir=str(procs.tmp), bind_host=rt.HOST,
                                grpc_port=rs.free_port(), role_name="traced-replica", replica="traced-replica-0")
            replica = procs.start(cfg, "python", env={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "50"})
            rt.wait_status(replica)
            router = procs.start(rt.router_config("spread", [[replica]], ["traced-replica"], "traced-router"), "go", binary)
            rt.wait_status(router)
            trace_id, caller = secrets.token_hex(16), secrets.token_hex(8)
            parent = f"00-{trace_id}-{caller}-01"
            reply = rt_http_with(router.url, b'{"t": 1}', {"traceparent": parent, "tracestate": "vendor=x"})
            assert reply == {"echo": {"t": 1}}, reply
            trace2, caller2 = secrets.token_hex(16), secrets.token_hex(8)
            channel = grpc.insecure_channel(router.grpc_target)
            try:
                channel.unary_unary("/metaparticle.v1.Function/Call")(wrap(b"{}"), timeout=5, metadata=(("traceparent", f"00-{trace2}-{caller2}-01"),))
            finally:
                channel.close()
            [http_span] = _wait_for(receiver, trace_id, 1)
            [grpc_span] = _wait_for(receiver, trace2, 1)
    finally:
        receiver.close()
    assert (http_span["parent"], http_span["name"]) == (caller, "traced-replica")
    assert (grpc_span["parent"], grpc_span["name"]) == (caller2, "traced-replica")


def rt_http_with(url: str, body: bytes, headers: dict[str, str]) -> Any:
    request = urllib.request.Request(url + "/", data=body, method="POST", headers=headers)
    with urllib.request.urlopen(request, timeout=10) as reply:
        doc = json.loads(reply.read())
    return {k: v for k, v in doc.items() if k == "echo"}


@pytest.mark.parametrize("env, message", [
    ({"MP_REUSE_PORT": "maybe"}, "MP_REUSE_PORT must be true or false, got 'maybe'"),
    ({"MP_METRICS_PORT": "x"}, "MP_METRICS_PORT must be a int, got 'x'"),
    ({"MP_EVENT_LOOP": "trio"}, "MP_EVENT_LOOP must be auto, asyncio or uvloop, got 'trio'"),
    ({"MP_ON_MISSING": "skip"}, "MP_ON_MISSING must be fail or partial, got 'skip'"),
])
def test_settings_the_python_runtime_refuses_are_refused_alike(binary, env, message):
    from metaparticle_runtime.config import ConfigError, RuntimeConfig as Cfg

    full = {"MP_ROLE": "spread", "MP_UPSTREAMS": '["ipv4:127.0.0.1:1"]', **env}
    with pytest.raises(ConfigError, match=re.escape(message)):
        Cfg.from_env(full)
    out = subprocess.run([binary], env={"PATH": "/usr/bin:/bin", **full}, capture_output=True, text=True, timeout=10)
    assert out.returncode == 2 and message in out.stderr, out.stderr


def test_a_go_router_runs_go_code_on_one_thread_unless_gomaxprocs_says_otherwise(binary):
    """One thread, like one nginx worker: less CPU per request at every load (bench/README.md);
    routers= scales out, and GOMAXPROCS, when set, wins."""
    with rt.processes() as procs:
        [replica] = procs.functions("procs-replica", 1)
        base = rt.router_config("spread", [[replica]], ["procs-replica"], "procs-router")
        seen = {}
        for setting in (None, "2"):
            cfg = replace(base, grpc_port=rs.free_port(), http_port=rs.free_port(), replica=f"procs-router-{setting}")
            router = procs.start(cfg, "go", binary, env={"GOMAXPROCS": setting} if setting else None)
            rt.wait_status(router)
            assert rs_http(router.url, b'{"n": 1}').body["echo"] == {"n": 1}
            [line] = [json.loads(x) for x in router.log().splitlines() if '"listening"' in x]
            seen[setting] = line["procs"]
        assert seen == {None: 1, "2": 2}


def test_a_go_router_keeps_the_runtime_monitor_out_of_deep_sleep_unless_godebug_sets_schedtrace(binary):
    """Go's sysmon, deeply asleep whenever the router is idle, is woken by the next system call and
    then polls every 20 µs: at moderate load that cost 17-30% of the router's CPU per request
    (README). The router re-executes itself in place (same process, so supervisors keep
    track of it) with schedtrace in GODEBUG, which keeps sysmon out of that sleep; the settings
    GODEBUG had are kept, and a schedtrace it sets already wins."""
    with rt.processes() as procs:
        [replica] = procs.functions("sysmon-replica", 1)
        base = rt.router_config("spread", [[replica]], ["sysmon-replica"], "sysmon-router")
        seen = {}
        for name, godebug in (("unset", None), ("other", "madvdontneed=1"), ("own", "schedtrace=0")):
            cfg = replace(base, grpc_port=rs.free_port(), http_port=rs.free_port(), replica=f"sysmon-router-{name}")
            router = procs.start(cfg, "go", binary, env={"GODEBUG": godebug} if godebug else None)
            rt.wait_status(router)
            assert rs_http(router.url, b'{"n": 1}').body["echo"] == {"n": 1}
            seen[name] = rs.environ(router.pid).get("GODEBUG")  # the process started, answering: exec kept its PID
        inherited = os.environ.get("GODEBUG")  # what "unset" had, if the tests' own environment sets it
        assert seen == {
            "unset": f"{inherited},schedtrace=2147483647" if inherited else "schedtrace=2147483647",
            "other": "madvdontneed=1,schedtrace=2147483647",
            "own": "schedtrace=0",
        }
