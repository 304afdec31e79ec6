"""Which program routes: `python -m metaparticle_runtime` hands a Spread router, or a Shard router
keyed by a field path, over to the compiled router named by MP_ROUTER_BINARY (same process, same
environment); every other role, and MP_ROUTER=python, stays in Python."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from metaparticle_pulumi._ports import free_port
from metaparticle_runtime.config import ConfigError, RuntimeConfig

from elf_support import FOREIGN, FOREIGN_MACHINE, HOST, elf

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def fake_router(tmp_path) -> Path:
    """An executable that records what it was started with, in place of the compiled router."""
    script = tmp_path / "metaparticle-router"
    script.write_text(f"#!/bin/sh\necho \"$$ $MP_ROLE $MP_KEY_PATH\" > {tmp_path}/started\nexit 0\n")
    script.chmod(0o755)
    return script


def _start(config: RuntimeConfig) -> subprocess.Popen[str]:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MP_")}, **config.to_env()}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "runtime"), env.get("PYTHONPATH", "")])
    return subprocess.Popen([sys.executable, "-m", "metaparticle_runtime"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize(
    "config",
    [
        RuntimeConfig(role="spread", upstreams=("ipv4:127.0.0.1:1",), upstream_names=("r",)),
        RuntimeConfig(role="shard", upstreams=("ipv4:127.0.0.1:1", "ipv4:127.0.0.1:2"), upstream_names=("a", "b"), key_path="user.id"),
    ],
    ids=["spread", "shard-by-path"],
)
def test_a_router_the_compiled_one_serves_becomes_it_in_the_same_process(config, fake_router):
    from dataclasses import replace

    process = _start(replace(config, router_binary=str(fake_router), grpc_port=0))
    assert process.wait(timeout=30) == 0, process.stderr.read()
    pid, role, *key = (fake_router.parent / "started").read_text().split()
    assert int(pid) == process.pid, "exec'd in place: the supervisor keeps the same process"
    assert role == config.role and key == ([config.key_path] if config.key_path else [])


@pytest.mark.parametrize(
    "config",
    [
        RuntimeConfig(role="shard", upstreams=("ipv4:127.0.0.1:1",), upstream_names=("a",), function="keys:by_user"),
        RuntimeConfig(role="spread", upstreams=("ipv4:127.0.0.1:1",), upstream_names=("r",), router="python"),
    ],
    ids=["shard-with-key-function", "python-asked-for"],
)
def test_other_routers_stay_in_python(config, fake_router):
    from dataclasses import replace

    assert not replace(config, router_binary=str(fake_router)).compiled_router_serves() or config.router == "python"
    process = _start(replace(config, router_binary=str(fake_router), grpc_port=0, bind_host="127.0.0.1"))
    try:
        process.wait(timeout=2)  # Python serves (or, for the missing key module, fails to start)
    except subprocess.TimeoutExpired:
        pass
    finally:
        process.kill()
        process.wait()
    assert not (fake_router.parent / "started").exists(), "handed over to the compiled router"


def test_asking_for_the_compiled_router_where_it_cannot_serve_is_a_configuration_error(tmp_path):
    with pytest.raises(ConfigError, match="MP_ROUTER=go needs MP_ROUTER_BINARY"):
        RuntimeConfig(role="spread", upstreams=("x",), upstream_names=("r",), router="go").validate()
    with pytest.raises(ConfigError, match="MP_ROUTER must be auto, go or python"):
        RuntimeConfig(role="spread", upstreams=("x",), upstream_names=("r",), router="rust").validate()
    missing = RuntimeConfig(role="spread", upstreams=("x",), upstream_names=("r",), router="go", router_binary=str(tmp_path / "nope"))
    process = _start(missing)
    assert process.wait(timeout=30) == 2
    assert "is not an executable file" in process.stderr.read()


@pytest.fixture
def foreign_router(tmp_path) -> tuple[Path, str]:
    """A router built for another CPU than this one, as an image built for one engine's CPU carries
    when it runs on another's."""
    return elf(tmp_path / "metaparticle-router", machine=FOREIGN_MACHINE), FOREIGN


def test_a_router_built_for_another_cpu_is_not_run_and_python_routes_saying_why(foreign_router):
    binary, arch = foreign_router
    port = free_port()
    spread = RuntimeConfig(
        role="spread", upstreams=("ipv4:127.0.0.1:1",), upstream_names=("r",), router_binary=str(binary),
        grpc_port=port, bind_host="127.0.0.1",
    )
    process = _start(spread)
    serving = False
    try:
        deadline = time.monotonic() + 20
        while not serving and time.monotonic() < deadline and process.poll() is None:
            with socket.socket() as probe:
                serving = probe.connect_ex(("127.0.0.1", port)) == 0
            time.sleep(0.05)
        assert process.poll() is None, f"exited {process.returncode}: {process.stderr.read()}"
        assert serving, "the Python router did not open its port"
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    assert f"routing in Python: the compiled router cannot run here: {binary} is built for {arch}, and this machine is {HOST}" in stderr


def test_go_refuses_a_router_built_for_another_cpu_naming_both(foreign_router):
    binary, arch = foreign_router
    spread = RuntimeConfig(
        role="spread", upstreams=("ipv4:127.0.0.1:1",), upstream_names=("r",), router="go", router_binary=str(binary)
    )
    process = _start(spread)
    assert process.wait(timeout=30) == 2
    assert f"MP_ROUTER=go but {binary} is built for {arch}, and this machine is {HOST}" in process.stderr.read()
