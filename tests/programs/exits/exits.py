"""Functions and shard key functions that raise SystemExit or KeyboardInterrupt themselves
(tests/test_user_exits.py): a bug in a function, which must answer an error, not stop the server."""

import asyncio
import sys


def exits(request):
    sys.exit(request.get("code", 3))


def interrupts(request):
    raise KeyboardInterrupt("pressed nothing")


async def exits_async(request):
    if request.get("wait"):
        await asyncio.sleep(0.01)
    sys.exit(request.get("code", 3))


def echo(request):
    return request


def key_exits(request):
    sys.exit(4)


async def key_exits_async(request):
    await asyncio.sleep(0.01)
    sys.exit(5)
