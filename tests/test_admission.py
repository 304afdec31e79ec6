"""Admission: `max_in_flight` bounds what a replica admits, and every admitted call has a thread at
once (no hidden executor queue); calls past their deadline answer 504 then and their threads count
as lost; a replica whose lost threads leave no capacity turns NOT_SERVING and, if none comes back,
exits to be replaced."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

import rel_support as rs
from metaparticle_runtime import probe
from metaparticle_runtime.config import RuntimeConfig
from metaparticle_runtime.server import EXIT_WEDGED, Runtime

pytestmark = pytest.mark.timeout(120)

FNS = Path(__file__).resolve().parent / "programs" / "dp_admission"
sys.path.insert(0, str(FNS))  # the runtime loads dp_fns from there too: one module, one `release`


def _cfg(function: str, **settings) -> RuntimeConfig:
    return RuntimeConfig(
        role="function", function=f"dp_fns:{function}", source_dir=str(FNS), bind_host=rs.HOST,
        grpc_port=rs.free_port(), replica="test-0", drain_seconds=0.0, **settings,
    )


async def _health(runtime: Runtime) -> int:
    return await asyncio.to_thread(probe.check, f"{rs.HOST}:{runtime.cfg.grpc_port}")


def test_calls_beyond_free_threads_are_refused_at_once_not_queued():
    """2 threads and max_in_flight 8: of 8 concurrent 0.3 s calls, 2 run and 6 are refused at once
    (before, 8 were admitted and 6 waited in the executor's queue)."""

    async def run():
        runtime = Runtime(_cfg("sleep", threads=2, max_in_flight=8))
        try:
            return await asyncio.gather(*(rs.dispatch_json(runtime, {"sleep": 0.3}) for _ in range(8)))
        finally:
            runtime.workers.shutdown()

    outcomes = rs.run(run())
    ok = [o for o in outcomes if o[0] == "OK"]
    refused = [o for o in outcomes if o[0] == "RESOURCE_EXHAUSTED"]
    assert len(ok) == 2 and len(refused) == 6, outcomes
    assert all(o[1] < 0.05 for o in refused), refused
    assert all(o[1] < 0.5 for o in ok), ok  # not queued behind one another


def test_by_default_every_admitted_call_has_a_thread():
    """threads defaults to max_in_flight: 4 concurrent 0.3 s calls all run at once, a 5th is refused."""
    assert RuntimeConfig(role="function", function="m:f", max_in_flight=4).worker_threads == 4

    async def run():
        runtime = Runtime(_cfg("sleep", max_in_flight=4))
        try:
            start = time.monotonic()
            outcomes = await asyncio.gather(*(rs.dispatch_json(runtime, {"sleep": 0.3}) for _ in range(5)))
            return outcomes, time.monotonic() - start
        finally:
            runtime.workers.shutdown()

    outcomes, took = rs.run(run())
    assert sorted(o[0] for o in outcomes) == ["OK"] * 4 + ["RESOURCE_EXHAUSTED"]
    assert took < 0.55, f"4 calls of 0.3 s took {took:.2f}s: they did not all run at once"


def test_calls_past_their_deadline_answer_504_lose_their_thread_and_turn_the_replica_not_serving():
    from dp_fns import release

    release.clear()

    async def run():
        runtime = Runtime(_cfg("hang", max_in_flight=2, timeout=0.3))
        await runtime.start()
        try:
            assert await _health(runtime) == health_pb2.HealthCheckResponse.SERVING
            first = await rs.dispatch_json(runtime, {"hang": 20})
            after_one = (runtime.workers.lost, await _health(runtime), await rs.dispatch_json(runtime, {}))
            second = await rs.dispatch_json(runtime, {"hang": 20})
            await asyncio.sleep(0.05)  # the health update is a task
            after_two = (runtime.workers.lost, await _health(runtime), await rs.dispatch_json(runtime, {}))
            release.set()
            for _ in range(100):
                if runtime.workers.lost == 0:
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.05)
            recovered = (runtime.workers.lost, await _health(runtime), await rs.dispatch_json(runtime, {}), runtime.wedged.is_set())
            return first, second, after_one, after_two, recovered
        finally:
            release.set()
            await runtime.stop()

    first, second, after_one, after_two, recovered = rs.run(run())
    for code, took, message in (first, second):
        assert code == "DEADLINE_EXCEEDED" and 0.25 < took < 0.5, (code, took, message)
    lost, status, call = after_one
    assert lost == 1 and status == health_pb2.HealthCheckResponse.SERVING and call[0] == "OK"
    lost, status, call = after_two
    assert lost == 2 and status == health_pb2.HealthCheckResponse.NOT_SERVING
    assert call[0] == "RESOURCE_EXHAUSTED" and call[1] < 0.05 and "2 of its 2 threads" in call[2], call
    lost, status, call, wedged = recovered
    assert lost == 0 and status == health_pb2.HealthCheckResponse.SERVING and call[0] == "OK" and not wedged


def test_a_replica_whose_threads_all_hang_exits_and_is_replaced_on_the_local_target():
    """Two calls that hang past the 0.5 s deadline take both threads: the replica answers 504, turns
    NOT_SERVING at once, exits (code 3) after the grace period and the supervisor restarts it."""
    with rs.Topology(FNS) as topo:
        topo.wait_healthy()
        proc = topo.entry()

        async def hang() -> list[rs.Outcome]:
            client = rs.GrpcClient(topo.grpc_target)
            try:
                return await asyncio.gather(*(client.json(b'{"hang": 60}', i) for i in range(2)))
            finally:
                await client.close()

        outcomes = rs.run(hang())
        assert [o.status for o in outcomes] == ["DEADLINE_EXCEEDED"] * 2, outcomes
        assert all(o.latency < 1.0 for o in outcomes), outcomes
        time.sleep(0.1)
        assert rs.health(rs.HOST, proc.grpc_port) == "NOT_SERVING"
        new_pid = topo.wait_replaced(proc.name, proc.pid, timeout=20)
        assert new_pid != proc.pid
        topo.wait_healthy()
        log = topo.log()
        assert f"exited with code {EXIT_WEDGED}" in log, log[-2000:]

        async def ok() -> rs.Outcome:
            client = rs.GrpcClient(topo.grpc_target)
            try:
                return await client.json(b"{}")
            finally:
                await client.close()

        assert rs.run(ok()).ok
