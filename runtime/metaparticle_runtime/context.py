"""`Context`: what a user function may know about where it runs."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from .errors import CallError

if TYPE_CHECKING:
    from .client import Client


@dataclass(frozen=True)
class Context:
    """Passed as the second argument to functions that take one."""

    #: The pattern class: Service, Spread, Shard, ScatterGather.
    pattern: str
    #: The pattern instance's name.
    name: str
    #: The role within the pattern: service, replica, shard, leaf, router, root.
    role: str
    #: Shard or leaf index (None elsewhere) and the count of shards or leaves.
    index: int | None
    count: int | None
    #: Identity of the replica that runs the call (process, container or pod name).
    replica: str
    #: time.monotonic() value after which the caller has given up.
    deadline: float = field(default=float("inf"))
    #: Gather functions: the original request; the leaves that answered, in order.
    request: Any = None
    leaves: tuple[int, ...] = ()
    #: The patterns this one `uses`, by the name given there: a client of each entry.
    uses: Mapping[str, "Client"] = field(default_factory=dict, repr=False, compare=False)
    #: The shard's (leaf's, service's) persistent directory with `storage=`, else None. Kept across
    #: restarts; write into it with `write_durably` so an answered write survives a crash.
    storage: Path | None = None

    def time_remaining(self) -> float:
        """Seconds left before the request's deadline."""
        return max(0.0, self.deadline - time.monotonic())

    def call(self, name: str, request: Any) -> Any:
        """Calls the pattern declared as `uses={name: ...}` with `request` (JSON) within what
        remains of this request's deadline; its answer, or `CallError` with its error document."""
        return self._client(name).call(request, timeout=self._remaining(name))

    async def acall(self, name: str, request: Any) -> Any:
        """`call` for async functions: awaits the answer on the running event loop."""
        return await self._client(name).acall(request, timeout=self._remaining(name))

    def _client(self, name: str) -> "Client":
        client = self.uses.get(name)
        if client is None:
            declared = ", ".join(sorted(self.uses)) or "none"
            raise CallError(f"{self.name!r} does not use a pattern called {name!r} (uses= declares: {declared})")
        return client

    def _remaining(self, name: str) -> float:
        remaining = self.time_remaining()
        if remaining <= 0:
            raise CallError(f"deadline exceeded before calling {name!r}", "DEADLINE_EXCEEDED")
        return remaining
