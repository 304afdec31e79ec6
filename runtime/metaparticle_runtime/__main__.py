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
    sys.exit(main())
