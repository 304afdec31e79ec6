"""`python -m metaparticle_runtime`: serve the role described by the MP_* environment variables.

The event loop is uvloop when it is installed (less CPU per routed call: see the router rows of
bench/results/latest.md), else asyncio's own; MP_EVENT_LOOP=asyncio or =uvloop forces one
(default auto).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from typing import Any

from .config import RuntimeConfig, ConfigError
from .envfiles import load_env_dir
from .logs import configure
from .server import serve


def _run(coro: Any, choice: str) -> None:
    """Runs the server coroutine on the chosen event loop (see the module docstring)."""
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                coro.close()
                raise ConfigError("MP_EVENT_LOOP=uvloop but uvloop is not installed") from None
        else:
            uvloop.run(coro)
            return
    asyncio.run(coro)


def main() -> int:
    try:
        cfg = RuntimeConfig.from_env()
    except (ConfigError, ValueError) as exc:
        print(f"metaparticle-runtime: configuration error: {exc}", file=sys.stderr)
        return 2
    configure(cfg.role_name, cfg.replica, cfg.log_level, pattern=cfg.pattern, name=cfg.name)
    if cfg.env_dir:
        # Before the function is imported: module-level reads of os.environ see the values.
        try:
            names = load_env_dir(cfg.env_dir)
        except ConfigError as exc:
            logging.getLogger("metaparticle").error("configuration error: %s", exc)
            return 2
        logging.getLogger("metaparticle").info("loaded %d secret environment variable(s): %s", len(names), ", ".join(names))
    try:
        _run(serve(cfg), cfg.event_loop)
    except ConfigError as exc:
        logging.getLogger("metaparticle").error("configuration error: %s", exc)
        return 2
    except OSError as exc:
        logging.getLogger("metaparticle").error("cannot serve: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    code = main()
    # Every call was answered or timed out during the graceful stop; a user function still running
    # past its deadline on a worker thread must not keep the process alive (the interpreter would
    # join that thread at exit), so exit without waiting for it.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
