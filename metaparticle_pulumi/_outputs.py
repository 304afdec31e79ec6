"""Pulumi values outside the engine: the event loop Pulumi's runtime schedules on, and Outputs
resolved on it (offline evaluation, the local and Docker SDK appliers, the testing helpers)."""

from __future__ import annotations

import asyncio
from typing import Any

import pulumi


def event_loop() -> asyncio.AbstractEventLoop:
    """The thread's event loop, which Pulumi's runtime schedules registrations on (made if none)."""
    try:
        return asyncio.get_event_loop()
    except RuntimeError:  # a finished asyncio.run() leaves the thread without one
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        return loop


def resolved(value: Any) -> Any:
    """`value`, or the value of an Output (known once its evaluation has run)."""
    if isinstance(value, pulumi.Output):
        return event_loop().run_until_complete(value.future())
    return value

