"""A Spread whose roles talk mutual TLS, with the certificates in REL_TLS_DIR (made by the test)."""

import os

import pulumi

import metaparticle_pulumi as mp


def echo(request, ctx):
    return {"echo": request, "replica": ctx.replica}


certs = os.environ["REL_TLS_DIR"]
api = mp.Spread(
    "tls-spread",
    function=echo,
    replicas=2,
    tls=(os.path.join(certs, "role.crt"), os.path.join(certs, "role.key"), os.path.join(certs, "ca.crt")),
)
pulumi.export("url", api.url)
