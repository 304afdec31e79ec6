"""Shard: 3 shards keyed by request["user"], chosen by consistent hashing.

    metaparticle run examples/shard --request '{"user": "alice"}'
"""

import pulumi

import metaparticle_pulumi as mp


def handler(request, ctx):
    return {"shard": ctx.index, "shards": ctx.count, "user": request["user"], "replica": ctx.replica}


config = pulumi.Config()
users = mp.Shard(
    "users",
    function=handler,
    shards=3,
    key=lambda request: request["user"],
    replicas=config.get_int("replicas") or 1,
)
pulumi.export("url", users.url)
pulumi.export("grpc_url", users.grpc_url)
