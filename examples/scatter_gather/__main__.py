"""Distributed search: the root fans each query out to 4 leaves and merges their hits.

    metaparticle run examples/scatter_gather --request '{"q": "pulumi"}'
"""

import pulumi

import metaparticle_pulumi as mp
from search import merge, search_leaf

search = mp.ScatterGather("search", leaf=search_leaf, gather=merge, leaves=4)

pulumi.export("url", search.url)
pulumi.export("grpc_url", search.grpc_url)
