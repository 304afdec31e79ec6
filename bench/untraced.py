"""`python -m bench.untraced`: the runtime with its tracing hooks replaced by no-ops in this process
only (tracing never configured, upstream metadata passed as it is, no span wrapper around dispatch).
The baseline that "tracing off costs nothing measurable" is measured against (bench/tracing_cost.py);
nothing in the runtime reads a flag for it.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Mapping, Optional


def remove_hooks() -> None:
    """Replaces every per-call tracing hook of metaparticle_runtime with a no-op."""
    from metaparticle_runtime import server, tracing

    def configure(cfg: Any, env: Optional[Mapping[str, str]] = None) -> None:
        return None

    def with_trace(metadata: Any = None) -> Any:
        return metadata

    def dispatch(self: Any, message: bytes, deadline: float, carrier: Any = None) -> Any:
        return self._dispatch(message, deadline)  # the coroutine itself: no wrapper frame

    tracing.configure = configure
    tracing.with_trace = with_trace
    tracing.current_trace_id = lambda: None
    server.Runtime.dispatch = dispatch


def main() -> None:
    remove_hooks()
    from metaparticle_runtime.__main__ import main as runtime_main

    code = runtime_main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # as `python -m metaparticle_runtime` does


if __name__ == "__main__":
    main()
