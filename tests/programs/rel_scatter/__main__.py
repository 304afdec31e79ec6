"""Scatter/gather over 3 leaves for the reliability tests.

REL_ON_MISSING picks on_missing ("fail" or "partial"), REL_TIMEOUT the request deadline. A request
{"slow_leaf": i, "sleep": s} makes leaf i sleep s seconds.
"""

import os
import time

import pulumi

import metaparticle_pulumi as mp


def leaf(request, ctx):
    if request.get("slow_leaf") == ctx.index:
        time.sleep(float(request.get("sleep", 0)))
    return {"leaf": ctx.index, "replica": ctx.replica, "pid": os.getpid()}


def gather(results):
    return {"leaves": [r["leaf"] for r in results], "count": len(results)}


search = mp.ScatterGather(
    os.environ.get("REL_NAME", "rel-sg"),
    leaf=leaf,
    gather=gather,
    leaves=3,
    on_missing=os.environ.get("REL_ON_MISSING", "fail"),
    timeout=float(os.environ.get("REL_TIMEOUT", "1.0")),
    hedge_after=0,
)
pulumi.export("url", search.url)
