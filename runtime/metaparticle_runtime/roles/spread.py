"""The spread router: each request goes to the next replica (per request, not per connection)."""

from __future__ import annotations

from ..config import RuntimeConfig
from . import make_upstreams


class SpreadRouter:
    uses_threads = False

    def __init__(self, cfg: RuntimeConfig) -> None:
        self.upstreams = make_upstreams(cfg, None)
        self._replicas = self.upstreams[0]

    async def call(self, message: bytes, deadline: float) -> bytes:
        # The payload bytes travel unchanged: nothing is decoded or re-encoded here.
        return await self._replicas.call(message, deadline)
