"""A Shard of 4 keyed by a function that can be slow (request["key_sleep"] seconds), 0.5 s deadline."""

import time

import pulumi

import metaparticle_pulumi as mp


def handler(request, ctx):
    return {"shard": ctx.index}


def user_key(request):
    time.sleep(float(request.get("key_sleep", 0)))
    return request["user"]


users = mp.Shard("dp-keys", function=handler, shards=4, key=user_key, timeout=0.5)
pulumi.export("url", users.url)
