"""Spread: 3 replicas behind a router that balances every request (not every connection).

    metaparticle run examples/spread --request '{"hello": "world"}'
"""

import pulumi

import metaparticle_pulumi as mp


def handler(request, ctx):
    return {"replica": ctx.replica, "echo": request}


api = mp.Spread("api", function=handler, replicas=3)
pulumi.export("url", api.url)
