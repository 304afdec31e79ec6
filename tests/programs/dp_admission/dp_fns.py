"""Functions for the admission tests: they sleep, or hang until released (or a bound passes)."""

import threading
import time

release = threading.Event()


def sleep(request):
    time.sleep(float(request.get("sleep", 0)))
    return {"slept": request.get("sleep", 0)}


def hang(request):
    if request.get("hang"):
        release.wait(float(request.get("hang")))
    return {"ok": True}


#: (replica, request["n"]) of every call run, in order.
runs: list[tuple[str, object]] = []


def slow_on(request, ctx):
    """Sleeps `sleep` seconds on the replica named `slow`; records each call it runs."""
    runs.append((ctx.replica, request.get("n")))
    if ctx.replica == request.get("slow"):
        time.sleep(float(request.get("sleep", 0)))
    return {"replica": ctx.replica}


def fail(request):
    raise ValueError("always")
