"""The shard router: computes the request's key, picks its shard by consistent hash, forwards.

A key function is user code: it runs on a worker thread (a coroutine on the loop), within the
request's deadline, so a slow one answers 504 instead of stalling every request on the router.
"""

from __future__ import annotations

import asyncio
import inspect
import time

from typing import Any

import grpc

from ..config import RuntimeConfig
from ..errors import RAISED_BY_USER_CODE, BadRequest, RoleError
from ..hashing import key_at_path, shard_for
from ..loader import load_function
from ..payload import decode, unwrap
from ..workers import Workers
from . import make_upstreams
from .function import run_coroutine


class ShardRouter:
    def __init__(self, cfg: RuntimeConfig, workers: Workers) -> None:
        self.cfg = cfg
        self.workers = workers
        self.upstreams = make_upstreams(cfg, "shard")
        self.key_fn = load_function(cfg) if (cfg.function or cfg.function_file) else None
        self.uses_threads = self.key_fn is not None and not inspect.iscoroutinefunction(self.key_fn)

    async def key_of(self, request: Any, deadline: float) -> Any:
        """The shard key of a decoded request; INVALID_ARGUMENT naming the field when it has none,
        DEADLINE_EXCEEDED when the key function does not answer within the deadline."""
        if self.key_fn is None:
            assert self.cfg.key_path
            try:
                return key_at_path(request, self.cfg.key_path)
            except KeyError as exc:
                raise RoleError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"request has no shard key field {exc.args[0]!r} (key path {self.cfg.key_path!r})",
                    field=self.cfg.key_path,
                ) from None
        timeout = deadline - time.monotonic()
        try:
            if timeout <= 0:
                raise asyncio.TimeoutError
            if inspect.iscoroutinefunction(self.key_fn):
                return await run_coroutine(self.key_fn, (request,), deadline)
            return await self.workers.run(self.key_fn, (request,), timeout)
        except asyncio.TimeoutError:
            raise RoleError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                "the shard key function did not finish within the deadline",
                role=self.cfg.role_name,
            ) from None
        except BadRequest as exc:
            raise RoleError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
        except RAISED_BY_USER_CODE as exc:
            raise RoleError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the shard key function raised {type(exc).__name__}: {exc}",
                type=type(exc).__name__,
            ) from None

    def shard_of_key(self, key: Any) -> int:
        try:
            return shard_for(key, len(self.upstreams))
        except (TypeError, ValueError) as exc:
            raise RoleError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"shard key {key!r} of type {type(key).__name__} cannot be hashed: {exc}",
            ) from None

    async def call(self, message: bytes, deadline: float) -> bytes:
        request = decode(unwrap(message), max_bytes=self.cfg.max_request_bytes, max_depth=self.cfg.max_json_depth)
        shard = self.shard_of_key(await self.key_of(request, deadline))
        # The router reads the key but forwards the original bytes.
        return await self.upstreams[shard].call(message, deadline)
