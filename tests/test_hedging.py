"""Hedged leaf calls: never for idempotent=False, a budget over a sliding window, the hedge on
another replica than the first call, delays learnt from successful calls only, the first answer
winning (else the first call's error), cancellation stopping both calls."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

import rel_support as rs
from metaparticle_runtime import CALL_ID_METADATA_KEY, HEDGE_METADATA_KEY
from metaparticle_runtime.config import RuntimeConfig
from metaparticle_runtime.errors import RoleError
from metaparticle_runtime.hedging import HedgeBudget, Hedger
from metaparticle_runtime.payload import unwrap, wrap
from metaparticle_runtime.server import Runtime
from metaparticle_runtime.upstream import Upstream

pytestmark = pytest.mark.timeout(60)

FNS = Path(__file__).resolve().parent / "programs" / "dp_admission"
sys.path.insert(0, str(FNS))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_budget_is_five_percent_of_the_calls_of_the_last_ten_seconds():
    clock = Clock()
    budget = HedgeBudget(clock=clock)
    for _ in range(100):
        budget.call()
    assert [budget.try_hedge() for _ in range(6)] == [True] * 5 + [False]
    # 10,000 calls over 100 s earned a lifetime budget of 500 hedges; the window allows 5% of the
    # last 10 s only, so a slow spell cannot spend them in one burst.
    for _ in range(100):
        clock.now += 1
        for _ in range(100):
            budget.call()
    spent = sum(budget.try_hedge() for _ in range(1000))
    assert spent == 50
    clock.now += 11  # no calls for 11 s: nothing left to spend
    assert not budget.try_hedge()


def _leaf_cfg(port: int, replica: str) -> RuntimeConfig:
    return RuntimeConfig(
        role="function", function="dp_fns:slow_on", source_dir=str(FNS), bind_host=rs.HOST,
        grpc_port=port, replica=replica, drain_seconds=0.0, pattern="ScatterGather", index=0, count=1,
    )


async def _two_replicas():
    ports = [rs.free_port(), rs.free_port()]
    replicas = [Runtime(_leaf_cfg(p, f"leaf-{i}")) for i, p in enumerate(ports)]
    for r in replicas:
        await r.start()
    up = Upstream(
        f"ipv4:{rs.HOST}:{ports[0]},{rs.HOST}:{ports[1]}", label="leaf 0", role_name="leaf-0", retries=2,
        max_message_bytes=1 << 20,
    )
    # Round robin spreads calls once both replicas are connected: call until both have answered.
    seen: set[str] = set()
    for _ in range(200):
        try:
            reply = await up.call(wrap(b"{}"), time.monotonic() + 1)
            seen.add(json.loads(unwrap(reply))["replica"])
        except RoleError:
            pass
        if len(seen) == 2:
            break
        await asyncio.sleep(0.01)
    assert len(seen) == 2, seen
    return replicas, up


def test_a_hedge_goes_to_another_replica_than_the_first_call():
    """One of two replicas is slow (0.6 s). 12 concurrent leaf calls, hedged after 50 ms: every call
    is answered by the fast replica, and no call ran twice on one replica (round robin lands some
    hedges on the replica running the first call; that replica refuses them and they are re-sent)."""
    import dp_fns

    async def run():
        replicas, up = await _two_replicas()
        hedger = Hedger("root", hedge_after=0.05)
        hedger.budget = HedgeBudget(share=1.0)
        dp_fns.runs.clear()
        try:
            async def one(n: int):
                body = wrap(json.dumps({"slow": "leaf-1", "sleep": 0.6, "n": n}).encode())
                reply = await hedger.call(up, body, time.monotonic() + 5, hedge=True)
                return json.loads(unwrap(reply))["replica"]

            answered_by = await asyncio.gather(*(one(n) for n in range(12)))
            await asyncio.sleep(0.7)  # the slow first calls finish
            return answered_by, list(dp_fns.runs), hedger
        finally:
            await up.close()
            for r in replicas:
                await r.stop()

    answered_by, runs, hedger = rs.run(run())
    assert set(answered_by) == {"leaf-0"}, (answered_by, runs)
    # Round robin sent about half the first calls to the slow replica; each was hedged.
    first_on_slow = {n for replica, n in runs if replica == "leaf-1"}
    assert len(first_on_slow) >= 4, runs
    assert hedger.hedges >= len(first_on_slow), (hedger.hedges, runs)
    assert sorted(n for replica, n in runs if replica == "leaf-0") == list(range(12)), runs
    assert len(runs) == len(set(runs)), f"a call ran twice on one replica: {runs}"


def test_a_replica_refuses_a_hedge_of_a_call_it_runs_and_runs_nothing():
    """The refusal the root relies on: the hedge is answered ABORTED at once, naming the replica,
    and the function runs once."""
    import dp_fns

    async def run():
        port = rs.free_port()
        replica = Runtime(_leaf_cfg(port, "leaf-0"))
        await replica.start()
        up = Upstream(
            f"ipv4:{rs.HOST}:{port}", label="leaf 0", role_name="leaf-0", retries=0, max_message_bytes=1 << 20,
        )
        dp_fns.runs.clear()
        body = wrap(json.dumps({"slow": "leaf-0", "sleep": 0.5, "n": 7}).encode())
        try:
            first = asyncio.ensure_future(
                up.call(body, time.monotonic() + 5, metadata=((CALL_ID_METADATA_KEY, "root:7"),))
            )
            while not dp_fns.runs:  # the first call runs
                await asyncio.sleep(0.005)
            hedge_sent = time.monotonic()
            with pytest.raises(RoleError) as refused:
                await up.call(
                    body, time.monotonic() + 5,
                    metadata=((CALL_ID_METADATA_KEY, "root:7"), (HEDGE_METADATA_KEY, "1")),
                )
            refused_after = time.monotonic() - hedge_sent
            await first
            return refused.value, refused_after, list(dp_fns.runs)
        finally:
            await up.close()
            await replica.stop()

    error, refused_after, runs = rs.run(run())
    assert error.code == grpc.StatusCode.ABORTED
    assert error.details.get("hedge") == "same-replica" and error.details.get("replica") == "leaf-0"
    assert refused_after < 0.4  # at once, not after the first call's 0.5 s
    assert runs == [("leaf-0", 7)]


def test_idempotent_false_never_hedges():
    from metaparticle_runtime.roles.gather import GatherRoot

    common = dict(
        role="gather", function="dp_fns:slow_on", source_dir=str(FNS), upstreams=("ipv4:127.0.0.1:1",),
        upstream_names=("leaf-0",), upstream_replicas=(3,), hedge_after=0.01,
    )
    from metaparticle_runtime.workers import Workers

    async def run():
        roots = [GatherRoot(RuntimeConfig(**common, idempotent=flag), Workers(1)) for flag in (True, False)]
        result = [root._hedges(0) for root in roots]
        for root in roots:
            await root.upstreams[0].close()
        return result

    assert rs.run(run()) == [True, False]

    class Slow:
        calls = 0

        async def call(self, message, deadline, metadata=None):
            Slow.calls += 1
            await asyncio.sleep(0.1)
            return b"x"

    hedger = Hedger("root", hedge_after=0.01)
    hedger.budget = HedgeBudget(share=1.0)
    assert rs.run(hedger.call(Slow(), b"", time.monotonic() + 1, hedge=False)) == b"x"
    assert Slow.calls == 1 and hedger.hedges == 0


def _series(text: str, name: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(name + "{")]


def test_a_hedging_root_exposes_its_current_hedge_delay():
    """`metaparticle_hedge_delay_seconds` is what the root hedges after now: NaN until 64 leaf
    calls are known, then the p97 of them; `hedge_after` when set; absent when nothing is hedged."""
    common = dict(
        role="gather", function="dp_fns:slow_on", source_dir=str(FNS), upstreams=("ipv4:127.0.0.1:1",),
        upstream_names=("leaf-0",), pattern="ScatterGather", replica="root-0",
    )

    async def run():
        learnt = Runtime(RuntimeConfig(**common, upstream_replicas=(2,)))
        fixed = Runtime(RuntimeConfig(**common, upstream_replicas=(2,), hedge_after=0.25))
        single = Runtime(RuntimeConfig(**common, upstream_replicas=(1,)))
        try:
            before = learnt.metrics.exposition().decode()
            for _ in range(100):
                learnt.role.hedger.latency.add(0.004)
            after = learnt.metrics.exposition().decode()
            return before, after, fixed.metrics.exposition().decode(), single.metrics.exposition().decode()
        finally:
            for runtime in (learnt, fixed, single):
                for up in runtime.role.upstreams:
                    await up.close()

    before, after, fixed, single = rs.run(run())
    name = "metaparticle_hedge_delay_seconds"
    assert [line.rsplit(" ", 1)[1] for line in _series(before, name)] == ["NaN"], before
    assert [float(line.rsplit(" ", 1)[1]) for line in _series(after, name)] == [0.004]
    assert [float(line.rsplit(" ", 1)[1]) for line in _series(fixed, name)] == [0.25]
    assert _series(single, name) == []  # one replica per leaf: nothing to hedge to


def test_idempotent_false_with_hedge_after_is_refused_at_deploy_time():
    from metaparticle_pulumi._topology import Settings

    with pytest.raises(ValueError, match="needs idempotent=True"):
        Settings(hedge_after=0.1, idempotent=False).validate()
    Settings(hedge_after=0, idempotent=False).validate()


def test_latency_samples_come_from_successful_calls_only():
    class Flaky:
        def __init__(self, fail: bool) -> None:
            self.fail = fail

        async def call(self, message, deadline, metadata=None):
            await asyncio.sleep(0.001)
            if self.fail:
                raise RoleError(__import__("grpc").StatusCode.UNAVAILABLE, "down")
            return b"x"

    hedger = Hedger("root", hedge_after=None)

    async def run():
        for _ in range(100):
            with pytest.raises(RoleError):
                await hedger.call(Flaky(True), b"", time.monotonic() + 1, hedge=True)
        failed_only = hedger.latency.quantile(0.5)
        for _ in range(100):
            await hedger.call(Flaky(False), b"", time.monotonic() + 1, hedge=True)
        return failed_only, hedger.latency.quantile(0.5)

    failed_only, after_success = rs.run(run())
    assert failed_only is None  # 100 failures taught it nothing
    assert after_success is not None


def test_one_slow_fan_out_does_not_set_the_delay_of_the_requests_after_it():
    # The 16 leaf calls of one request share the root's loop: a request held up at the root (a
    # pause, a busy CPU) makes all 16 slow at once. Over the last 512 samples (32 such requests)
    # they alone would be the whole top 3% and the delay would jump to that request's latency.
    hedger = Hedger("root", hedge_after=None, fan_out=16)
    for request in range(200):
        for leaf in range(16):
            hedger.latency.add(0.001 + 0.0005 * leaf)  # 1.0 .. 8.5 ms: later leaves wait for earlier ones
    ordinary = hedger.delay()
    for leaf in range(16):
        hedger.latency.add(0.090)
    for request in range(20):
        for leaf in range(16):
            hedger.latency.add(0.001 + 0.0005 * leaf)
    assert ordinary == pytest.approx(0.0085)
    assert hedger.delay() == pytest.approx(0.0085)


def test_a_root_with_a_huge_fan_out_keeps_a_bounded_window():
    # 1000 leaves x 128 requests would be 128,000 samples, each re-sort tens of ms of the root's
    # loop; the window stops at 16384, so 16384 newer samples replace every older one (seen at
    # the next re-sort, at most an eighth of the window later).
    hedger = Hedger("root", hedge_after=None, fan_out=1000)
    for _ in range(16384):
        hedger.latency.add(0.090)
    for _ in range(16384 + 2048):
        hedger.latency.add(0.001)
    assert hedger.delay() == pytest.approx(0.001)


def test_the_delay_is_known_after_64_samples_whatever_the_window():
    hedger = Hedger("root", hedge_after=None, fan_out=64)
    for i in range(63):
        hedger.latency.add(0.002)
    assert hedger.delay() is None
    hedger.latency.add(0.002)
    assert hedger.delay() == pytest.approx(0.002)


class EarlyTimerLoop(asyncio.SelectorEventLoop):
    """asyncio's loop with timers as uvloop sets them: rounded to the nearest millisecond, so a
    0.4 ms timer fires at once and a 1.4 ms one after 1 ms."""

    def call_later(self, delay, callback, *args, context=None):  # type: ignore[override]
        return super().call_later(round(delay * 1000) / 1000, callback, *args, context=context)


def _loops():
    loops = [pytest.param(EarlyTimerLoop, id="early-timers")]
    try:
        import uvloop
    except ImportError:  # a venv without it (MP_EVENT_LOOP=asyncio): the stand-in above covers its timers
        pass
    else:
        loops.append(pytest.param(uvloop.new_event_loop, id="uvloop"))
    return loops


class _Recording:
    """A leaf that records when each call was sent; the first call hangs until cancelled."""

    role_name = "leaf"

    def __init__(self) -> None:
        self.sent: list[float] = []

    async def call(self, message: bytes, deadline: float, metadata=None) -> bytes:
        self.sent.append(time.monotonic())
        if len(self.sent) == 1:
            await asyncio.sleep(deadline - time.monotonic())
        return b"hedge"


@pytest.mark.parametrize("new_loop", _loops())
@pytest.mark.parametrize("delay", [0.0004, 0.0014, 0.0031])
def test_a_hedge_is_never_sent_before_its_delay_even_when_the_loop_fires_timers_early(new_loop, delay):
    """Before, a 0.4 ms delay on uvloop hedged every leaf call at once, and ordinary calls spent the
    whole budget before a straggler came."""
    loop = new_loop()
    try:
        for _ in range(20):
            leaf = _Recording()
            hedger = Hedger("root", hedge_after=delay)
            hedger.budget = HedgeBudget(share=1.0)
            start = time.monotonic()
            reply = loop.run_until_complete(hedger.call(leaf, b"", start + 5, hedge=True))
            assert reply == b"hedge" and len(leaf.sent) == 2
            assert leaf.sent[1] - start >= delay, f"hedged after {(leaf.sent[1] - start) * 1e3:.2f} ms"
    finally:
        loop.close()


class _Scripted:
    """A leaf whose calls answer as scripted, in order: (seconds, reply bytes, or an error code)."""

    role_name = "leaf"

    def __init__(self, *script: tuple[float, Any]) -> None:
        self.script = list(script)
        self.sent: list[bool] = []  # per call: whether it was a hedge
        self.cancelled = 0

    async def call(self, message: bytes, deadline: float, metadata=None) -> bytes:
        number = len(self.sent) + 1
        seconds, outcome = self.script[number - 1]
        self.sent.append(any(key == HEDGE_METADATA_KEY for key, _ in metadata or ()))
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if isinstance(outcome, grpc.StatusCode):
            raise RoleError(outcome, f"call {number} failed")
        return outcome


_SAME_REPLICA = RoleError(grpc.StatusCode.ABORTED, "runs here already", hedge="same-replica")


@pytest.mark.parametrize(
    "script, answer, calls",
    [
        # The first call fails before the delay: its error, and no hedge.
        (((0.001, grpc.StatusCode.INTERNAL),), "call 1 failed", [False]),
        # The first call is slow and fails; the hedge answers: the hedge's answer.
        (((0.15, grpc.StatusCode.UNAVAILABLE), (0.01, b"hedge")), b"hedge", [False, True]),
        # Both fail: the first call's error, whichever failed first.
        (((0.15, grpc.StatusCode.UNAVAILABLE), (0.01, grpc.StatusCode.INTERNAL)), "call 1 failed", [False, True]),
        # The hedge fails at once and the slow first call answers after all: the first call's answer.
        (((0.15, b"first"), (0.01, grpc.StatusCode.INTERNAL)), b"first", [False, True]),
    ],
    ids=["first-fails-early", "hedge-answers", "both-fail", "hedge-fails-first-answers"],
)
def test_a_hedged_call_answers_the_first_answer_else_the_first_calls_error(script, answer, calls):
    leaf = _Scripted(*script)
    hedger = Hedger("root", hedge_after=0.05)
    hedger.budget = HedgeBudget(share=1.0)

    async def run():
        try:
            return await hedger.call(leaf, b"", time.monotonic() + 2, hedge=True)
        except RoleError as err:
            return err.message

    assert rs.run(run()) == answer
    assert leaf.sent == calls


def test_a_hedge_that_finds_no_other_replica_leaves_the_first_call_to_answer():
    """Every hedge lands on the replica running the first call (one replica left): after
    HEDGE_ATTEMPTS refusals the first call's own answer is the answer, late as it is."""
    from metaparticle_runtime.hedging import HEDGE_ATTEMPTS

    class OneReplica(_Scripted):
        async def call(self, message, deadline, metadata=None):
            if any(key == HEDGE_METADATA_KEY for key, _ in metadata or ()):
                self.sent.append(True)
                raise _SAME_REPLICA
            return await super().call(message, deadline, metadata)

    leaf = OneReplica((0.1, b"first"))
    hedger = Hedger("root", hedge_after=0.02)
    hedger.budget = HedgeBudget(share=1.0)
    assert rs.run(hedger.call(leaf, b"", time.monotonic() + 2, hedge=True)) == b"first"
    assert leaf.sent == [False] + [True] * HEDGE_ATTEMPTS and hedger.collisions == HEDGE_ATTEMPTS


def test_cancelling_a_hedged_call_stops_the_first_call_and_the_hedge():
    """What the gather root does to the other leaves when one fails: nothing it started runs on."""
    leaf = _Scripted((5.0, b"first"), (5.0, b"hedge"))
    hedger = Hedger("root", hedge_after=0.02)
    hedger.budget = HedgeBudget(share=1.0)

    async def run():
        outcome = hedger.start(leaf, b"", time.monotonic() + 10, hedge=True)
        while len(leaf.sent) < 2:  # the hedge is on its way
            await asyncio.sleep(0.005)
        outcome.cancel()
        await asyncio.sleep(0.05)
        return outcome.cancelled()

    assert rs.run(run()) is True
    assert leaf.sent == [False, True] and leaf.cancelled == 2
    assert hedger.latency.quantile(0.5) is None  # a cancelled call teaches the delay nothing
