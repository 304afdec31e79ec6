"""Which patterns a program declared, and where its code lives (for `metaparticle run` and tests)."""

from __future__ import annotations

import os
import sys
import threading
from typing import TYPE_CHECKING, Any

from ._ports import Ports

if TYPE_CHECKING:
    from ._patterns import _Pattern

_lock = threading.Lock()
_declared: list["_Pattern"] = []
_source_dir: str | None = None
#: The local target's ports for the evaluation in progress, and whether this module made them.
_ports: Ports | None = None
_own_ports = False


def record(pattern: "_Pattern") -> None:
    with _lock:
        _declared.append(pattern)


def declared() -> list["_Pattern"]:
    with _lock:
        return list(_declared)


def reset(source_dir: str | None = None, ports: Ports | None = None) -> None:
    """Starts a new evaluation; `source_dir` is the program's directory, `ports` where the local
    target's ports come from (the caller owns them; without, a set made and closed here)."""
    global _source_dir, _ports, _own_ports
    with _lock:
        if _own_ports and _ports is not None:
            _ports.close()
        _declared.clear()
        _source_dir = source_dir
        _ports, _own_ports = ports, False


def ports() -> Ports:
    """The ports of the evaluation in progress (the local target reserves its ports here)."""
    global _ports, _own_ports
    with _lock:
        if _ports is None:
            _ports, _own_ports = Ports(), True
        return _ports


def source_dir() -> str:
    """The program's directory: set by the evaluator, else that of `__main__` (as `pulumi up` runs it)."""
    if _source_dir is not None:
        return _source_dir
    main: Any = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if path and os.path.basename(path) == "__main__.py":
        return os.path.dirname(os.path.abspath(path))
    return os.getcwd()


def main_first(patterns: list["_Pattern"]) -> list["_Pattern"]:
    """`patterns` with the main one first: the first declared that no other pattern `uses` (the
    one `run --port` and `run --request` reach); the rest in declaration order."""
    used = {id(p) for q in patterns for p in getattr(q, "uses", {}).values()}
    main = next((p for p in patterns if id(p) not in used), None)
    return [main, *(p for p in patterns if p is not main)] if main is not None else list(patterns)
