"""The CLI closes every event loop its commands made before it exits, even one that a callback
left on it by an interrupted Pulumi program run would stop first."""

from __future__ import annotations

import asyncio
import threading

from metaparticle_pulumi._outputs import event_loops_closed


def test_every_loop_made_inside_is_closed_and_its_executor_joined() -> None:
    ran: list[str] = []
    with event_loops_closed():
        loop = asyncio.new_event_loop()
        loop.run_until_complete(loop.run_in_executor(None, lambda: ran.append(threading.current_thread().name)))
    assert loop.is_closed() and len(ran) == 1


def test_a_loop_that_a_leftover_callback_stops_is_still_closed_without_an_error() -> None:
    """An engine operation that fails while the program still registers resources leaves such
    callbacks; the exit printed "RuntimeError: Event loop stopped before Future completed"."""
    with event_loops_closed():
        loop = asyncio.new_event_loop()
        loop.run_until_complete(loop.run_in_executor(None, lambda: None))  # an executor to shut down
        loop.call_soon(loop.stop)
    assert loop.is_closed()


def test_the_previous_policy_comes_back_when_the_block_raises() -> None:
    before = asyncio.get_event_loop_policy()
    try:
        with event_loops_closed():
            asyncio.new_event_loop().call_soon(lambda: None)
            raise SystemExit(1)
    except SystemExit:
        pass
    assert asyncio.get_event_loop_policy() is before
