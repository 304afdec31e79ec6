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
