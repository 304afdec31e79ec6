"""Faults on the local target: real processes on 127.0.0.1 started by `metaparticle run`, real load.

Every load loop is bounded in requests and in seconds; the numbers each test measured are printed
and written to tests/.results/reliability.json (docs/reliability.md reports them).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections import Counter

import pytest

import rel_support as rs
from metaparticle_runtime.hashing import shard_for

pytestmark = pytest.mark.timeout(150)


def _body(**fields) -> bytes:
    return json.dumps(fields).encode()


def _in_flight_at(outcomes: list[rs.Outcome], moment: float) -> int:
    return sum(1 for o in outcomes if o.done_at - o.latency < moment < o.done_at)


# -- Spread: SIGKILL and SIGTERM of replicas under load ----------------------------------------------


@pytest.fixture(scope="module")
def spread():
    with rs.Topology("rel_spread") as topo:
        yield topo


def test_spread_sigkill_of_a_replica_under_load_fails_no_request(spread: rs.Topology) -> None:
    """5,000 requests at 64 concurrency; one of 3 replicas is SIGKILLed a third of the way in. Calls
    in flight on it are retried on the others; the supervisor restarts it and it answers again."""
    spread.wait_healthy()
    victim = "rel-spread-replica-1"
    old_pid = spread.pid(victim)
    state: dict[str, float] = {}

    def on_outcome(o: rs.Outcome) -> None:
        if "kill" not in state and o.index >= 1500:
            state["kill"] = time.monotonic()
            os.kill(old_pid, signal.SIGKILL)
        if o.ok and "kill" in state and o.body["replica"] == victim and o.body["pid"] != old_pid:
            state.setdefault("back", o.done_at)

    async def load() -> rs.LoadResult:
        client = rs.GrpcClient(spread.grpc_target)
        try:
            return await rs.closed_loop(
                lambda i: client.json(_body(i=i, sleep=0.01), i),
                total=5000,
                concurrency=64,
                time_limit=60,
                keep_going=lambda: "back" not in state,  # until the restarted replica answers
                max_total=30000,
                on_outcome=on_outcome,
            )
        finally:
            await client.close()

    result = asyncio.run(load())
    by_replica = Counter(o.body["replica"] for o in result.outcomes if o.ok)
    recovery = state["back"] - state["kill"] if "back" in state else None
    rs.record(
        "spread_sigkill",
        {
            "requests": result.sent,
            "concurrency": 64,
            "failed": len(result.failures) + len(result.transport_errors),
            "in_flight_at_kill": _in_flight_at(result.outcomes, state.get("kill", 0.0)),
            "recovery_seconds": round(recovery, 2) if recovery is not None else None,
            "seconds": round(result.seconds, 2),
            "per_replica": dict(by_replica),
            "statuses": result.statuses(),
        },
    )
    assert "kill" in state
    assert result.sent >= 5000
    assert not result.transport_errors, result.transport_errors[:3]
    assert not result.failures, result.failures[:3]
    assert set(by_replica) == {f"rel-spread-replica-{i}" for i in range(3)}
    assert recovery is not None and recovery < 5.0, f"the restarted replica answered after {recovery}s"


def test_spread_rolling_sigterm_under_load_fails_no_request(spread: rs.Topology) -> None:
    """A rolling restart: each replica in turn gets SIGTERM under load (HTTP, 64 concurrent, 50 ms
    calls). It reports NOT_SERVING, gets no new calls, finishes those in flight and exits; the
    supervisor starts it again, and the next one goes only once the new one answers."""
    spread.wait_healthy()
    names = [f"rel-spread-replica-{i}" for i in range(3)]
    steps: list[dict] = []
    current: dict = {}
    old_pid_answers: list[tuple[rs.Outcome, dict]] = []

    def on_outcome(o: rs.Outcome) -> None:
        if not o.ok:
            return
        for step in steps:
            if o.body["pid"] == step["old_pid"] and o.done_at > step["term_at"]:
                old_pid_answers.append((o, step))
        if current and o.body["replica"] == current["name"] and o.body["pid"] != current["old_pid"]:
            current.setdefault("back_at", o.done_at)

    async def roll() -> None:
        for name in names:
            proc = spread.processes()[name]
            current.clear()
            current.update(name=name, old_pid=proc.pid)
            step = {"name": name, "old_pid": proc.pid, "term_at": time.monotonic()}
            steps.append(step)
            os.kill(proc.pid, signal.SIGTERM)
            seen = set()
            until = time.monotonic() + 0.45  # the drain delay is 0.5 s
            while time.monotonic() < until and "NOT_SERVING" not in seen:
                seen.add(await asyncio.to_thread(rs.health, rs.HOST, proc.grpc_port, 0.2))
            step["health_after_sigterm"] = sorted(seen)
            until = time.monotonic() + 15
            while "back_at" not in current and time.monotonic() < until:
                await asyncio.sleep(0.05)
            step["back_after"] = round(current["back_at"] - step["term_at"], 2) if "back_at" in current else None
            if step["back_after"] is None:
                return

    async def load() -> rs.LoadResult:
        client = rs.HttpClient(spread.url, concurrency=64)
        roller = asyncio.ensure_future(roll())
        try:
            result = await rs.closed_loop(
                lambda i: client.post(_body(i=i, sleep=0.05), i),
                total=3000,
                concurrency=64,
                time_limit=60,
                keep_going=lambda: not roller.done(),
                max_total=40000,
                on_outcome=on_outcome,
            )
            await roller
            return result
        finally:
            roller.cancel()
            await client.close()

    result = asyncio.run(load())
    finished_in_flight = len(old_pid_answers)
    late_starts = [
        round(o.done_at - o.latency - step["term_at"], 3)
        for o, step in old_pid_answers
        if o.done_at - o.latency > step["term_at"] + 0.4
    ]
    rs.record(
        "spread_rolling_sigterm",
        {
            "requests": result.sent,
            "concurrency": 64,
            "failed": len(result.failures) + len(result.transport_errors),
            "replicas_restarted": len([s for s in steps if s.get("back_after") is not None]),
            "in_flight_finished_after_sigterm": finished_in_flight,
            "back_after_seconds": [s.get("back_after") for s in steps],
            "health_after_sigterm": [s.get("health_after_sigterm") for s in steps],
            "seconds": round(result.seconds, 2),
            "statuses": result.statuses(),
        },
    )
    assert not result.transport_errors, result.transport_errors[:3]
    assert not result.failures, result.failures[:3]
    assert len(steps) == 3 and all(s.get("back_after") is not None for s in steps), steps
    # The supervisor backs off restarts of a replica restarted shortly before (1 s, then 2 s...).
    assert all(s["back_after"] < 10.0 for s in steps), steps
    assert all("NOT_SERVING" in s["health_after_sigterm"] for s in steps), steps
    assert finished_in_flight > 0, "no call in flight at SIGTERM was answered by the stopping replica"
    assert not late_starts, f"calls sent well after SIGTERM still went to the stopping replica: {late_starts[:5]}"


# -- Shard: a dead shard fails only its keys ---------------------------------------------------------


USERS = [f"user-{i}" for i in range(300)]
SHARD_OF = {u: shard_for(u, 3) for u in USERS}


@pytest.fixture(scope="module")
def shard1():
    with rs.Topology("rel_shard", {"REL_NAME": "rel-shard", "REL_REPLICAS": "1"}) as topo:
        yield topo


@pytest.fixture(scope="module")
def shard2():
    with rs.Topology("rel_shard", {"REL_NAME": "rel-shard2", "REL_REPLICAS": "2"}) as topo:
        yield topo


def _shard_load(topo: rs.Topology, victim: str, *, total: int, on_back) -> tuple[rs.LoadResult, dict]:
    """HTTP and gRPC requests in turn over 300 users; `victim` is SIGKILLed after 600 requests."""
    old_pid = topo.pid(victim)
    state: dict = {"old_pid": old_pid}

    def on_outcome(o: rs.Outcome) -> None:
        if "kill" not in state and o.index >= 600:
            state["kill"] = time.monotonic()
            os.kill(old_pid, signal.SIGKILL)
        if "kill" in state and o.ok and o.body["replica"] == victim and o.body["pid"] != old_pid:
            state.setdefault("back", o.done_at)

    async def load() -> rs.LoadResult:
        grpc_client = rs.GrpcClient(topo.grpc_target)
        http_client = rs.HttpClient(topo.url, concurrency=32)

        def send(i: int):
            body = _body(user=USERS[i % len(USERS)], i=i)
            return http_client.post(body, i) if i % 2 else grpc_client.json(body, i)

        try:
            return await rs.closed_loop(
                send, total=total, concurrency=32, time_limit=60, keep_going=lambda: on_back(state), max_total=40000, on_outcome=on_outcome
            )
        finally:
            await grpc_client.close()
            await http_client.close()

    return asyncio.run(load()), state


def test_shard_with_its_only_replica_killed_fails_only_its_keys_fast(shard1: rs.Topology) -> None:
    shard1.wait_healthy()
    victim = "rel-shard-shard-1"
    result, state = _shard_load(shard1, victim, total=3000, on_back=lambda s: "back" not in s)
    user_of = lambda o: USERS[o.index % len(USERS)]  # noqa: E731
    others = [o for o in result.outcomes if SHARD_OF[user_of(o)] != 1]
    mine = [o for o in result.outcomes if SHARD_OF[user_of(o)] == 1]
    failed = [o for o in mine if not o.ok]
    bad_errors = [
        o for o in failed
        if o.status not in (503, "UNAVAILABLE")
        or not o.json_error
        or not isinstance(o.body, dict)
        or o.body.get("shard") != 1
        or "shard 1" not in o.body.get("error", "")
    ]
    slow = [round(o.latency, 3) for o in failed if o.latency >= 1.0]
    down_for = state["back"] - state["kill"] if "back" in state else None
    rs.record(
        "shard_only_replica_killed",
        {
            "requests": result.sent,
            "concurrency": 32,
            "other_shards_requests": len(others),
            "other_shards_failed": sum(1 for o in others if not o.ok),
            "dead_shard_requests": len(mine),
            "dead_shard_failed": len(failed),
            "dead_shard_failure_p99_ms": round(1000 * rs.LoadResult(failed).latency_quantile(0.99), 1),
            "dead_shard_failure_max_ms": round(1000 * max((o.latency for o in failed), default=0), 1),
            "recovery_seconds": round(down_for, 2) if down_for is not None else None,
            "statuses": result.statuses(),
        },
    )
    assert not result.transport_errors, result.transport_errors[:3]
    assert all(o.ok for o in others), [o for o in others if not o.ok][:3]
    assert failed, "no request for the dead shard failed: the kill did not take effect"
    assert not bad_errors, bad_errors[:3]
    assert not slow, f"failures slower than 1 s: {slow[:10]}"
    assert down_for is not None and down_for < 5.0


def test_shard_with_two_replicas_loses_one_and_fails_no_request(shard2: rs.Topology) -> None:
    shard2.wait_healthy()
    victim = "rel-shard2-shard-1-0"
    result, state = _shard_load(shard2, victim, total=3000, on_back=lambda s: "back" not in s)
    down_for = state["back"] - state["kill"] if "back" in state else None
    rs.record(
        "shard_replica_killed_2_per_shard",
        {
            "requests": result.sent,
            "concurrency": 32,
            "failed": len(result.failures) + len(result.transport_errors),
            "recovery_seconds": round(down_for, 2) if down_for is not None else None,
            "statuses": result.statuses(),
        },
    )
    assert not result.transport_errors, result.transport_errors[:3]
    assert not result.failures, result.failures[:3]
    assert down_for is not None and down_for < 5.0


# -- Scatter/gather: dead and slow leaves ------------------------------------------------------------


@pytest.fixture(scope="module")
def sg_fail():
    with rs.Topology("rel_scatter", {"REL_NAME": "rel-sg", "REL_ON_MISSING": "fail", "REL_TIMEOUT": "1.0"}) as topo:
        yield topo


@pytest.fixture(scope="module")
def sg_partial():
    with rs.Topology("rel_scatter", {"REL_NAME": "rel-sgp", "REL_ON_MISSING": "partial", "REL_TIMEOUT": "1.0"}) as topo:
        yield topo


def _while_leaf_dead(topo: rs.Topology, victim: str, limit: int = 60) -> tuple[list[rs.Outcome], float]:
    """Kills `victim`, then sends requests (HTTP and gRPC in turn) until the supervisor has started
    a new process for it; the answers that were sent while it was dead, and how long that was."""
    pid = topo.kill(victim)
    killed_at = time.monotonic()
    while rs.alive(pid) and time.monotonic() - killed_at < 5:
        time.sleep(0.005)

    async def probe() -> list[rs.Outcome]:
        grpc_client = rs.GrpcClient(topo.grpc_target)
        http_client = rs.HttpClient(topo.url)
        outcomes = []
        try:
            for i in range(limit):
                if victim in topo.processes():
                    break  # a new process runs: what follows is not "while dead"
                body = _body(q="x", i=i)
                outcomes.append(await (http_client.post(body, i) if i % 2 else grpc_client.json(body, i)))
        finally:
            await grpc_client.close()
            await http_client.close()
        return outcomes

    outcomes = asyncio.run(probe())
    return outcomes, time.monotonic() - killed_at


def test_dead_leaf_fails_the_request_fast_naming_the_leaf(sg_fail: rs.Topology) -> None:
    sg_fail.wait_healthy()
    outcomes, _ = _while_leaf_dead(sg_fail, "rel-sg-leaf-1")
    bad = [
        o for o in outcomes
        if o.status not in (503, "UNAVAILABLE") or not isinstance(o.body, dict) or o.body.get("leaf") != 1
        or "leaf 1" not in o.body.get("error", "")
    ]
    worst = max((o.latency for o in outcomes), default=0.0)
    rs.record(
        "scatter_dead_leaf_fail",
        {"requests_while_dead": len(outcomes), "failed_naming_leaf": len(outcomes) - len(bad), "max_latency_ms": round(worst * 1000, 1)},
    )
    assert len(outcomes) >= 3, "the leaf came back before it could be observed dead"
    assert not bad, bad[:3]
    assert worst < 1.0
    sg_fail.wait_healthy()
    ok = asyncio.run(_one_http(sg_fail.url, _body(q="x")))
    assert ok.ok and ok.body["leaves"] == [0, 1, 2]


def test_dead_leaf_with_on_missing_partial_answers_what_it_has(sg_partial: rs.Topology) -> None:
    sg_partial.wait_healthy()
    outcomes, _ = _while_leaf_dead(sg_partial, "rel-sgp-leaf-1")
    bad = [
        o for o in outcomes
        if not o.ok or o.body.get("leaves") != [0, 2] or [m.get("leaf") for m in o.body.get("missing", [])] != [1]
        or o.body["missing"][0].get("code") != "UNAVAILABLE"
    ]
    worst = max((o.latency for o in outcomes), default=0.0)
    rs.record(
        "scatter_dead_leaf_partial",
        {"requests_while_dead": len(outcomes), "partial_answers": len(outcomes) - len(bad), "max_latency_ms": round(worst * 1000, 1)},
    )
    assert len(outcomes) >= 3
    assert not bad, bad[:3]
    assert worst < 1.0


async def _one_http(url: str, body: bytes) -> rs.Outcome:
    client = rs.HttpClient(url)
    try:
        return await client.post(body)
    finally:
        await client.close()


async def _slow_leaf_requests(topo: rs.Topology, n: int) -> list[rs.Outcome]:
    """`n` requests at once (HTTP and gRPC in turn) that leaf 2 sleeps 3 s on; the deadline is 1 s."""
    grpc_client = rs.GrpcClient(topo.grpc_target)
    http_client = rs.HttpClient(topo.url)
    body = _body(slow_leaf=2, sleep=3.0)
    try:
        return await asyncio.gather(
            *((http_client.post(body, i) if i % 2 else grpc_client.json(body, i, timeout=5.0)) for i in range(n))
        )
    finally:
        await grpc_client.close()
        await http_client.close()


def test_slow_leaf_never_holds_a_request_past_its_deadline(sg_fail: rs.Topology) -> None:
    sg_fail.wait_healthy()
    outcomes = asyncio.run(_slow_leaf_requests(sg_fail, 8))
    worst = max(o.latency for o in outcomes)
    rs.record(
        "scatter_slow_leaf_fail",
        {"requests": len(outcomes), "deadline_s": 1.0, "statuses": dict(Counter(str(o.status) for o in outcomes)), "max_latency_ms": round(worst * 1000, 1)},
    )
    for o in outcomes:
        assert o.status in (504, "DEADLINE_EXCEEDED"), o
        assert o.json_error and "leaf 2" in o.body["error"], o
    assert worst <= 1.0 + 0.1, f"answered {worst:.3f}s after the request, deadline 1.0 s"


def test_slow_leaf_with_on_missing_partial_is_reported_missing_within_the_deadline(sg_partial: rs.Topology) -> None:
    sg_partial.wait_healthy()
    outcomes = asyncio.run(_slow_leaf_requests(sg_partial, 8))
    worst = max(o.latency for o in outcomes)
    rs.record(
        "scatter_slow_leaf_partial",
        {"requests": len(outcomes), "deadline_s": 1.0, "statuses": dict(Counter(str(o.status) for o in outcomes)), "max_latency_ms": round(worst * 1000, 1)},
    )
    for o in outcomes:
        assert o.ok, o
        assert o.body["leaves"] == [0, 1], o
        assert [(m["leaf"], m["code"]) for m in o.body["missing"]] == [(2, "DEADLINE_EXCEEDED")], o
    assert worst <= 1.0 + 0.1


# -- Overload -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def overload():
    with rs.Topology("rel_overload") as topo:
        yield topo


def test_overload_is_refused_fast_and_memory_stays_bounded(overload: rs.Topology) -> None:
    """A function of 50 ms with at most 4 calls in flight sustains 80 requests/s. Offered 10x that
    (800/s, open loop, 3 s, gRPC and HTTP in turn), the replica serves what it can, refuses the
    rest at once with RESOURCE_EXHAUSTED / 429, queues nothing and keeps its memory."""
    overload.wait_healthy()
    proc = overload.entry()
    sustainable, factor, seconds = 80, 10, 3.0
    rate = sustainable * factor
    rss: list[int] = []

    async def run() -> tuple[list, float]:
        grpc_client = rs.GrpcClient(overload.grpc_target)
        http_client = rs.HttpClient(overload.url, concurrency=1000)
        sampling = True

        async def sample() -> None:
            while sampling:
                rss.append(rs.rss_kib(proc.pid))
                await asyncio.sleep(0.05)

        # Warm up both paths, then measure the baseline.
        for i in range(20):
            await grpc_client.json(b"{}", i)
            await http_client.post(b"{}", i)
        await asyncio.sleep(0.2)
        baseline = rs.rss_kib(proc.pid)
        sampler = asyncio.ensure_future(sample())
        tasks = []
        start = time.monotonic()
        for i in range(int(rate * seconds)):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(http_client.post(b"{}", i) if i % 2 else grpc_client.json(b"{}", i)))
        offered_for = time.monotonic() - start
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        sampling = False
        await sampler
        after = await grpc_client.json(b"{}")
        await grpc_client.close()
        await http_client.close()
        return outcomes, baseline, offered_for, after

    outcomes, baseline, offered_for, after = asyncio.run(run())
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    answered = [o for o in outcomes if isinstance(o, rs.Outcome)]
    served = [o for o in answered if o.ok]
    refused = [o for o in answered if o.status in (429, "RESOURCE_EXHAUSTED")]
    other = [o for o in answered if not o.ok and o.status not in (429, "RESOURCE_EXHAUSTED")]
    bad_docs = [o for o in refused if not o.json_error or o.body.get("code") != "RESOURCE_EXHAUSTED"]
    peak = max(rss) if rss else baseline
    refused_result = rs.LoadResult(refused)
    served_result = rs.LoadResult(served)
    rs.record(
        "overload",
        {
            "sustainable_rps": sustainable,
            "offered_rps": round(len(outcomes) / offered_for),
            "requests": len(outcomes),
            "served": len(served),
            "refused": len(refused),
            "other_failures": len(other) + len(errors),
            "refused_p50_ms": round(1000 * refused_result.latency_quantile(0.5), 1),
            "refused_p99_ms": round(1000 * refused_result.latency_quantile(0.99), 1),
            "served_p99_ms": round(1000 * served_result.latency_quantile(0.99), 1),
            "rss_baseline_mib": round(baseline / 1024, 1),
            "rss_peak_mib": round(peak / 1024, 1),
        },
    )
    assert not errors, errors[:3]
    assert not other, other[:3]
    assert not bad_docs, bad_docs[:3]
    assert refused, "nothing was refused at 10x the sustainable load"
    # No more than 4 in flight: what was served fits 4 calls of 50 ms at a time (with slack).
    window = max(o.done_at for o in served) - min(o.done_at - o.latency for o in served)
    assert len(served) <= 4 / 0.05 * window * 1.1 + 4
    # Served calls were not queued behind the excess (2,400 calls queued for 4 slots of 50 ms would
    # wait up to 30 s), refused ones were refused at once. The bounds leave room for a busy machine.
    assert served_result.latency_quantile(0.99) < 1.0
    assert refused_result.latency_quantile(0.5) < 0.1
    assert refused_result.latency_quantile(0.99) < 1.0
    assert peak - baseline < 40 * 1024, f"RSS grew from {baseline} KiB to {peak} KiB"
    assert after.ok


# -- the health service routers watch ----------------------------------------------------------------


def test_health_watch_reaches_every_watcher_and_ends_on_stop() -> None:
    """NOT_SERVING reaches a watcher after another watcher of the same service left (the stock grpc
    asyncio servicer forgets the others then), and close_watches() ends every stream cleanly."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from metaparticle_runtime.healthwatch import HealthServicer

    SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING

    async def run() -> tuple[list, list, str]:
        servicer = HealthServicer()
        server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        port = server.add_insecure_port(f"{rs.HOST}:0")
        await server.start()
        await servicer.set("", SERVING)
        channel = grpc.aio.insecure_channel(f"{rs.HOST}:{port}")
        stub = health_pb2_grpc.HealthStub(channel)
        leaving = stub.Watch(health_pb2.HealthCheckRequest(service=""))
        staying = stub.Watch(health_pb2.HealthCheckRequest(service=""))
        first = [(await leaving.read()).status]
        seen = [(await staying.read()).status]
        leaving.cancel()
        await asyncio.sleep(0.1)
        await servicer.enter_graceful_shutdown()
        seen.append((await asyncio.wait_for(staying.read(), 2)).status)
        await servicer.close_watches()
        end = await asyncio.wait_for(staying.read(), 2)
        code = (await staying.code()).name
        assert end is grpc.aio.EOF
        started = time.monotonic()
        await server.stop(grace=5)
        assert time.monotonic() - started < 1, "the stop waited for watch streams"
        await channel.close()
        return first, seen, code

    first, seen, code = asyncio.run(run())
    assert first == [SERVING]
    assert seen == [SERVING, NOT_SERVING]
    assert code == "OK"


def test_idempotent_false_turns_off_retries_of_calls_that_may_have_run() -> None:
    """Calls that may have started on a replica that died are re-sent only for idempotent functions;
    gRPC's transparent retries (calls that reached no replica) stay on either way."""
    import metaparticle_pulumi as mp
    from metaparticle_runtime.upstream import channel_options, service_config

    def handler(request):
        return request

    assert mp.SpreadArgs(function=handler).settings().retries == 2
    assert mp.SpreadArgs(function=handler, idempotent=False).settings().retries == 0
    assert "methodConfig" not in service_config(0) and service_config(0)["healthCheckConfig"] == {"serviceName": ""}
    policy = service_config(2, burst=256)
    assert policy["methodConfig"][0]["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
    # Every call in flight on one replica (up to max_in_flight) may be retried at once.
    assert policy["retryThrottling"]["maxTokens"] / 2 >= 256
    assert ("grpc.enable_retries", 1) in channel_options(0, 1024)
