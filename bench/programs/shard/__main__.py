"""Shard benchmark: `bench:shards` (default 3) shards keyed by the JSON field "user"."""

import pulumi

import metaparticle_pulumi as mp
from owner import owner

config = pulumi.Config("bench")
users = mp.Shard("bench-shard", function=owner, shards=config.get_int("shards") or 3, key="user")
pulumi.export("url", users.url)
