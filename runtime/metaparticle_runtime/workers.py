"""The threads that run user code (sync functions, gather and key functions), counted for admission.

A call still running at its deadline answers DEADLINE_EXCEEDED then, but Python cannot stop its
thread: that thread counts as lost until the call returns. Admission never lets more calls in than
there are free threads (`capacity`), so no admitted call waits in the executor's queue.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable


def _expire(waiter: "asyncio.Future[Any]") -> None:
    if not waiter.done():
        waiter.set_exception(asyncio.TimeoutError())


def _settle(waiter: "asyncio.Future[Any]", future: "Future[Any]") -> None:
    """Passes a finished call's outcome to the coroutine waiting for it (unless it gave up)."""
    if waiter.done():
        return
    if future.cancelled():
        waiter.cancel()
        return
    exc = future.exception()
    if exc is not None:
        waiter.set_exception(exc)
    else:
        waiter.set_result(future.result())


class Workers:
    """The thread pool for user code. A finished call reaches its event loop through one queue:
    a thread wakes the loop only when nothing is queued yet, so calls finishing together cost one
    wake-up (the self-pipe write of call_soon_threadsafe), not one each."""

    def __init__(self, threads: int, on_change: Callable[[], None] | None = None) -> None:
        self.threads = threads
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="mp-fn")
        #: Threads still running a call whose deadline passed.
        self.lost = 0
        self.on_change = on_change
        self._lock = threading.Lock()
        #: Finished calls not yet handed to their loop, by loop; a loop is in it while a hand-over is scheduled.
        self._finished: dict[asyncio.AbstractEventLoop, list[tuple["asyncio.Future[Any]", "Future[Any]"]]] = {}

    @property
    def capacity(self) -> int:
        """Threads a new call can have: all of them but the lost ones."""
        return self.threads - self.lost

    async def run(self, fn: Callable[..., Any], args: tuple[Any, ...], timeout: float) -> Any:
        """`fn(*args)` on a thread; asyncio.TimeoutError at `timeout`, the thread then counted lost
        (a call that has not started by then is cancelled instead). Cancelling the caller cancels
        a call that has not started."""
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        future = self.executor.submit(fn, *args)
        future.add_done_callback(lambda done: self._done(loop, waiter, done))
        timer = loop.call_later(timeout, _expire, waiter)
        try:
            return await waiter
        except asyncio.TimeoutError:
            if not future.done() and not future.cancel():
                self._lose(loop, future)
            raise
        except asyncio.CancelledError:
            future.cancel()
            raise
        finally:
            timer.cancel()

    def _done(self, loop: asyncio.AbstractEventLoop, waiter: "asyncio.Future[Any]", future: "Future[Any]") -> None:
        """On the thread that finished the call (or on the loop, for a call cancelled before it ran)."""
        with self._lock:
            queued = self._finished.get(loop)
            if queued is not None:
                queued.append((waiter, future))
                return
            self._finished[loop] = [(waiter, future)]
        try:
            loop.call_soon_threadsafe(self._hand_over, loop)
        except RuntimeError:
            pass  # the loop closed first: the process is stopping

    def _hand_over(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            finished = self._finished.pop(loop, [])
        for waiter, future in finished:
            _settle(waiter, future)

    def _lose(self, loop: asyncio.AbstractEventLoop, future: Future[Any]) -> None:
        self.lost += 1
        self._changed()

        def found(_: Future[Any]) -> None:
            try:
                loop.call_soon_threadsafe(self._found)
            except RuntimeError:
                pass  # the loop closed first: the process is stopping

        future.add_done_callback(found)

    def _found(self) -> None:
        self.lost -= 1
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
