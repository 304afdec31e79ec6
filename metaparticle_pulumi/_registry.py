"""Which patterns a program declared, and where its code lives (for `metaparticle run` and tests)."""

from __future__ import annotations

import os
import sys
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .patterns import _Pattern

_lock = threading.Lock()
_declared: list["_Pattern"] = []
_source_dir: str | None = None


def record(pattern: "_Pattern") -> None:
    with _lock:
        _declared.append(pattern)


def declared() -> list["_Pattern"]:
    with _lock:
        return list(_declared)


def reset(source_dir: str | None = None) -> None:
    """Starts a new evaluation; `source_dir` is the program's directory."""
    global _source_dir
    with _lock:
        _declared.clear()
        _source_dir = source_dir


def source_dir() -> str:
    """The program's directory: set by the evaluator, else that of `__main__` (as `pulumi up` runs it)."""
    if _source_dir is not None:
        return _source_dir
    main: Any = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if path and os.path.basename(path) == "__main__.py":
        return os.path.dirname(os.path.abspath(path))
    return os.getcwd()
