"""The threads that run user code (sync functions, gather and key functions), counted for admission.

A call still running at its deadline answers DEADLINE_EXCEEDED then, but Python cannot stop its
thread: that thread counts as lost until the call returns, as does one whose caller was cancelled
(the client gave up) while it ran. Admission never lets more calls in than there are free threads
(`capacity`), so no admitted call waits behind another.

The pool is the least a call needs: a C queue to the threads, one set that a thread and a timed-out
or cancelled caller race on (whoever takes a call out of it first decides whether it runs), and one
wake-up of the event loop for all the calls that finish together. concurrent.futures would add a
Future with its own condition variable per call and a semaphore per thread wake-up.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from typing import Any, Callable


class _Call:
    """One call of user code: what to run, for which waiting coroutine, and how it ended."""

    __slots__ = ("fn", "args", "loop", "waiter", "failed", "value", "done", "lost")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], loop: asyncio.AbstractEventLoop) -> None:
        self.fn = fn
        self.args = args
        self.loop = loop
        self.waiter: asyncio.Future[Any] = loop.create_future()
        self.failed = False
        self.value: Any = None
        #: Set by the thread once the call has returned (before it is handed to the loop).
        self.done = False
        #: Set (on the loop) when the caller stopped waiting (timeout, cancellation) while the call ran.
        self.lost = False


def _expire(waiter: "asyncio.Future[Any]") -> None:
    if not waiter.done():
        waiter.set_exception(asyncio.TimeoutError())


class Workers:
    """The thread pool for user code: up to `threads` threads, started as calls need them."""

    def __init__(self, threads: int, on_change: Callable[[], None] | None = None) -> None:
        if threads < 1:
            raise ValueError(f"a worker pool needs at least one thread, not {threads}")
        self.threads = threads
        #: Threads still running a call that its caller stopped waiting for (deadline passed, or cancelled).
        self.lost = 0
        self.on_change = on_change
        self._queue: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._started: list[threading.Thread] = []
        #: Calls given to the pool and not yet back (lost ones included): the threads they need.
        self._busy = 0
        #: Calls queued that no thread has taken yet; a thread, or a caller giving up, removes one.
        self._unclaimed: set[_Call] = set()
        self._lock = threading.Lock()
        #: Finished calls not yet handed to their loop, by loop; a loop is in it while a hand-over is scheduled.
        self._finished: dict[asyncio.AbstractEventLoop, list[_Call]] = {}
        self._closed = False

    @property
    def capacity(self) -> int:
        """Threads a new call can have: all of them but the lost ones."""
        return self.threads - self.lost

    async def run(self, fn: Callable[..., Any], args: tuple[Any, ...], timeout: float) -> Any:
        """`fn(*args)` on a thread; asyncio.TimeoutError at `timeout`. A call its caller stops waiting
        for (timeout, cancellation) never starts if it has not yet; if it runs, its thread counts
        as lost until it returns."""
        if self._closed:
            raise RuntimeError("the worker pool is shut down")
        loop = asyncio.get_running_loop()
        call = _Call(fn, args, loop)
        self._unclaimed.add(call)
        self._busy += 1
        if len(self._started) < self._busy and len(self._started) < self.threads:
            self._start_thread()
        self._queue.put(call)
        timer = loop.call_later(timeout, _expire, call.waiter)
        try:
            return await call.waiter
        except (asyncio.TimeoutError, asyncio.CancelledError):
            # Not lost if it never started, or if it has returned already (its hand-over is on its
            # way to the loop and finds the caller gone).
            if not self._withdraw(call) and not call.done:
                call.lost = True  # still running: its thread is back when it returns (_hand_over)
                self.lost += 1
                self._changed()
            raise
        finally:
            timer.cancel()
            if not call.lost:
                self._busy -= 1

    def _withdraw(self, call: _Call) -> bool:
        """Takes a call that no thread has started back from the queue; False if one has."""
        try:
            self._unclaimed.remove(call)
        except KeyError:
            return False
        return True

    def _start_thread(self) -> None:
        thread = threading.Thread(target=self._serve, name=f"mp-fn_{len(self._started)}", daemon=True)
        thread.start()
        self._started.append(thread)

    def _serve(self) -> None:
        """A worker thread: runs the calls it takes until the pool shuts down."""
        take = self._queue.get
        unclaimed = self._unclaimed
        while True:
            call = take()
            if call is None:
                return
            if self._closed:
                continue  # left unclaimed: its caller withdraws it at its deadline, not lost
            try:
                unclaimed.remove(call)
            except KeyError:
                continue  # its caller gave up before it started
            try:
                call.value = call.fn(*call.args)
            except StopIteration as exc:  # a future cannot hold it (as in a coroutine, PEP 479)
                call.failed, call.value = True, RuntimeError(f"the function raised StopIteration: {exc}")
            except BaseException as exc:  # noqa: BLE001 - the caller gets whatever user code raised
                call.failed, call.value = True, exc
            call.done = True
            self._finish(call)
            del call

    def _finish(self, call: _Call) -> None:
        """On the thread that ran the call: queues it for its loop, waking the loop only when
        nothing was queued yet (calls finishing together cost one wake-up, not one each)."""
        loop = call.loop
        with self._lock:
            queued = self._finished.get(loop)
            if queued is not None:
                queued.append(call)
                return
            self._finished[loop] = [call]
        try:
            loop.call_soon_threadsafe(self._hand_over, loop)
        except RuntimeError:
            pass  # the loop closed first: the process is stopping

    def _hand_over(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            finished = self._finished.pop(loop, [])
        for call in finished:
            if call.lost:
                self.lost -= 1
                self._busy -= 1
                self._changed()
                continue
            waiter = call.waiter
            if waiter.done():
                continue  # its caller was cancelled meanwhile
            if call.failed:
                waiter.set_exception(call.value)
            else:
                waiter.set_result(call.value)

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def shutdown(self) -> None:
        """Starts no queued call any more and lets idle threads end (running calls finish on their
        daemon threads, which do not keep the process alive)."""
        self._closed = True
        for _ in self._started:
            self._queue.put(None)
