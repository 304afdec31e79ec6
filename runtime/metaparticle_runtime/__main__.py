"""`python -m metaparticle_runtime`: serve the role described by the MP_* environment variables."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from .config import Config, ConfigError
from .logs import configure
from .server import serve


def main() -> int:
    try:
        cfg = Config.from_env()
    except (ConfigError, ValueError) as exc:
        print(f"metaparticle-runtime: configuration error: {exc}", file=sys.stderr)
        return 2
    configure(cfg.role_name, cfg.replica, os.environ.get("MP_LOG_LEVEL", "INFO"))
    try:
        asyncio.run(serve(cfg))
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
