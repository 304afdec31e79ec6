"""Patterns that misbehave on request: each error status of the runtime can be provoked end to end.

    {"raise": "message"}      the function raises ValueError(message)          -> 500
    {"bad": "message"}        the function raises mp.BadRequest(message)       -> 400
    {"sleep": seconds}        the function sleeps (at most 3 s)                -> 429 for others, 504
    {"slow_leaf": i}          leaf i sleeps 1.5 s, past the 0.5 s deadline     -> 504
    {"fail_leaf": i}          leaf i raises                                    -> 500 naming the leaf
    {"fail_gather": true}     the gather function raises                       -> 500
"""

import time

import pulumi

import metaparticle_pulumi as mp


def echo(request):
    if isinstance(request, dict):
        if "raise" in request:
            raise ValueError(request["raise"])
        if "bad" in request:
            raise mp.BadRequest(request["bad"])
        if "sleep" in request:
            time.sleep(min(float(request["sleep"]), 3.0))
    return {"echo": request}


def whoami(request, ctx):
    if isinstance(request, dict) and "raise" in request:
        raise RuntimeError(request["raise"])
    return {"index": ctx.index, "replica": ctx.replica, "request": request}


def leaf(request, ctx):
    if request.get("slow_leaf") == ctx.index:
        time.sleep(1.5)
    if request.get("fail_leaf") == ctx.index:
        raise KeyError(f"leaf {ctx.index} has no such document")
    return {"leaf": ctx.index}


def gather(results, ctx):
    if ctx.request.get("fail_gather"):
        raise ZeroDivisionError("gather divided by zero")
    return {"leaves": [r["leaf"] for r in results], "answered": list(ctx.leaves)}


echo_service = mp.Service("echo", function=echo, max_request_bytes=2048, max_in_flight=1, timeout=5)
users = mp.Shard("users", function=whoami, shards=2, key="user.id")
search = mp.ScatterGather("search", leaf=leaf, gather=gather, leaves=3, timeout=0.5)
api = mp.Spread("api", function=whoami, replicas=3)

pulumi.export("url", echo_service.url)
