"""Pulumi values outside the engine: the event loop Pulumi's runtime schedules on, and Outputs
resolved on it (offline evaluation, the local and Docker SDK appliers, the testing helpers)."""

from __future__ import annotations

import asyncio
import weakref
from contextlib import contextmanager
from typing import Any, Iterator

import pulumi


def event_loop() -> asyncio.AbstractEventLoop:
    """The thread's event loop, which Pulumi's runtime schedules registrations on (made if none)."""
    try:
        return asyncio.get_event_loop()
    except RuntimeError:  # a finished asyncio.run() leaves the thread without one
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        return loop


def resolved(value: Any) -> Any:
    """`value`, or the value of an Output (known once its evaluation has run)."""
    if isinstance(value, pulumi.Output):
        return event_loop().run_until_complete(value.future())
    return value


class _RememberingPolicy(asyncio.DefaultEventLoopPolicy):
    """The default policy, remembering every event loop it makes so they can all be closed."""

    def __init__(self) -> None:
        super().__init__()
        self.loops: "weakref.WeakSet[asyncio.AbstractEventLoop]" = weakref.WeakSet()

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        loop = super().new_event_loop()
        self.loops.add(loop)
        return loop


@contextmanager
def event_loops_closed() -> Iterator[None]:
    """Closes, when the block ends, every event loop made inside it: this thread's and those of
    executor threads. Pulumi's mock monitor registers resources from executor threads and gives
    each an event loop of its own that nothing closes; collected later, such a loop may go after
    its own self-pipe, and Python prints "Exception ignored ... Invalid file descriptor: -1"
    after a command's output."""
    policy = _RememberingPolicy()
    previous = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(policy)
    try:
        yield
    finally:
        for loop in list(policy.loops):
            if not loop.is_running() and not loop.is_closed():
                # Join the executor threads first: their loops are idle once they have stopped.
                _shut_down_executor(loop)
        for loop in list(policy.loops):
            if not loop.is_running() and not loop.is_closed():
                loop.close()
        asyncio.set_event_loop_policy(previous)


def _shut_down_executor(loop: asyncio.AbstractEventLoop) -> None:
    """Joins the loop's executor threads. A callback left on the loop (an engine operation that
    failed while the program still registered resources leaves some) may stop it first: the
    shutdown then goes on until it is done."""
    shutdown = asyncio.ensure_future(loop.shutdown_default_executor(), loop=loop)
    for _ in range(100):  # each stop left on the loop ends one run
        try:
            loop.run_until_complete(shutdown)
            return
        except RuntimeError:
            if shutdown.done():
                raise
    shutdown.cancel()
