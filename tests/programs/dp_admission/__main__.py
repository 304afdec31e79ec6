"""A Service of 2 threads whose calls can hang past the 0.5 s deadline (DP_HANG seconds at most)."""

import pulumi

import metaparticle_pulumi as mp
from dp_fns import hang

svc = mp.Service("dp-hang", function=hang, max_in_flight=2, timeout=0.5)
pulumi.export("url", svc.url)
