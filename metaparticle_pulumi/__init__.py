"""metaparticle-pulumi: distributed-system patterns as one line of Pulumi code.

    import metaparticle_pulumi as mp
    api = mp.Spread("api", function=handler, replicas=3)
    pulumi.export("url", api.url)

Unit-testing helpers live in `metaparticle_pulumi.testing`, imported by whoever uses them.
"""

from metaparticle_runtime.context import Context
from metaparticle_runtime.errors import BadRequest
from metaparticle_runtime.storage import remove_durably, write_durably

from ._container import Container
from ._errors import Error, StackError
from ._client import CallError, Client
from ._containers import EngineError
from ._functions import FunctionShippingError
from ._patterns import (
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
from ._program import ProgramError

__version__ = "0.1.0"

__all__ = [
    "BadRequest",
    "CallError",
    "Client",
    "Container",
    "Context",
    "EngineError",
    "Error",
    "FunctionShippingError",
    "PatternArgs",
    "PatternError",
    "ProgramError",
    "ScatterGather",
    "ScatterGatherArgs",
    "Service",
    "ServiceArgs",
    "Shard",
    "ShardArgs",
    "Spread",
    "SpreadArgs",
    "StackError",
    "remove_durably",
    "write_durably",
]
