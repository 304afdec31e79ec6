"""Spread benchmark: `bench:replicas` (default 3) replicas of an echo function behind the router."""

import pulumi

import metaparticle_pulumi as mp
from echo import echo

config = pulumi.Config("bench")
api = mp.Spread("bench-spread", function=echo, replicas=config.get_int("replicas") or 3)
pulumi.export("url", api.url)
