"""Loads the one function a role was deployed with: by import reference or from its by-value file."""

from __future__ import annotations

import importlib
import inspect
import os
import pickle
import sys
from typing import Any, Callable

from .config import RuntimeConfig, ConfigError


def import_qualname(module_name: str, qualname: str) -> Any:
    """The object `qualname` (dotted, e.g. `Class.method`) of module `module_name`, imported."""
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def load_function(cfg: RuntimeConfig) -> Callable[..., Any]:
    """Imports `module:qualname`, or unpickles the deployer's file; never anything from a request."""
    if cfg.source_dir and cfg.source_dir not in sys.path:
        sys.path.insert(0, cfg.source_dir)
    if cfg.function:
        module_name, _, qualname = cfg.function.partition(":")
        if not module_name or not qualname:
            raise ConfigError(f"MP_FUNCTION must be module:qualname, got {cfg.function!r}")
        try:
            return import_qualname(module_name, qualname)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"cannot import {cfg.function}: {exc}") from None
    assert cfg.function_file
    running = f"{sys.version_info.major}.{sys.version_info.minor}"
    if cfg.function_python and cfg.function_python != running:
        raise ConfigError(
            f"{cfg.function_file} was pickled by Python {cfg.function_python} and this runtime runs "
            f"Python {running}: by-value functions need the same minor version"
        )
    if not os.path.isfile(cfg.function_file):
        raise ConfigError(f"function file {cfg.function_file} does not exist")
    with open(cfg.function_file, "rb") as fh:
        try:
            fn = pickle.load(fh)  # the deployer's own file, baked in at deploy time
        except Exception as exc:  # noqa: BLE001
            raise ConfigError(f"cannot load {cfg.function_file}: {type(exc).__name__}: {exc}") from None
    if not callable(fn):
        raise ConfigError(f"{cfg.function_file} holds a {type(fn).__name__}, not a function")
    return fn


def wants_context(fn: Callable[..., Any]) -> bool:
    """Whether `fn` takes a second positional argument (the Context)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    positional = [
        p for p in sig.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    return len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in sig.parameters.values())
