"""A Service, a Shard and a ScatterGather whose entries each decode JSON, for the data-path tests."""

import pulumi

import metaparticle_pulumi as mp


def echo(request):
    return {"n": request.get("n") if isinstance(request, dict) else None}


def gather(results):
    return results[0]


svc = mp.Service("dp-svc", function=echo)
shard = mp.Shard("dp-shard", function=echo, shards=2, key="n")
sg = mp.ScatterGather("dp-sg", leaf=echo, gather=gather, leaves=2, hedge_after=0)
pulumi.export("url", svc.url)
