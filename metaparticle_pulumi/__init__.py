"""metaparticle-pulumi: distributed-system patterns as one line of Pulumi code.

    import metaparticle_pulumi as mp
    api = mp.Spread("api", function=handler, replicas=3)
    pulumi.export("url", api.url)
"""

from metaparticle_runtime.context import Context
from metaparticle_runtime.errors import BadRequest

from .patterns import (
    PatternArgs,
    PatternError,
    ScatterGather,
    ScatterGatherArgs,
    Service,
    ServiceArgs,
    Shard,
    ShardArgs,
    Spread,
    SpreadArgs,
)

from . import testing

__version__ = "0.1.0"

__all__ = [
    "BadRequest",
    "Context",
    "PatternArgs",
    "PatternError",
    "ScatterGather",
    "ScatterGatherArgs",
    "Service",
    "ServiceArgs",
    "Shard",
    "ShardArgs",
    "Spread",
    "SpreadArgs",
    "testing",
]
