"""`python -m metaparticle_runtime`: serve the role described by the MP_* environment variables.

The event loop is uvloop, a dependency of the runtime and of every image (less CPU per call handed
to a worker thread and per routed call: bench/results/latest.md), or asyncio's own where uvloop is
not installed; MP_EVENT_LOOP=asyncio or =uvloop forces one (default auto). A Spread router or a
Shard router keyed by a field path hands over to the compiled router (runtime/router) when
MP_ROUTER_BINARY names one (MP_ROUTER=python keeps this one).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import sys
from typing import Any

from .config import RuntimeConfig, ConfigError
from .elf import elf_architecture, this_machine
from .envfiles import load_env_dir
from .logs import configure
from .server import serve

_PR_SET_PDEATHSIG = 1


def _run(coro: Any, choice: str) -> int:
    """Runs the server coroutine on the chosen event loop (see the module docstring)."""
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                coro.close()
                raise ConfigError("MP_EVENT_LOOP=uvloop but uvloop is not installed") from None
        else:
            return uvloop.run(coro)
    return asyncio.run(coro)


def _die_with(parent_pid: int) -> bool:
    """Asks the kernel for SIGKILL when `parent_pid` (our parent) dies; False if it already has.

    The supervisor used to arm this in a `preexec_fn`, which makes subprocess fork() the whole
    supervisor: gRPC's fork handlers then ran in the child while the supervisor's gRPC threads
    were busy (health checks), and a few children in a hundred aborted before exec with
    `ev_epoll1_linux.cc ... Check failed: wakeup_fd_->Wakeup().ok()` or `epoll_wait ... Bad file
    descriptor`. Armed here, after exec, the supervisor spawns without forking (vfork/exec)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass  # not Linux: the supervisor stops its children itself
    return os.getppid() == parent_pid


def _compiled_router(cfg: RuntimeConfig) -> tuple[str | None, str | None]:
    """The compiled router (runtime/router) to run instead of this process, when MP_ROUTER and
    MP_ROUTER_BINARY ask for it and it serves the role (see RuntimeConfig.router); else None and,
    when one was named but cannot run here, why.

    An image built for one CPU may run on another (a Docker engine on another machine): a router
    built for another architecture would fail at exec, so under auto this process routes instead."""
    if cfg.router == "python" or not cfg.router_binary or not cfg.compiled_router_serves():
        return None, None
    binary = cfg.router_binary
    if not os.access(binary, os.X_OK):
        if cfg.router == "go":
            raise ConfigError(f"MP_ROUTER=go but {binary} is not an executable file")
        return None, f"{binary} is not an executable file"
    try:
        arch = elf_architecture(binary)
    except OSError:
        arch = None  # executable but not readable: exec alone can tell
    here = this_machine()
    if arch is not None and arch != here:
        why = f"{binary} is built for {arch}, and this machine is {here}"
        if cfg.router == "go":
            raise ConfigError(f"MP_ROUTER=go but {why}")
        return None, why
    return binary, None


def main() -> int:
    try:
        cfg = RuntimeConfig.from_env()
        binary, not_compiled = _compiled_router(cfg)
    except (ConfigError, ValueError) as exc:
        print(f"metaparticle-runtime: configuration error: {exc}", file=sys.stderr)
        return 2
    if binary is not None:
        # Same process, same environment (the whole RuntimeConfig): the supervisor, Docker or the
        # kubelet see no difference but less CPU per routed request.
        os.execv(binary, [binary])
    if cfg.parent_pid is not None and not _die_with(cfg.parent_pid):
        print(f"metaparticle-runtime: supervisor {cfg.parent_pid} is gone; exiting", file=sys.stderr)
        return 1
    configure(cfg.role_name, cfg.replica, cfg.log_level, pattern=cfg.pattern, name=cfg.name)
    if not_compiled:
        logging.getLogger("metaparticle").warning("routing in Python: the compiled router cannot run here: %s", not_compiled)
    if cfg.env_dir:
        # Before the function is imported: module-level reads of os.environ see the values.
        try:
            names = load_env_dir(cfg.env_dir)
        except ConfigError as exc:
            logging.getLogger("metaparticle").error("configuration error: %s", exc)
            return 2
        logging.getLogger("metaparticle").info("loaded %d secret environment variable(s): %s", len(names), ", ".join(names))
    try:
        code = _run(serve(cfg), cfg.event_loop)
    except ConfigError as exc:
        logging.getLogger("metaparticle").error("configuration error: %s", exc)
        return 2
    except OSError as exc:
        logging.getLogger("metaparticle").error("cannot serve: %s", exc)
        return 1
    return code


if __name__ == "__main__":
    code = main()
    # Every call was answered or timed out during the graceful stop; a user function still running
    # past its deadline on a worker thread must not keep the process alive (the interpreter would
    # join that thread at exit), so exit without waiting for it.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
