"""Functions in any language: one Node.js HTTP server (server.js) as the function of a Spread and
of a Shard. The runtime next to each server turns every call into a `POST /` of its JSON.

Locally each replica runs `node server.js` in this directory; for containers this directory's
Dockerfile is built into the server's image.

    metaparticle run examples/polyglot --request '{"name": "Ada"}'
"""

import pulumi

import metaparticle_pulumi as mp

server = mp.Container(build=".", command=["node", "server.js"])

greeter = mp.Spread("greeter", function=server, replicas=pulumi.Config().get_int("replicas") or 2)
counters = mp.Shard("counters", function=server, shards=3, key="user")

pulumi.export("url", greeter.url)
pulumi.export("grpc_url", greeter.grpc_url)
pulumi.export("counters_url", counters.url)
