"""The scatter/gather root: fans a request out to every leaf at once, gathers, merges.

Slow leaves are hedged (see `hedging`): when a leaf has other replicas and has not answered after
about the observed 97th-percentile latency, the same call goes to another replica and the first
answer wins, within a budget of 5% extra leaf calls over a sliding window; never when the pattern
is not idempotent.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any

import grpc

from ..config import RuntimeConfig
from ..client import uses_clients
from ..context import Context
from ..errors import RoleError
from ..hedging import Hedger
from ..loader import load_function, wants_context
from ..payload import decode, encode, unwrap, wrap
from ..workers import Workers
from . import make_upstreams
from .function import invoke


class GatherRoot:
    def __init__(self, cfg: RuntimeConfig, workers: Workers) -> None:
        self.cfg = cfg
        self.workers = workers
        self.upstreams = make_upstreams(cfg, "leaf")
        self.gather = load_function(cfg)
        self.with_context = wants_context(self.gather)
        self.uses = uses_clients(cfg.uses, cfg.tls_files())
        self.uses_threads = not inspect.iscoroutinefunction(self.gather)
        self.hedger = Hedger(cfg.replica, cfg.hedge_after, fan_out=len(self.upstreams))
        self.what = f"gather function {getattr(self.gather, '__qualname__', 'gather')}"

    def _hedges(self, upstream_index: int) -> bool:
        """Whether calls to this leaf may be hedged: idempotent, enabled, a second replica."""
        return self.cfg.idempotent and self.cfg.hedge_after != 0 and self.cfg.leaf_replicas(upstream_index) >= 2

    def hedging(self) -> bool:
        """Whether calls to any leaf may be hedged."""
        return any(self._hedges(i) for i in range(len(self.upstreams)))

    async def call(self, message: bytes, deadline: float) -> bytes:
        # Bad input is refused here, once, rather than by every leaf (and never reads as a missing leaf).
        request = decode(unwrap(message), max_bytes=self.cfg.max_request_bytes, max_depth=self.cfg.max_json_depth)
        partial = self.cfg.on_missing == "partial"
        leaf_deadline = deadline
        if partial:
            # Keep a little of the deadline for merging what arrived: a slow leaf is reported missing
            # instead of taking the whole request past its deadline.
            leaf_deadline = deadline - min(0.1, 0.1 * max(0.0, deadline - time.monotonic()))
        tasks = [self.hedger.start(up, message, leaf_deadline, self._hedges(i)) for i, up in enumerate(self.upstreams)]
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
                    uses=self.uses,
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
        return wrap(
            encode(merged, "gather function's result", max_bytes=self.cfg.max_response_bytes, role=self.cfg.role_name)
        )

    def _decode_leaf(self, index: int, reply: bytes) -> Any:
        try:
            return decode(unwrap(reply), max_bytes=self.cfg.max_response_bytes, max_depth=1 << 30)
        except RoleError as exc:
            raise RoleError(grpc.StatusCode.INTERNAL, f"leaf {index} answered invalid JSON: {exc.message}", leaf=index) from None
