"""A Spread and a Shard that echo their request, for the security tests (default limits)."""

import pulumi

import metaparticle_pulumi as mp


def echo(request, ctx):
    return {"echo": request, "replica": ctx.replica}


api = mp.Spread("sec-spread", function=echo, replicas=2)
users = mp.Shard("sec-shard", function=echo, shards=2, key="user")
pulumi.export("url", api.url)
