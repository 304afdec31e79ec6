"""Coroutine functions for tests/test_async_functions.py: some return before they ever wait, some
wait once or many times, some overrun their deadline or raise before or after waiting."""

import asyncio
import contextvars

from metaparticle_runtime.errors import BadRequest

#: What the overrunning functions saw: "cancelled" when the deadline (or the caller) stopped them.
seen: list[str] = []
step = contextvars.ContextVar("step", default="unset")


async def at_once(request):
    return {"echo": request}


async def waits(request):
    for _ in range(int(request.get("times", 1))):
        await asyncio.sleep(float(request.get("sleep", 0)))
    return {"waited": request.get("times", 1)}


async def overruns(request):
    try:
        await asyncio.sleep(float(request["sleep"]))
    except asyncio.CancelledError:
        seen.append("cancelled")
        raise
    seen.append("finished")
    return {"finished": True}


async def same_task_throughout(request):
    """Whether the code after the first wait runs in the task (and context) the code before it ran in."""
    before = asyncio.current_task()
    step.set("before the wait")
    await asyncio.sleep(0.01)
    return {"same_task": asyncio.current_task() is before, "context": step.get()}


async def raises_at_once(request):
    raise KeyError("before any wait")


async def raises_after_waiting(request):
    await asyncio.sleep(0.01)
    raise ValueError("after a wait")


async def refuses_after_waiting(request):
    await asyncio.sleep(0.01)
    raise BadRequest("size must be a number")


#: Request numbers, appended before the first wait of `counts_then_waits`.
started: list[object] = []


async def counts_then_waits(request):
    started.append(request["n"])
    await asyncio.sleep(0.01)
    return {"n": request["n"], "started": len(started)}
