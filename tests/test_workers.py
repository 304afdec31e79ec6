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
        for _ in range(200):
            if workers.lost == 0:
                break
            await asyncio.sleep(0.01)
        assert workers.lost == 0  # found again once it returned
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
