"""The worker threads that run user code (runtime workers.py): each call's own result or exception
reaches its caller however many finish together; a call that never started is not counted as a
lost thread, whether its caller timed out or was cancelled; one still running at its timeout is,
until it returns."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from metaparticle_runtime.workers import Workers

pytestmark = pytest.mark.timeout(60)


async def _lost_threads_once_back(workers: Workers, seconds: float) -> int:
    """Waits up to `seconds` for every lost thread to come back; the lost count then."""
    for _ in range(int(seconds / 0.01)):
        if workers.lost == 0:
            break
        await asyncio.sleep(0.01)
    return workers.lost


def test_results_and_exceptions_reach_their_own_callers() -> None:
    workers = Workers(8)

    def work(i: int) -> int:
        time.sleep(0.001 * (i % 3))
        if i % 7 == 0:
            raise KeyError(i)
        return i * i

    async def run() -> list[object]:
        return await asyncio.gather(*(workers.run(work, (i,), 10.0) for i in range(200)), return_exceptions=True)

    try:
        out = asyncio.run(run())
    finally:
        workers.shutdown()
    for i, value in enumerate(out):
        if i % 7 == 0:
            assert isinstance(value, KeyError) and value.args == (i,)
        else:
            assert value == i * i


def test_a_timeout_counts_a_running_call_as_lost_until_it_returns_and_a_queued_one_not_at_all() -> None:
    workers = Workers(1)
    release = threading.Event()
    ran: list[str] = []

    def block() -> str:
        ran.append("block")
        release.wait(10)
        return "late"

    def queued() -> str:
        ran.append("queued")
        return "never"

    async def run() -> None:
        first = asyncio.ensure_future(workers.run(block, (), 0.2))
        second = asyncio.ensure_future(workers.run(queued, (), 0.1))
        with pytest.raises(asyncio.TimeoutError):
            await second  # its thread was busy: cancelled, never run, not lost
        assert workers.lost == 0
        with pytest.raises(asyncio.TimeoutError):
            await first
        assert workers.lost == 1 and workers.capacity == 0
        release.set()
        assert await _lost_threads_once_back(workers, 2.0) == 0  # found again once it returned
        assert await workers.run(lambda: "next", (), 1.0) == "next"

    try:
        asyncio.run(run())
    finally:
        release.set()
        workers.shutdown()
    assert ran == ["block"]


def test_cancelling_the_caller_cancels_a_call_that_has_not_started() -> None:
    workers = Workers(1)
    release = threading.Event()
    ran: list[str] = []

    async def run() -> None:
        busy = asyncio.ensure_future(workers.run(lambda: release.wait(10), (), 5.0))
        waiting = asyncio.ensure_future(workers.run(lambda: ran.append("ran"), (), 5.0))
        await asyncio.sleep(0.05)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        release.set()
        assert await busy is True
        await asyncio.sleep(0.05)

    try:
        asyncio.run(run())
    finally:
        release.set()
        workers.shutdown()
    assert ran == [] and workers.lost == 0


def test_a_running_call_whose_caller_is_cancelled_counts_as_lost_until_it_returns() -> None:
    """The client gave up, the thread did not: admission must not count it free."""
    workers = Workers(2)
    release = threading.Event()

    async def run() -> tuple[int, int, int]:
        call = asyncio.ensure_future(workers.run(lambda: release.wait(10), (), 5.0))
        await asyncio.sleep(0.05)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        while_running = (workers.lost, workers.capacity)
        release.set()
        return (*while_running, await _lost_threads_once_back(workers, 2.0))

    try:
        lost, capacity, after = asyncio.run(run())
    finally:
        release.set()
        workers.shutdown()
    assert (lost, capacity, after) == (1, 1, 0)


def test_stop_iteration_from_a_function_reaches_its_caller_as_a_runtime_error_and_spoils_no_other_call() -> None:
    """An asyncio future cannot hold StopIteration; calls finishing in the same hand-over still get theirs."""
    workers = Workers(4)

    def work(i: int) -> int:
        if i == 3:
            raise StopIteration("exhausted")
        return i

    async def run() -> list[object]:
        return await asyncio.gather(*(workers.run(work, (i,), 5.0) for i in range(8)), return_exceptions=True)

    try:
        out = asyncio.run(run())
    finally:
        workers.shutdown()
    assert isinstance(out[3], RuntimeError) and "StopIteration" in str(out[3]) and "exhausted" in str(out[3])
    assert [v for i, v in enumerate(out) if i != 3] == [0, 1, 2, 4, 5, 6, 7]


def test_threads_start_as_concurrent_calls_need_them_and_never_more_than_the_pool_has() -> None:
    workers = Workers(3)

    def ident(_: int) -> int:
        return threading.get_ident()

    def together(barrier: threading.Barrier) -> int:
        barrier.wait(5)  # raises BrokenBarrierError unless all parties run at once
        return threading.get_ident()

    async def run() -> tuple[set[int], set[int], set[int]]:
        one_at_a_time = {await workers.run(ident, (i,), 5.0) for i in range(50)}
        barrier = threading.Barrier(3)
        at_once = set(await asyncio.gather(*(workers.run(together, (barrier,), 10.0) for _ in range(3))))
        many = set(await asyncio.gather(*(workers.run(ident, (i,), 5.0) for i in range(30))))
        return one_at_a_time, at_once, many

    try:
        one_at_a_time, at_once, many = asyncio.run(run())
    finally:
        workers.shutdown()
    assert len(one_at_a_time) == 1  # calls one after another reuse one thread
    assert len(at_once) == 3  # three calls at once had three threads at once
    assert many <= at_once  # and no fourth thread was ever started


def test_after_shutdown_no_queued_call_starts_and_no_new_call_is_taken() -> None:
    workers = Workers(1)
    release = threading.Event()
    ran: list[str] = []

    async def run() -> None:
        busy = asyncio.ensure_future(workers.run(lambda: release.wait(10), (), 5.0))
        queued = asyncio.ensure_future(workers.run(lambda: ran.append("queued"), (), 0.5))
        await asyncio.sleep(0.05)
        workers.shutdown()
        release.set()
        assert await busy is True  # a running call finishes
        with pytest.raises(asyncio.TimeoutError):
            await queued
        assert workers.lost == 0  # it never ran: no thread is lost to it
        with pytest.raises(RuntimeError, match="shut down"):
            await workers.run(lambda: ran.append("new"), (), 1.0)

    try:
        asyncio.run(run())
    finally:
        release.set()
    assert ran == []


def test_calls_that_finish_as_their_deadline_passes_leave_no_thread_counted_lost() -> None:
    """Each call here races its own timeout: whichever wins, once every thread is back none counts as lost."""
    workers = Workers(32)

    async def run() -> int:
        for _ in range(25):
            await asyncio.gather(*(workers.run(time.sleep, (0.01,), 0.01) for _ in range(32)), return_exceptions=True)
        return await _lost_threads_once_back(workers, 3.0)

    try:
        lost = asyncio.run(run())
    finally:
        workers.shutdown()
    assert lost == 0 and workers.capacity == 32
