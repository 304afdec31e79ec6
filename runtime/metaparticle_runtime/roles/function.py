"""The function server: decodes the JSON request, runs the user's function, encodes its result."""

from __future__ import annotations

import asyncio
import inspect
import logging
import types
from typing import Any, Callable, Coroutine, Generator

import grpc

from ..config import RuntimeConfig
from ..client import uses_clients
from ..context import Context
from ..errors import RAISED_BY_USER_CODE, BadRequest, RoleError
from ..loader import load_function, wants_context
from ..payload import decode, encode, unwrap, wrap
from ..storage import prepare as prepare_storage
from ..workers import Workers

log = logging.getLogger("metaparticle.function")

#: asyncio.timeout (Python 3.11+): a deadline for a coroutine run in the caller's own task.
_in_this_task = getattr(asyncio, "timeout", None)

_COMPONENT = {"Service": "service", "Spread": "replica", "Shard": "shard", "ScatterGather": "leaf"}


@types.coroutine
def _resume(coro: Coroutine[Any, Any, Any], waiting_on: Any) -> Generator[Any, Any, Any]:
    """Goes on running a coroutine stepped once by hand (now waiting on `waiting_on`) as part of the
    awaiting task, as `await coro` would have: what the task sends or throws in (a cancellation at
    the deadline) reaches the coroutine where it waits."""
    while True:
        try:
            sent = yield waiting_on
        except BaseException as exc:  # noqa: BLE001 - every exception is the coroutine's to handle
            step, arg = coro.throw, exc
        else:
            step, arg = coro.send, sent
        try:
            waiting_on = step(arg)
        except StopIteration as done:
            return done.value


async def run_coroutine(fn: Callable[..., Any], args: tuple[Any, ...], deadline: float) -> Any:
    """Runs the coroutine function `fn(*args)` in the calling task (no task of its own to schedule
    and switch to; what it raises, SystemExit too, reaches the caller), cancelled where it waits at
    `deadline` (loop time) with asyncio.TimeoutError. Up to its first suspension a coroutine runs
    as plain code, which no timer could stop: one that returns before it ever waits needs none."""
    coro = fn(*args)
    try:
        waiting_on = coro.send(None)
    except StopIteration as done:
        return done.value
    rest = _resume(coro, waiting_on)
    timeout = deadline - asyncio.get_running_loop().time()
    if _in_this_task is None:  # Python 3.10: the rest runs in a task of its own
        return await asyncio.wait_for(rest, timeout)
    async with _in_this_task(timeout):
        return await rest


async def invoke(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    *,
    deadline: float,
    workers: Workers,
    what: str,
    details: dict[str, Any],
    is_coroutine: bool | None = None,
) -> Any:
    """Runs a user function (sync ones on a worker thread) within the deadline, mapping failures.
    `is_coroutine`: whether `fn` is a coroutine function, when the caller knows already."""
    loop = asyncio.get_running_loop()
    timeout = deadline - loop.time()
    if timeout <= 0:
        raise RoleError(grpc.StatusCode.DEADLINE_EXCEEDED, f"deadline exceeded before {what} ran", **details)
    try:
        if inspect.iscoroutinefunction(fn) if is_coroutine is None else is_coroutine:
            return await run_coroutine(fn, args, deadline)
        return await workers.run(fn, args, timeout)
    except asyncio.TimeoutError:
        raise RoleError(
            grpc.StatusCode.DEADLINE_EXCEEDED, f"{what} did not finish within the deadline", **details
        ) from None
    except RoleError:
        raise
    except RAISED_BY_USER_CODE as exc:
        if isinstance(exc, BadRequest):
            raise RoleError(grpc.StatusCode.INVALID_ARGUMENT, str(exc), **details) from None
        log.warning("%s raised %s: %s", what, type(exc).__name__, exc, extra={"fields": details})
        raise RoleError(
            grpc.StatusCode.UNKNOWN,
            f"{what} raised {type(exc).__name__}: {exc}",
            type=type(exc).__name__,
            **details,
        ) from None


class FunctionServer:
    """Serves the user's function (Service, Spread replica, shard, scatter/gather leaf)."""

    upstreams: list = []

    def __init__(self, cfg: RuntimeConfig, workers: Workers) -> None:
        self.cfg = cfg
        self.workers = workers
        self.fn = load_function(cfg)
        #: Sync functions take a thread per call (admission counts them); coroutines run on the loop.
        self.uses_threads = not inspect.iscoroutinefunction(self.fn)
        self.with_context = wants_context(self.fn)
        self.upstreams = []
        component = _COMPONENT.get(cfg.pattern, "service")
        self.details: dict[str, Any] = {"role": cfg.role_name, "replica": cfg.replica}
        if cfg.index is not None:
            self.details[component] = cfg.index
        self._context_fields = dict(
            pattern=cfg.pattern,
            name=cfg.name,
            role=component,
            index=cfg.index,
            count=cfg.count,
            replica=cfg.replica,
            uses=uses_clients(cfg.uses, cfg.tls_files()),
            storage=prepare_storage(cfg.storage_dir) if cfg.storage_dir else None,
        )
        self.what = f"function {getattr(self.fn, '__qualname__', 'function')}"

    async def call(self, message: bytes, deadline: float) -> bytes:
        request = decode(unwrap(message), max_bytes=self.cfg.max_request_bytes, max_depth=self.cfg.max_json_depth)
        args: tuple[Any, ...] = (request,)
        if self.with_context:
            args = (request, Context(deadline=deadline, **self._context_fields))
        result = await invoke(
            self.fn, args, deadline=deadline, workers=self.workers, what=self.what, details=self.details,
            is_coroutine=not self.uses_threads,
        )
        return wrap(encode(result, max_bytes=self.cfg.max_response_bytes, role=self.cfg.role_name))
