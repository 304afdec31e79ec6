"""Hello world: one function, one address. `metaparticle run examples/hello_world`."""

import pulumi

import metaparticle_pulumi as mp


def handler(request):
    return {"A": request}


hello = mp.Service("hello", function=handler)
pulumi.export("url", hello.url)
pulumi.export("grpc_url", hello.grpc_url)
