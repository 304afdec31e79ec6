"""The scatter/gather root: fans a request out to every leaf at once, gathers, merges.

Slow leaves are hedged ("The Tail at Scale"): when a leaf has other replicas and has not answered
after about the observed 95th-percentile latency, the same call goes to another replica and the
first answer wins, within a budget of 5% extra leaf calls.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections import deque
from typing import Any

import grpc

from ..config import RuntimeConfig
from ..context import Context
from ..errors import RoleError
from ..loader import load_function, wants_context
from ..payload import decode, encode, unwrap, wrap
from ..upstream import Upstream
from ..workers import Workers
from . import make_upstreams
from .function import invoke

HEDGE_BUDGET = 0.05
#: Hedge a leaf call once it is slower than this share of recent leaf calls. Near the p95, but above
#: it: at the p95 ordinary calls alone would spend the whole 5% budget before a straggler came.
HEDGE_QUANTILE = 0.97
_WINDOW = 512


class LatencyTracker:
    """Rolling leaf-call latencies, for the hedging delay."""

    def __init__(self) -> None:
        self._recent: deque[float] = deque(maxlen=_WINDOW)
        self._sorted: list[float] = []
        self._since_sort = 0

    def add(self, seconds: float) -> None:
        self._recent.append(seconds)
        self._since_sort += 1
        if self._since_sort >= 64:
            self._sorted = sorted(self._recent)
            self._since_sort = 0

    def quantile(self, q: float) -> float | None:
        if len(self._sorted) < 64:
            return None
        return self._sorted[min(len(self._sorted) - 1, int(q * len(self._sorted)))]


class GatherRoot:
    def __init__(self, cfg: RuntimeConfig, workers: Workers) -> None:
        self.cfg = cfg
        self.workers = workers
        self.upstreams = make_upstreams(cfg, "leaf")
        self.gather = load_function(cfg)
        self.with_context = wants_context(self.gather)
        self.uses_threads = not inspect.iscoroutinefunction(self.gather)
        self.latency = LatencyTracker()
        self.leaf_calls = 0
        self.hedged_calls = 0
        self.what = f"gather function {getattr(self.gather, '__qualname__', 'gather')}"

    def _hedge_delay(self, upstream_index: int) -> float | None:
        if self.cfg.hedge_after == 0 or self.cfg.leaf_replicas(upstream_index) < 2:
            return None
        if self.hedged_calls >= HEDGE_BUDGET * self.leaf_calls:
            return None
        if self.cfg.hedge_after is not None:
            return self.cfg.hedge_after
        return self.latency.quantile(HEDGE_QUANTILE)

    async def _leaf(self, index: int, up: Upstream, message: bytes, deadline: float) -> bytes:
        self.leaf_calls += 1
        start = time.monotonic()
        delay = self._hedge_delay(index)
        first = asyncio.ensure_future(up.call(message, deadline))
        try:
            if delay is None:
                return await first
            done, _ = await asyncio.wait({first}, timeout=delay)
            if done:
                return first.result()
            self.hedged_calls += 1
            self.leaf_calls += 1
            pending = {first, asyncio.ensure_future(up.call(message, deadline))}
            error: BaseException | None = None
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task.exception() is None:
                        for other in pending:
                            other.cancel()
                        return task.result()
                    error = error or task.exception()
            assert error is not None
            raise error
        finally:
            if not first.done():
                first.cancel()
            self.latency.add(time.monotonic() - start)

    async def call(self, message: bytes, deadline: float) -> bytes:
        # Bad input is refused here, once, rather than by every leaf (and never reads as a missing leaf).
        request = decode(unwrap(message), max_bytes=self.cfg.max_request_bytes, max_depth=self.cfg.max_json_depth)
        partial = self.cfg.on_missing == "partial"
        leaf_deadline = deadline
        if partial:
            # Keep a little of the deadline for merging what arrived: a slow leaf is reported missing
            # instead of taking the whole request past its deadline.
            leaf_deadline = deadline - min(0.1, 0.1 * max(0.0, deadline - time.monotonic()))
        tasks = [
            asyncio.ensure_future(self._leaf(i, up, message, leaf_deadline)) for i, up in enumerate(self.upstreams)
        ]
        try:
            if not partial:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
                # Read every finished leaf's error (so none is reported as never retrieved).
                failed = [t.exception() for t in tasks if t.done() and not t.cancelled() and t.exception() is not None]
                if failed:
                    raise failed[0]  # the first failing leaf, in leaf order
            else:
                await asyncio.wait(tasks)
        finally:
            for task in tasks:
                if not task.done():
                    task.cancel()

        results: list[Any] = []
        present: list[int] = []
        missing: list[dict[str, Any]] = []
        for i, task in enumerate(tasks):
            exc = task.exception()
            if exc is not None:
                if not isinstance(exc, RoleError):
                    raise exc
                missing.append({"leaf": i, "code": exc.code.name, "error": exc.message})
                continue
            results.append(self._decode_leaf(i, task.result()))
            present.append(i)
        if not present:
            codes = {getattr(task.exception(), "code", None) for task in tasks}
            if len(codes) == 1 and codes <= {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}:
                # Every leaf refused the request or failed on it the same way: that is the answer.
                raise tasks[0].exception()  # type: ignore[misc]
            raise RoleError(grpc.StatusCode.UNAVAILABLE, "no leaf answered", missing=missing)

        args: tuple[Any, ...] = (results,)
        if self.with_context:
            args = (
                results,
                Context(
                    pattern=self.cfg.pattern,
                    name=self.cfg.name,
                    role="root",
                    index=None,
                    count=len(self.upstreams),
                    replica=self.cfg.replica,
                    deadline=deadline,
                    request=request,
                    leaves=tuple(present),
                ),
            )
        merged = await invoke(
            self.gather, args, deadline=deadline, workers=self.workers, what=self.what, details={"role": self.cfg.role_name}
        )
        if missing:
            if isinstance(merged, dict):
                merged = {**merged, "missing": missing}
            else:
                merged = {"result": merged, "missing": missing}
        return wrap(encode(merged, "gather function's result"))

    def _decode_leaf(self, index: int, reply: bytes) -> Any:
        try:
            return decode(unwrap(reply), max_bytes=1 << 62, max_depth=1 << 30)
        except RoleError as exc:
            raise RoleError(grpc.StatusCode.INTERNAL, f"leaf {index} answered invalid JSON: {exc.message}", leaf=index) from None
