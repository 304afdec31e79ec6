"""Spread of 3 replicas for the reliability tests: answers which replica (and process) served."""

import os
import time

import pulumi

import metaparticle_pulumi as mp


def handler(request, ctx):
    delay = request.get("sleep", 0) if isinstance(request, dict) else 0
    if isinstance(delay, (int, float)) and delay > 0:
        time.sleep(min(float(delay), 5.0))
    return {"replica": ctx.replica, "pid": os.getpid(), "echo": request}


api = mp.Spread("rel-spread", function=handler, replicas=3)
pulumi.export("url", api.url)
