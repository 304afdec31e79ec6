"""Patterns that call patterns: the API's function looks a user up in a Shard and searches a
ScatterGather for what they like, by the names given in `uses=`.

    metaparticle run examples/composition --request '{"user": "alice"}'
"""

import pulumi

import metaparticle_pulumi as mp
from services import api, merge, profile, search_leaf

users = mp.Shard("users", function=profile, shards=2, key="user")
search = mp.ScatterGather("search", leaf=search_leaf, gather=merge, leaves=2)
front = mp.Spread("api", function=api, replicas=2, uses={"users": users, "search": search})

pulumi.export("url", front.url)
pulumi.export("grpc_url", front.grpc_url)
