"""A function (or shard key function) that calls sys.exit() or raises KeyboardInterrupt answers an
error naming it, like any other exception, and the replica goes on serving: user code cannot stop
the server by raising what Python uses to end a program."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import rel_support as rs
import router_support as rt
from metaparticle_runtime.config import RuntimeConfig
from metaparticle_runtime.server import Runtime

pytestmark = pytest.mark.timeout(60)

FNS = Path(__file__).resolve().parent / "programs" / "exits"
sys.path.insert(0, str(FNS))


def _config(role: str, function: str, **settings) -> RuntimeConfig:
    return RuntimeConfig(role=role, function=f"exits:{function}", source_dir=str(FNS), bind_host=rs.HOST,
                         grpc_port=rs.free_port(), replica="exits-0", drain_seconds=0.0, **settings)


def _in_process(cfg: RuntimeConfig, bodies: list[dict]) -> list[tuple[str, float, object]]:
    async def run():
        runtime = Runtime(cfg)
        try:
            return [await rs.dispatch_json(runtime, body) for body in bodies]
        finally:
            runtime.workers.shutdown()

    return rs.run(run())


@pytest.mark.parametrize(("function", "body", "raised"), [
    ("exits", {"code": 3}, "SystemExit: 3"),
    ("interrupts", {}, "KeyboardInterrupt: pressed nothing"),
    ("exits_async", {"code": 7}, "SystemExit: 7"),
    ("exits_async", {"code": 8, "wait": True}, "SystemExit: 8"),
])
def test_a_function_raising_system_exit_or_keyboard_interrupt_answers_unknown_naming_it(function, body, raised):
    [(code, _, message)] = _in_process(_config("function", function), [body])
    assert code == "UNKNOWN" and f"raised {raised}" in message, message


@pytest.mark.parametrize(("function", "raised"), [("key_exits", "SystemExit: 4"), ("key_exits_async", "SystemExit: 5")])
def test_a_shard_key_function_raising_system_exit_answers_invalid_argument_naming_it(function, raised):
    # The shards are never called: the key is refused first.
    cfg = _config("shard", function, upstreams=("127.0.0.1:9", "127.0.0.1:9"), pattern="Shard")
    [(code, _, message)] = _in_process(cfg, [{"user": "u-1"}])
    assert code == "INVALID_ARGUMENT" and f"the shard key function raised {raised}" in message, message


def test_a_replica_whose_function_called_sys_exit_goes_on_serving():
    with rt.processes() as procs:
        proc = procs.start(_config("function", "exits", role_name="exits"), "python")
        rt.wait_status(proc)

        async def ask():
            client = rs.GrpcClient(proc.grpc_target)
            try:
                return [await client.json(b'{"code": 3}') for _ in range(3)]
            finally:
                await client.close()

        outcomes = rs.run(ask())
        exit_code = proc.popen.poll()
    assert [o.status for o in outcomes] == ["UNKNOWN"] * 3, outcomes
    assert all("raised SystemExit: 3" in o.body["error"] for o in outcomes), outcomes
    assert exit_code is None  # still running after three calls to sys.exit()
