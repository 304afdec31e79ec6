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

    async def call(self, up: Upstream, message: bytes, deadline: float, hedge: bool) -> bytes:
        """One leaf call; with `hedge`, a second one to another replica if the first is slow."""
        start = time.monotonic()
        self.budget.call()
        delay = self.delay() if hedge else None
        if delay is None:
            reply = await up.call(message, deadline)
            self.latency.add(time.monotonic() - start)
            return reply
        call_id = next(self._ids)
        first = asyncio.ensure_future(up.call(message, deadline, metadata=((CALL_ID_METADATA_KEY, call_id),)))
        pending: set[asyncio.Future[Any]] = {first}
        try:
            done = await _first_within(pending, start + delay)
            if not done and self.budget.try_hedge():
                self.hedges += 1
                if self.metrics is not None:
                    self.metrics.hedged(up.role_name)
                pending.add(asyncio.ensure_future(self._hedge(up, message, deadline, call_id)))
            error: BaseException | None = None
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    exc = task.exception()
                    if exc is None and task.result() is not None:
                        self.latency.add(time.monotonic() - start)
                        return task.result()
                    if exc is not None and (error is None or task is first):
                        error = exc  # the first call's error, if it failed, else the hedge's
            assert error is not None
            raise error
        finally:
            for task in pending:
                task.cancel()

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


async def _first_within(pending: set[asyncio.Future[Any]], until: float) -> set[asyncio.Future[Any]]:
    """The calls of `pending` done by `until` (time.monotonic), waiting no longer; never returns
    empty-handed before `until`, even on a loop whose timers fire early."""
    while True:
        left = until - time.monotonic()
        if left <= 0:
            return set()
        # Whole milliseconds: a loop that rounds to the nearest one would round a shorter wait to 0.
        done, _ = await asyncio.wait(pending, timeout=math.ceil(left * 1000) / 1000)
        if done:
            return done
