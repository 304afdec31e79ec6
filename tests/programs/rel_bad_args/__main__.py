"""A program that declares a pattern with one invalid argument, chosen by REL_BAD_CASE."""

import os
import threading

import metaparticle_pulumi as mp


def handler(request):
    return request


def merge(results):
    return results


_lock = threading.Lock()


def locked(request):
    with _lock:
        return request


case = os.environ["REL_BAD_CASE"]
if case == "negative_replicas":
    mp.Spread("api", function=handler, replicas=-1)
elif case == "zero_shards":
    mp.Shard("users", function=handler, shards=0, key="user")
elif case == "zero_leaves":
    mp.ScatterGather("search", leaf=handler, gather=merge, leaves=0)
elif case == "non_callable":
    mp.Service("hello", function=42)
elif case == "unserialisable":
    mp.Spread("api", function=locked, replicas=2)
elif case == "bad_key":
    mp.Shard("users", function=handler, key=5)
elif case == "bad_on_missing":
    mp.ScatterGather("search", leaf=handler, gather=merge, on_missing="ignore")
elif case == "bad_timeout":
    mp.Service("hello", function=handler, timeout=-1)
elif case == "bad_tls":
    mp.Service("hello", function=handler, tls=("/nonexistent/role.crt", "/nonexistent/role.key", "/nonexistent/ca.crt"))
elif case == "unknown_argument":
    mp.Service("hello", function=handler, replicas=3)
