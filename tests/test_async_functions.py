"""`async def` functions run in the calling task, on the event loop: one that returns before it ever
waits answers at once; one that waits runs within the request's deadline and is cancelled where it
waits when the deadline (or the caller) stops it; what it raises, before or after waiting, maps to
the same errors as a sync function's. On asyncio's own loop and on uvloop, the runtime's default."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
import uvloop

import rel_support as rs
from metaparticle_runtime.config import RuntimeConfig
from metaparticle_runtime.server import Runtime

pytestmark = pytest.mark.timeout(60)

FNS = Path(__file__).resolve().parent / "programs" / "async_functions"
sys.path.insert(0, str(FNS))  # the runtime loads async_fns from there too: one module, one `seen`
import async_fns  # noqa: E402

LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@pytest.fixture(params=sorted(LOOPS))
def on_loop(request):
    """Runs a coroutine to completion on a new loop of the kind named by the parameter."""

    def run(coro):
        loop = LOOPS[request.param]()
        try:
            return loop.run_until_complete(coro)
        finally:
            loop.close()

    return run


def _runtime(function: str, timeout: float = 5.0) -> Runtime:
    return Runtime(RuntimeConfig(
        role="function", function=f"async_fns:{function}", source_dir=str(FNS), bind_host=rs.HOST,
        grpc_port=rs.free_port(), replica="async-0", drain_seconds=0.0, timeout=timeout,
    ))


def _one(on_loop, function: str, body: dict, timeout: float | None = None) -> tuple[str, float, object]:
    async def run():
        runtime = _runtime(function)
        try:
            return await rs.dispatch_json(runtime, body, timeout)
        finally:
            runtime.workers.shutdown()

    return on_loop(run())


def test_a_coroutine_that_never_waits_answers_its_result(on_loop):
    assert _one(on_loop, "at_once", {"n": [1, 2]})[::2] == ("OK", {"echo": {"n": [1, 2]}})


@pytest.mark.parametrize("times", [1, 5])
def test_a_coroutine_that_waits_answers_after_its_waits(on_loop, times):
    code, took, body = _one(on_loop, "waits", {"sleep": 0.05, "times": times})
    assert (code, body) == ("OK", {"waited": times})
    # uvloop's clock counts whole milliseconds, cached per loop iteration: a 50 ms sleep may end
    # up to a millisecond earlier than time.monotonic() would say.
    assert took >= (0.05 - 0.002) * times


def test_the_code_before_the_first_wait_runs_once(on_loop):
    async_fns.started.clear()
    assert _one(on_loop, "counts_then_waits", {"n": 7})[2] == {"n": 7, "started": 1}
    assert async_fns.started == [7]


def test_a_coroutine_that_yields_to_the_loop_goes_on(on_loop):
    """`asyncio.sleep(0)` suspends without a future to wait on: the call still goes on from there."""
    assert _one(on_loop, "waits", {"sleep": 0, "times": 3})[::2] == ("OK", {"waited": 3})


def test_the_code_after_the_first_wait_runs_in_the_same_task_and_context(on_loop):
    assert _one(on_loop, "same_task_throughout", {})[2] == {"same_task": True, "context": "before the wait"}


def test_a_coroutine_past_its_deadline_answers_deadline_exceeded_then_and_is_cancelled_where_it_waits(on_loop):
    async_fns.seen.clear()
    code, took, message = _one(on_loop, "overruns", {"sleep": 5}, timeout=0.2)
    assert code == "DEADLINE_EXCEEDED" and "did not finish within the deadline" in message
    assert 0.2 <= took < 1.0
    assert async_fns.seen == ["cancelled"]


def test_a_caller_that_gives_up_cancels_the_coroutine_where_it_waits(on_loop):
    async_fns.seen.clear()

    async def run():
        runtime = _runtime("overruns")
        try:
            call = asyncio.ensure_future(rs.dispatch_json(runtime, {"sleep": 5}))
            await asyncio.sleep(0.1)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            return runtime.in_flight
        finally:
            runtime.workers.shutdown()

    assert on_loop(run()) == 0
    assert async_fns.seen == ["cancelled"]


@pytest.mark.parametrize(("function", "kind", "text"), [
    ("raises_at_once", "KeyError", "before any wait"),
    ("raises_after_waiting", "ValueError", "after a wait"),
])
def test_what_a_coroutine_raises_before_or_after_waiting_answers_unknown_naming_it(on_loop, function, kind, text):
    code, _, message = _one(on_loop, function, {})
    assert code == "UNKNOWN"
    assert f"raised {kind}" in message and text in message


def test_bad_request_raised_after_waiting_answers_invalid_argument(on_loop):
    code, _, message = _one(on_loop, "refuses_after_waiting", {})
    assert (code, message) == ("INVALID_ARGUMENT", "size must be a number")
