"""Every pattern, for the bad-input tests: functions that echo, raise, and answer what JSON cannot hold.

A request {"mode": ...} picks a misbehaviour: "raise" (the function raises), "unserialisable" (it
returns a set), "bad_request" (it raises mp.BadRequest); the shard key function and the gather
function have modes of their own ("key_raise", "key_set", "key_nan", "key_object", "gather_raise").
"""

import pulumi

import metaparticle_pulumi as mp

LIMIT = 256 * 1024


def handler(request, ctx):
    mode = request.get("mode") if isinstance(request, dict) else None
    if mode == "raise":
        raise RuntimeError("the function failed on purpose")
    if mode == "unserialisable":
        return {"values": {1, 2, 3}}
    if mode == "bad_request":
        raise mp.BadRequest("the function refused this request")
    return {"echo": request, "role": ctx.role, "index": ctx.index}


def key(request):
    mode = request.get("mode")
    if mode == "key_raise":
        raise RuntimeError("the key function failed on purpose")
    if mode == "key_set":
        return {1, 2}
    if mode == "key_nan":
        return float("nan")
    if mode == "key_object":
        return object()
    return request["k"]


def gather(results, ctx):
    if isinstance(ctx.request, dict) and ctx.request.get("mode") == "gather_raise":
        raise ValueError("the gather function failed on purpose")
    return {"results": results, "leaves": list(ctx.leaves)}


mp.Service("bi-service", function=handler)
mp.Spread("bi-spread", function=handler, replicas=2, max_request_bytes=LIMIT)
mp.Shard("bi-shard-path", function=handler, shards=2, key="user.id", max_request_bytes=LIMIT)
mp.Shard("bi-shard-fn", function=handler, shards=2, key=key, max_request_bytes=LIMIT)
mp.ScatterGather("bi-scatter", leaf=handler, gather=gather, leaves=2, max_request_bytes=LIMIT)
mp.ScatterGather("bi-scatter-partial", leaf=handler, gather=gather, leaves=2, on_missing="partial", max_request_bytes=LIMIT)
