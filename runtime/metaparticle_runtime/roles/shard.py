"""The shard router: computes the request's key, picks its shard by consistent hash, forwards."""

from __future__ import annotations

from typing import Any

import grpc

from ..config import RuntimeConfig
from ..errors import BadRequest, RoleError
from ..hashing import key_at_path, shard_for
from ..loader import load_function
from ..payload import decode, unwrap
from ..workers import Workers
from . import make_upstreams


class ShardRouter:
    uses_threads = False

    def __init__(self, cfg: RuntimeConfig, workers: Workers) -> None:
        self.cfg = cfg
        self.workers = workers
        self.upstreams = make_upstreams(cfg, "shard")
        self.key_fn = load_function(cfg) if (cfg.function or cfg.function_file) else None

    def key_of(self, request: Any) -> Any:
        """The shard key of a decoded request; INVALID_ARGUMENT naming the field when it has none."""
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
        try:
            return self.key_fn(request)
        except BadRequest as exc:
            raise RoleError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - the key function is user code
            raise RoleError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the shard key function raised {type(exc).__name__}: {exc}",
                type=type(exc).__name__,
            ) from None

    def shard_of(self, request: Any) -> int:
        key = self.key_of(request)
        try:
            return shard_for(key, len(self.upstreams))
        except (TypeError, ValueError) as exc:
            raise RoleError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"shard key {key!r} of type {type(key).__name__} cannot be hashed: {exc}",
            ) from None

    async def call(self, message: bytes, deadline: float) -> bytes:
        request = decode(unwrap(message), max_bytes=self.cfg.max_request_bytes, max_depth=self.cfg.max_json_depth)
        # The router reads the key but forwards the original bytes.
        return await self.upstreams[self.shard_of(request)].call(message, deadline)
