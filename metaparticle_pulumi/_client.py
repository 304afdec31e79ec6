"""Calling a pattern's entry from outside any pattern: `mp.Client` (the runtime's client, one pooled
connection per target) and the one-shot `call` behind `metaparticle call`."""

from __future__ import annotations

import time
import urllib.request
from dataclasses import dataclass
from typing import Any, Callable

from metaparticle_runtime.client import Client

from ._errors import CallError

__all__ = ["Answer", "CallError", "Client", "call", "wait_healthz"]


@dataclass
class Answer:
    status: int | str
    body: Any


def call(url: str, body: bytes, *, timeout: float = 30.0) -> Answer:
    """Sends one JSON request (raw bytes); raises `CallError` for transport failures and error answers."""
    with Client(url, timeout=timeout) as client:
        answer = client.call(body)
    return Answer(200 if url.startswith("http") else "OK", answer)


def wait_healthz(url: str, timeout: float, should_stop: Callable[[], bool] = lambda: False) -> bool:
    """Polls GET `url`/healthz until it answers 200 (the entry sees its whole topology serving)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        if time.monotonic() > deadline or should_stop():
            return False
        time.sleep(0.1)
