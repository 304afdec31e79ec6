"""The runtime's roles. Each answers `call(message, deadline)` with the raw reply bytes."""

from __future__ import annotations

from typing import Protocol

from ..config import RuntimeConfig
from ..upstream import Upstream
from ..workers import Workers


class Role(Protocol):
    """What the server needs of a role."""

    upstreams: list[Upstream]
    #: Whether a call takes a worker thread (admission then also needs a free one).
    uses_threads: bool

    async def call(self, message: bytes, deadline: float) -> bytes:
        """Answers one serialized `Payload` request with a serialized `Payload` reply."""
        ...


def build_role(cfg: RuntimeConfig, workers: Workers) -> Role:
    """The role `cfg` asks for, with its function loaded and its upstreams connected."""
    from .function import FunctionServer
    from .gather import GatherRoot
    from .shard import ShardRouter
    from .spread import SpreadRouter

    if cfg.role == "function" and cfg.function_url:
        from .http_function import HttpFunction

        return HttpFunction(cfg)
    if cfg.role == "function":
        return FunctionServer(cfg, workers)
    if cfg.role == "spread":
        return SpreadRouter(cfg)
    if cfg.role == "shard":
        return ShardRouter(cfg, workers)
    return GatherRoot(cfg, workers)


def make_upstreams(cfg: RuntimeConfig, label: str | None) -> list[Upstream]:
    """One `Upstream` per configured group; `label` ("shard", "leaf") names them in errors."""
    groups = []
    for i, (target, name) in enumerate(zip(cfg.upstreams, cfg.upstream_names)):
        text = f"{label} {i} ({name})" if label else name
        details = {label: i} if label else {}
        groups.append(
            Upstream(
                target,
                label=text,
                role_name=name,
                retries=cfg.retries,
                max_message_bytes=cfg.max_request_bytes,
                max_response_bytes=cfg.max_response_bytes,
                burst=cfg.max_in_flight,
                details=details,
                tls=(cfg.tls_cert, cfg.tls_key, cfg.tls_ca),
            )
        )
    return groups
