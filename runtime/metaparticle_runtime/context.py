"""`Context`: what a user function may know about where it runs."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


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

    def time_remaining(self) -> float:
        """Seconds left before the request's deadline."""
        return max(0.0, self.deadline - time.monotonic())
