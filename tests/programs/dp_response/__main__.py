"""Spreads that answer results of a requested size: one at the default max_response_bytes (16 MiB),
one limited to 2 MiB; and a ScatterGather whose gather function joins its leaves' results."""

import pulumi

import metaparticle_pulumi as mp


def sized(request):
    return {"data": "x" * int(request["bytes"])}


def join(results):
    return {"data": "".join(r["data"] for r in results)}


big = mp.Spread("dp-big", function=sized, replicas=2)
small = mp.Spread("dp-small", function=sized, replicas=1, max_response_bytes=2 * 1024 * 1024)
sg = mp.ScatterGather("dp-join", leaf=sized, gather=join, leaves=2, hedge_after=0)
pulumi.export("url", big.url)
