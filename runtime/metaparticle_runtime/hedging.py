"""Hedged leaf calls ("The Tail at Scale"): a slow call is sent again to another replica, the first
answer wins.

- Only for idempotent patterns (the leaf function may run twice), and only when a leaf has a second
  replica.
- Budget: hedges are at most `HEDGE_BUDGET` of the leaf calls of the last `WINDOW_SECONDS` seconds,
  so a slow spell can spend only what recent traffic earned, never a lifetime's savings at once.
- Another replica: both calls carry the same call id; a replica already running that id refuses the
  hedge at once (ABORTED, `"hedge": "same-replica"`) before running anything, and the root re-sends
  it, round robin taking it to the next replica, up to `HEDGE_ATTEMPTS` times.
- The delay follows the latencies of successful calls only (failed and cancelled ones say nothing
  about how long a leaf takes to answer), over `REQUESTS_PER_WINDOW` fan-outs (up to 16384 calls):
  the leaf calls of one request rise and fall together (they share the root's loop), so over fewer
  requests one slow request would fill the whole tail and set the delay of the next dozens.
- The delay is kept on the clock, not left to the event loop's timer: uvloop rounds a timer to the
  nearest millisecond and counts it from the start of the loop's iteration, so a 0.4 ms delay fired
  at once and every leaf call was hedged until ordinary calls had spent the budget.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import math
import time
from collections import deque
from typing import Any, Callable

from . import CALL_ID_METADATA_KEY, HEDGE_METADATA_KEY
from .errors import RoleError
from .upstream import Upstream

HEDGE_BUDGET = 0.05
WINDOW_SECONDS = 10
HEDGE_ATTEMPTS = 10
#: Hedge a leaf call once it is slower than this share of recent leaf calls. Near the p95, but above
#: it: at the p95 ordinary calls alone would spend the whole 5% budget before a straggler came.
HEDGE_QUANTILE = 0.97
#: Latency samples kept: this many requests' worth of leaf calls, at least 512 and at most 16384
#: (sorting that many takes about 2 ms of the root's loop, once every 2048 calls).
REQUESTS_PER_WINDOW = 128
_MIN_SAMPLES = 512
_MAX_SAMPLES = 16384


class LatencyTracker:
    """Rolling latencies of successful leaf calls (the last `samples`), for the hedging delay."""

    def __init__(self, samples: int = _MIN_SAMPLES) -> None:
        self._recent: deque[float] = deque(maxlen=samples)
        self._sorted: list[float] = []
        self._since_sort = 0
        #: Re-sorted after this many new samples: an eighth of the window, and at least 64.
        self._sort_every = max(64, samples // 8)

    def add(self, seconds: float) -> None:
        self._recent.append(seconds)
        self._since_sort += 1
        if self._since_sort >= self._sort_every or len(self._sorted) < 64 <= len(self._recent):
            self._sorted = sorted(self._recent)
            self._since_sort = 0

    def quantile(self, q: float) -> float | None:
        if len(self._sorted) < 64:
            return None
        return self._sorted[min(len(self._sorted) - 1, int(q * len(self._sorted)))]


class HedgeBudget:
    """Hedges allowed: at most `share` of the leaf calls made in the last `window` seconds."""

    def __init__(self, share: float = HEDGE_BUDGET, window: int = WINDOW_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.share = share
        self.window = window
        self.clock = clock
        self._buckets: deque[list[int]] = deque()  # [second, calls, hedges], oldest first

    def _bucket(self) -> list[int]:
        second = int(self.clock())
        while self._buckets and self._buckets[0][0] <= second - self.window:
            self._buckets.popleft()
        if not self._buckets or self._buckets[-1][0] != second:
            self._buckets.append([second, 0, 0])
        return self._buckets[-1]

    def call(self) -> None:
        self._bucket()[1] += 1

    def try_hedge(self) -> bool:
        """Spends one hedge if the window's budget allows it."""
        bucket = self._bucket()
        calls = sum(b[1] for b in self._buckets)
        hedges = sum(b[2] for b in self._buckets)
        if hedges + 1 > self.share * calls:
            return False
        bucket[2] += 1
        return True


class Hedger:
    """Leaf calls of one root: plain, or hedged after a delay within the budget."""

    #: Where hedges are counted (the role's Metrics, set by the server).
    metrics: Any = None

    def __init__(self, name: str, hedge_after: float | None, fan_out: int = 1) -> None:
        """`fan_out`: the leaf calls of one request, for the number of latency samples kept."""
        self.hedge_after = hedge_after
        self.latency = LatencyTracker(min(_MAX_SAMPLES, max(_MIN_SAMPLES, REQUESTS_PER_WINDOW * fan_out)))
        self.budget = HedgeBudget()
        self._ids = (f"{name}:{n}" for n in itertools.count())
        self.hedges = 0
        #: Hedges refused by the replica already running the call (then re-sent).
        self.collisions = 0

    def delay(self) -> float | None:
        """Seconds before a leaf call is hedged; None: not yet (too few samples)."""
        if self.hedge_after is not None:
            return self.hedge_after
        return self.latency.quantile(HEDGE_QUANTILE)

    def start(self, up: Upstream, message: bytes, deadline: float, hedge: bool) -> "asyncio.Future[bytes]":
        """Starts one leaf call; with `hedge`, a second one to another replica if the first is slow.
        The future answers the reply; cancelling it stops every call it started."""
        started = time.monotonic()
        self.budget.call()
        delay = self.delay() if hedge else None
        loop = asyncio.get_running_loop()
        if delay is None:
            outcome: asyncio.Future[bytes] = loop.create_task(up.call(message, deadline))
        else:
            outcome = _Race(self, up, message, deadline, started + delay, loop).outcome
        outcome.add_done_callback(functools.partial(self._learn, started))
        return outcome

    async def call(self, up: Upstream, message: bytes, deadline: float, hedge: bool) -> bytes:
        """`start`, awaited."""
        return await self.start(up, message, deadline, hedge)

    def _learn(self, started: float, outcome: "asyncio.Future[bytes]") -> None:
        """Keeps the latency of a successful call (failed and cancelled ones say nothing about how
        long a leaf takes to answer)."""
        if not outcome.cancelled() and outcome.exception() is None:
            self.latency.add(time.monotonic() - started)

    async def _hedge(self, up: Upstream, message: bytes, deadline: float, call_id: str) -> bytes | None:
        """The hedge, re-sent while it lands on the replica running the first call; None if it
        found no other replica."""
        metadata = ((CALL_ID_METADATA_KEY, call_id), (HEDGE_METADATA_KEY, "1"))
        for _ in range(HEDGE_ATTEMPTS):
            try:
                return await up.call(message, deadline, metadata=metadata)
            except RoleError as err:
                if err.details.get("hedge") != "same-replica":
                    raise
                self.collisions += 1
        return None


def _whole_ms(seconds: float) -> float:
    """`seconds` rounded up to whole milliseconds: a loop that rounds timers to the nearest one
    (uvloop) would round a shorter wait to 0."""
    return math.ceil(seconds * 1000) / 1000


class _Race:
    """One hedged leaf call: the first call, a hedge if it has not answered by `hedge_at`, and the
    outcome (the first answer, else the first call's error). Driven by callbacks: a task for the
    call and one timer, no task waiting on them: a root with a large fan-out runs one per leaf.
    Once the outcome is known, or cancelled by the caller, whatever still runs is stopped."""

    __slots__ = ("hedger", "up", "message", "deadline", "call_id", "hedge_at", "loop", "outcome", "first", "second", "error", "timer")

    def __init__(
        self, hedger: Hedger, up: Upstream, message: bytes, deadline: float, hedge_at: float, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.hedger = hedger
        self.up = up
        self.message = message
        self.deadline = deadline
        self.call_id = next(hedger._ids)
        self.hedge_at = hedge_at
        self.loop = loop
        self.outcome: asyncio.Future[bytes] = loop.create_future()
        self.outcome.add_done_callback(self._close)
        self.first = loop.create_task(up.call(message, deadline, metadata=((CALL_ID_METADATA_KEY, self.call_id),)))
        self.first.add_done_callback(self._first_done)
        self.second: asyncio.Task[bytes | None] | None = None
        self.error: BaseException | None = None
        self.timer: asyncio.TimerHandle | None = loop.call_later(_whole_ms(hedge_at - time.monotonic()), self._due)

    def _due(self) -> None:
        """The delay is up: hedge, within the budget (never before `hedge_at`, even when the loop
        fires the timer early)."""
        self.timer = None
        if self.outcome.done():
            return
        left = self.hedge_at - time.monotonic()
        if left > 0:
            self.timer = self.loop.call_later(_whole_ms(left), self._due)
            return
        hedger = self.hedger
        if not hedger.budget.try_hedge():
            return
        hedger.hedges += 1
        if hedger.metrics is not None:
            hedger.metrics.hedged(self.up.role_name)
        self.second = self.loop.create_task(hedger._hedge(self.up, self.message, self.deadline, self.call_id))
        self.second.add_done_callback(self._second_done)

    def _first_done(self, task: "asyncio.Task[bytes]") -> None:
        if task.cancelled():  # only _close cancels it, once the outcome is known
            if not self.outcome.done():
                self.outcome.cancel()
            return
        exc = task.exception()  # read even when the hedge has won: never an unretrieved error
        if self.outcome.done():
            return
        if exc is None:
            self.outcome.set_result(task.result())
            return
        self.error = exc  # the first call's error is the answer unless the hedge succeeds
        if self.second is None or self.second.done():
            self.outcome.set_exception(exc)

    def _second_done(self, task: "asyncio.Task[bytes | None]") -> None:
        exc = None if task.cancelled() else task.exception()
        if self.outcome.done():
            return
        if exc is None and not task.cancelled() and task.result() is not None:
            self.outcome.set_result(task.result())  # type: ignore[arg-type]
            return
        if self.error is None:
            self.error = exc  # the first call, still running, may yet answer
        if self.first.done() and self.error is not None:
            self.outcome.set_exception(self.error)

    def _close(self, _outcome: "asyncio.Future[bytes]") -> None:
        """The outcome is known, or the caller cancelled it: stop the timer and the calls."""
        if self.timer is not None:
            self.timer.cancel()
        for task in (self.first, self.second):
            if task is not None and not task.done():
                task.cancel()
