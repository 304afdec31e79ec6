"""Scatter/gather benchmark: `bench:leaves` (default 4) leaves with `bench:replicas` (default 2) each.

Two replicas per leaf let the root hedge a slow leaf call to the other replica.
"""

import pulumi

import metaparticle_pulumi as mp
from leaf import gather, leaf

config = pulumi.Config("bench")
search = mp.ScatterGather(
    "bench-scatter",
    leaf=leaf,
    gather=gather,
    leaves=config.get_int("leaves") or 4,
    replicas=config.get_int("replicas") or 2,
)
pulumi.export("url", search.url)
