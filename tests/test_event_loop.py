"""MP_EVENT_LOOP chooses the runtime's event loop; a value it does not know is a configuration error."""

from __future__ import annotations

import os
import subprocess
import sys


def test_unknown_event_loop_is_a_configuration_error() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MP_")}
    env.update({"MP_ROLE": "function", "MP_FUNCTION": "json:dumps", "MP_GRPC_PORT": "0", "MP_BIND_HOST": "127.0.0.1", "MP_EVENT_LOOP": "tokio"})
    proc = subprocess.run([sys.executable, "-m", "metaparticle_runtime"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "MP_EVENT_LOOP must be auto, asyncio or uvloop" in proc.stderr
