"""MP_EVENT_LOOP chooses the runtime's event loop (uvloop unless told otherwise); a value it does not
know is a configuration error."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import rel_support as rs
import router_support as rt
from metaparticle_runtime.config import RuntimeConfig


def test_unknown_event_loop_is_a_configuration_error() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MP_")}
    env.update({"MP_ROLE": "function", "MP_FUNCTION": "json:dumps", "MP_GRPC_PORT": "0", "MP_BIND_HOST": "127.0.0.1", "MP_EVENT_LOOP": "tokio"})
    proc = subprocess.run([sys.executable, "-m", "metaparticle_runtime"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "MP_EVENT_LOOP must be auto, asyncio or uvloop" in proc.stderr


LOOP_FUNCTION = '''
import asyncio

async def which(request, ctx):
    return type(asyncio.get_running_loop()).__module__.split(".")[0]
'''


@pytest.mark.parametrize(("choice", "expected"), [(None, "uvloop"), ("auto", "uvloop"), ("asyncio", "asyncio")])
def test_the_runtime_runs_on_uvloop_unless_told_otherwise(choice, expected, tmp_path) -> None:
    """uvloop is a dependency: the default (auto) runs on it; MP_EVENT_LOOP=asyncio turns it off."""
    (tmp_path / "loopfn.py").write_text(LOOP_FUNCTION)
    with rt.processes() as procs:
        cfg = RuntimeConfig(role="function", function="loopfn:which", source_dir=str(tmp_path), bind_host=rt.HOST,
                            grpc_port=rs.free_port(), role_name="loop", replica="loop-0")
        proc = procs.start(cfg, "python", env={"MP_EVENT_LOOP": choice} if choice else None)
        rt.wait_status(proc)

        async def ask():
            client = rs.GrpcClient(proc.grpc_target)
            try:
                return await client.json(b"{}")
            finally:
                await client.close()

        outcome = rs.run(ask())
    assert outcome.ok and outcome.body == expected, outcome
