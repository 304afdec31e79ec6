"""How user functions travel from the program that declares them to the runtime that calls them.

A function defined in an importable module of the program's directory travels by reference
(`module:qualname`): the runtime imports it. A function defined in the program's `__main__.py`
(or a lambda, or a closure) travels by value: the deployer serialises it with cloudpickle at
deploy time into a file that is handed to the runtime (written next to the local processes,
baked into the image). The runtime never accepts code over the network: it loads only the
reference or file it was started with.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable

import cloudpickle

from metaparticle_runtime.loader import import_qualname

from ._errors import Error


class FunctionShippingError(Error, ValueError):
    """A function cannot be shipped to the runtime."""


@dataclass(frozen=True)
class FunctionSpec:
    """A user function as the runtime will load it: by reference or by value."""

    #: What the function is for (handler, key, gather, leaf): used in messages.
    purpose: str
    #: `module:qualname` when shipped by reference.
    ref: str | None = None
    #: cloudpickle bytes when shipped by value.
    pickled: bytes | None = None
    #: Python `major.minor` that pickled it (the runtime must match to load by value).
    python: str = f"{sys.version_info.major}.{sys.version_info.minor}"
    #: Readable name for logs and tables.
    display: str = ""

    @property
    def by_value(self) -> bool:
        return self.pickled is not None

    @property
    def digest(self) -> str:
        """Content hash: equal functions give equal digests (so unchanged programs give no diff)."""
        data = self.pickled if self.pickled is not None else (self.ref or "").encode()
        return hashlib.sha256(data).hexdigest()[:16]

    @property
    def file_name(self) -> str:
        return f"{self.purpose}-{self.digest}.pkl"

    def location(self, function_file: str | None) -> dict[str, str]:
        """The runtime settings (`RuntimeConfig` fields) that locate this function."""
        if self.ref is not None:
            return {"function": self.ref}
        if function_file is None:
            raise ValueError(f"{self.display}: a function shipped by value needs a file to load from")
        return {"function_file": function_file, "function_python": self.python}


def ship(fn: Any, purpose: str, source_dir: str | os.PathLike[str]) -> FunctionSpec:
    """Makes a `FunctionSpec` for `fn`, preferring an import reference, else a by-value copy."""
    if not callable(fn):
        raise FunctionShippingError(f"{purpose} must be callable, got {type(fn).__name__} {fn!r}")
    display = getattr(fn, "__qualname__", None) or repr(fn)
    _check_arity(fn, purpose)
    ref = _import_reference(fn, source_dir)
    if ref is not None:
        return FunctionSpec(purpose=purpose, ref=ref, display=ref)
    try:
        pickled = cloudpickle.dumps(fn)
        cloudpickle.loads(pickled)
    except Exception as exc:  # noqa: BLE001 - any pickling failure means the same to the user
        raise FunctionShippingError(
            f"{purpose} {display!r} cannot be shipped to the runtime: {type(exc).__name__}: {exc}. "
            "Define it at module level in a module of the program's directory (it then travels by "
            "reference and is imported by the runtime), or keep open files, locks and sockets out of it."
        ) from None
    return FunctionSpec(purpose=purpose, pickled=pickled, display=display)


def _check_arity(fn: Callable[..., Any], purpose: str) -> None:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    params = [
        p for p in sig.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    required = [p for p in params if p.default is p.empty]
    has_varargs = any(p.kind == p.VAR_POSITIONAL for p in sig.parameters.values())
    # The runtime passes positional arguments only: a required keyword-only one would never be given.
    keyword_only = [p for p in sig.parameters.values() if p.kind == p.KEYWORD_ONLY and p.default is p.empty]
    if len(required) > 2 or (not params and not has_varargs) or keyword_only:
        raise FunctionShippingError(
            f"{purpose} {getattr(fn, '__qualname__', fn)!r} must take (request) or (request, ctx), "
            f"its signature is {sig}"
        )


def _import_reference(fn: Any, source_dir: str | os.PathLike[str]) -> str | None:
    """`module:qualname` if importing that name gives back `fn` and the module is not `__main__`."""
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not module or not qualname or module == "__main__" or "<" in qualname:
        return None
    try:
        obj = import_qualname(module, qualname)
    except Exception:  # noqa: BLE001 - not importable by name: ship by value instead
        return None
    if obj is not fn:
        return None
    mod_file = getattr(sys.modules[module], "__file__", None) or ""
    src = os.path.realpath(os.fspath(source_dir))
    in_program = os.path.realpath(mod_file).startswith(src + os.sep)
    # Modules of the program travel with its directory; installed modules must be installed in the
    # image too, which we cannot promise for arbitrary packages: ship those by value.
    if not in_program and not module.startswith(("metaparticle_pulumi.", "metaparticle_runtime.")):
        return None
    return f"{module}:{qualname}"
