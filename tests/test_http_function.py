"""The runtime as the adapter of a user's HTTP server (`mp.Container`): each gRPC call becomes a
POST of its JSON within the caller's deadline, the server's answers map to the statuses a Python
function's outcomes do, admission and the response bound hold, and health follows `GET /healthz`."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from aiohttp import web
from grpc_health.v1 import health_pb2

import rel_support as rs
from metaparticle_runtime import probe
from metaparticle_runtime.config import ConfigError, RuntimeConfig, server_env
from metaparticle_runtime.errors import RoleError
from metaparticle_runtime.payload import unwrap, wrap
from metaparticle_runtime.server import Runtime

pytestmark = pytest.mark.timeout(60)


def user_app(state: dict) -> web.Application:
    """A user's server: echoes, or answers what the request asks (sleep, status, body, size)."""

    async def call(request: web.Request) -> web.Response:
        body = await request.json()
        state.setdefault("timeouts", []).append(request.headers.get("X-Metaparticle-Timeout"))
        if "sleep" in body:
            await asyncio.sleep(body["sleep"])
        if "status" in body:
            return web.Response(status=body["status"], text=body.get("text", ""), content_type=body.get("type", "text/plain"))
        if "size" in body:
            return web.Response(body=json.dumps("x" * body["size"]).encode(), content_type="application/json")
        return web.json_response({"echo": body})

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(status=200 if state.get("healthy", True) else 503)

    app = web.Application()
    app.router.add_post("/", call)
    app.router.add_get("/healthz", healthz)
    return app


async def start_user_server(state: dict, port: int) -> web.AppRunner:
    runner = web.AppRunner(user_app(state))
    await runner.setup()
    await web.TCPSite(runner, rs.HOST, port).start()
    return runner


def _cfg(port: int, **settings) -> RuntimeConfig:
    return RuntimeConfig(
        role="function", function_url=f"http://{rs.HOST}:{port}", bind_host=rs.HOST, grpc_port=rs.free_port(),
        replica="test-0", drain_seconds=0.0, **settings,
    )


async def _call(runtime: Runtime, body, timeout: float | None = None):
    start = time.monotonic()
    try:
        reply = await runtime.dispatch(wrap(json.dumps(body).encode()), start + (timeout or runtime.cfg.timeout))
    except RoleError as err:
        return err.code.name, time.monotonic() - start, err.document()
    return "OK", time.monotonic() - start, json.loads(unwrap(reply))


def with_server(test, **settings):
    """Runs `test(runtime, state)` against a user server on a free port."""

    async def run():
        port = rs.free_port()
        state: dict = {}
        server = await start_user_server(state, port)
        runtime = Runtime(_cfg(port, **settings))
        try:
            return await test(runtime, state)
        finally:
            await runtime.role.close()
            await server.cleanup()

    return rs.run(run())


def test_a_call_is_posted_to_the_server_and_its_json_is_the_result():
    async def test(runtime, state):
        return await _call(runtime, {"n": [1, 2, {"ü": None}]}, timeout=5.0), state

    (code, _, body), state = with_server(test)
    assert (code, body) == ("OK", {"echo": {"n": [1, 2, {"ü": None}]}})
    assert 4.0 < float(state["timeouts"][0]) <= 5.0  # the server is told the remaining deadline


def test_a_slow_server_answers_deadline_exceeded_at_the_callers_deadline():
    async def test(runtime, state):
        return await _call(runtime, {"sleep": 3}, timeout=0.3)

    code, took, doc = with_server(test)
    assert code == "DEADLINE_EXCEEDED", doc
    assert 0.25 < took < 1.0


def test_a_4xx_is_invalid_argument_with_the_servers_body_in_the_error_document():
    async def test(runtime, state):
        bad = {"status": 422, "text": json.dumps({"error": "n must be a number"}), "type": "application/json"}
        return await _call(runtime, bad), await _call(runtime, {"status": 404, "text": "no such thing"})

    (code, _, doc), (code2, _, doc2) = with_server(test)
    assert code == "INVALID_ARGUMENT"
    assert doc["body"] == {"error": "n must be a number"} and doc["server_status"] == 422
    assert "n must be a number" in doc["error"]
    assert code2 == "INVALID_ARGUMENT" and doc2["body"] == "no such thing"


def test_a_5xx_and_a_reply_that_is_not_json_are_errors_that_say_so():
    async def test(runtime, state):
        return (
            await _call(runtime, {"status": 500, "text": "boom"}),
            await _call(runtime, {"status": 200, "text": "not json"}),
            await _call(runtime, {"status": 429}),
        )

    (c1, _, d1), (c2, _, d2), (c3, _, _) = with_server(test)
    assert c1 == "UNKNOWN" and d1["body"] == "boom" and "answered 500" in d1["error"]
    assert c2 == "INTERNAL" and "not JSON" in d2["error"]
    assert c3 == "RESOURCE_EXHAUSTED"


def test_nobody_listening_is_unavailable():
    async def run():
        runtime = Runtime(_cfg(rs.free_port()))
        try:
            return await _call(runtime, {"n": 1})
        finally:
            await runtime.role.close()

    code, took, doc = rs.run(run())
    assert code == "UNAVAILABLE" and "not listening" in doc["error"]
    assert took < 1.0


def test_calls_beyond_max_in_flight_are_refused_at_once():
    async def test(runtime, state):
        return await asyncio.gather(*(_call(runtime, {"sleep": 0.4}) for _ in range(5)))

    outcomes = with_server(test, max_in_flight=2)
    refused = [o for o in outcomes if o[0] == "RESOURCE_EXHAUSTED"]
    assert sorted(o[0] for o in outcomes).count("OK") == 2 and len(refused) == 3, outcomes
    assert all(o[1] < 0.05 for o in refused)


def test_a_result_larger_than_max_response_bytes_is_refused_naming_the_limit():
    async def test(runtime, state):
        return await _call(runtime, {"size": 5000}), await _call(runtime, {"size": 100})

    (code, _, doc), (ok, _, body) = with_server(test, max_response_bytes=2048)
    assert code == "RESOURCE_EXHAUSTED" and doc["response_too_large"] is True and doc["limit"] == 2048
    assert ok == "OK" and body == "x" * 100


def test_requests_over_the_runtimes_bounds_never_reach_the_server():
    async def test(runtime, state):
        deep = json.loads("[" * 10 + "]" * 10)
        return await _call(runtime, deep), state

    (code, _, _), state = with_server(test, max_json_depth=5)
    assert code == "INVALID_ARGUMENT" and "timeouts" not in state


def test_metrics_count_the_servers_answers_by_status():
    async def test(runtime, state):
        await _call(runtime, {"a": 1})
        await _call(runtime, {"status": 400})
        return runtime.metrics.exposition().decode()

    text = with_server(test)
    assert 'metaparticle_requests_total{code="OK",pattern="Service",role="service"} 1.0' in text
    assert 'metaparticle_requests_total{code="INVALID_ARGUMENT",pattern="Service",role="service"} 1.0' in text


def test_health_is_not_serving_until_the_server_answers_and_again_once_it_stops():
    async def run():
        port = rs.free_port()
        state: dict = {"healthy": False}
        runtime = Runtime(_cfg(port))
        await runtime.start()
        status = lambda: asyncio.to_thread(probe.check, f"{rs.HOST}:{runtime.cfg.grpc_port}")  # noqa: E731
        seen = [await status()]  # nothing listens yet
        server = await start_user_server(state, port)
        await asyncio.sleep(1.0)
        seen.append(await status())  # listening, but its /healthz answers 503
        state["healthy"] = True
        await asyncio.sleep(1.0)
        seen.append(await status())
        await server.cleanup()  # the server dies
        await asyncio.sleep(1.8)
        seen.append(await status())
        await runtime.stop()
        return seen

    S, N = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
    assert rs.run(run()) == [N, N, S, N]


def test_a_replica_busy_with_max_in_flight_slow_calls_stays_serving():
    async def run():
        port = rs.free_port()
        state: dict = {}
        server = await start_user_server(state, port)
        runtime = Runtime(_cfg(port, max_in_flight=2))
        await runtime.start()
        try:
            await asyncio.sleep(0.8)
            calls = [asyncio.ensure_future(_call(runtime, {"sleep": 3.0})) for _ in range(2)]
            await asyncio.sleep(2.5)  # probes every 0.5 s while both connections are busy
            status = await asyncio.to_thread(probe.check, f"{rs.HOST}:{runtime.cfg.grpc_port}")
            return status, [o[0] for o in await asyncio.gather(*calls)]
        finally:
            await runtime.stop()
            await server.cleanup()

    status, codes = rs.run(run())
    assert status == health_pb2.HealthCheckResponse.SERVING and codes == ["OK", "OK"]


def test_the_config_carries_the_url_and_refuses_it_with_a_python_function():
    cfg = RuntimeConfig(role="function", function_url="http://127.0.0.1:9000")
    assert RuntimeConfig.from_env(cfg.to_env()).function_url == "http://127.0.0.1:9000"
    with pytest.raises(ConfigError, match="exclude each other"):
        RuntimeConfig(role="function", function="m:f", function_url="http://127.0.0.1:9000").validate()
    with pytest.raises(ConfigError, match="http://"):
        RuntimeConfig(role="function", function_url="127.0.0.1:9000").validate()


def test_the_server_environment_holds_the_port_and_the_context():
    env = server_env(9000, pattern="Shard", name="users", role="shard", index=1, count=3, replica="users-shard-1")
    assert env["PORT"] == "9000"
    assert json.loads(env["MP_CONTEXT"]) == {
        "pattern": "Shard", "name": "users", "role": "shard", "index": 1, "count": 3, "replica": "users-shard-1",
    }
