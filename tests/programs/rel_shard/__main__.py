"""Shard of 3 for the reliability tests, keyed by request["user"]; REL_REPLICAS replicas per shard."""

import os

import pulumi

import metaparticle_pulumi as mp


def handler(request, ctx):
    return {"shard": ctx.index, "replica": ctx.replica, "pid": os.getpid(), "user": request["user"]}


users = mp.Shard(
    os.environ.get("REL_NAME", "rel-shard"),
    function=handler,
    shards=3,
    key="user",
    replicas=int(os.environ.get("REL_REPLICAS", "1")),
)
pulumi.export("url", users.url)
