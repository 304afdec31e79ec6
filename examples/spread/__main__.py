"""Spread: 3 replicas behind a router that balances every request (not every connection).

The replica count is stack config: `pulumi config set replicas 5`.

    metaparticle run examples/spread --request '{"hello": "world"}'
"""

import pulumi

import metaparticle_pulumi as mp


def handler(request, ctx):
    return {"replica": ctx.replica, "echo": request}


api = mp.Spread("api", function=handler, replicas=pulumi.Config().get_int("replicas") or 3)
pulumi.export("url", api.url)
pulumi.export("grpc_url", api.grpc_url)
