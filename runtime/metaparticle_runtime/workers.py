"""The threads that run user code (sync functions, gather and key functions), counted for admission.

A call still running at its deadline answers DEADLINE_EXCEEDED then, but Python cannot stop its
thread: that thread counts as lost until the call returns. Admission never lets more calls in than
there are free threads (`capacity`), so no admitted call waits in the executor's queue.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable


class Workers:
    def __init__(self, threads: int, on_change: Callable[[], None] | None = None) -> None:
        self.threads = threads
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="mp-fn")
        #: Threads still running a call whose deadline passed.
        self.lost = 0
        self.on_change = on_change

    @property
    def capacity(self) -> int:
        """Threads a new call can have: all of them but the lost ones."""
        return self.threads - self.lost

    async def run(self, fn: Callable[..., Any], args: tuple[Any, ...], timeout: float) -> Any:
        """`fn(*args)` on a thread; asyncio.TimeoutError at `timeout`, the thread then counted lost."""
        loop = asyncio.get_running_loop()
        future = self.executor.submit(fn, *args)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout)
        except asyncio.TimeoutError:
            if not future.done():
                self._lose(loop, future)
            raise

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
