"""One function that takes 50 ms and serves at most 4 requests at once: 80 requests/s sustainable."""

import time

import pulumi

import metaparticle_pulumi as mp


def handler(request):
    time.sleep(0.05)
    return {"ok": True}


svc = mp.Service("rel-overload", function=handler, max_in_flight=4)
pulumi.export("url", svc.url)
