"""Expansion benchmark: one Shard (`bench:pattern` = shard) or ScatterGather (= scatter) of `bench:count`."""

import pulumi

import metaparticle_pulumi as mp
from fns import handler, merge

config = pulumi.Config("bench")
count = config.get_int("count") or 10
if (config.get("pattern") or "shard") == "shard":
    component = mp.Shard("expand", function=handler, shards=count, key="user")
else:
    component = mp.ScatterGather("expand", leaf=handler, gather=merge, leaves=count)
pulumi.export("url", component.url)
