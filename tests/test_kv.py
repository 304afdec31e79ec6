"""examples/kv on the local target: every acknowledged write survives SIGKILL of the shards, a stop
and a new run, and a shard killed in the middle of a stream of writes."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from conftest import post_json, run_program, wait_until
from target_support import copy_program

SHARDS = ("kv-shard-0", "kv-shard-1", "kv-shard-2")
KEYS = [f"user-{i}" for i in range(30)]


def _put(url: str, key: str, value: object) -> bool:
    """Whether the store acknowledged the write."""
    try:
        reply = post_json(url, {"op": "put", "key": key, "value": value}, timeout=5)
    except OSError:
        return False
    return reply.status == 200 and reply.body.get("ok") is True


def _get(url: str, key: str) -> object:
    reply = post_json(url, {"op": "get", "key": key}, timeout=5)
    assert reply.status == 200, reply.body
    return reply.body


def _read_all(url: str, expected: dict[str, object], timeout: float = 30.0) -> None:
    """Every key reads back its value (shards restarting answer once they serve again)."""
    missing = dict(expected)

    def read() -> bool:
        for key in list(missing):
            try:
                body = _get(url, key)
            except (AssertionError, OSError):
                return False
            assert body == {"found": True, "key": key, "value": missing[key], "shard": body["shard"]}, body
            del missing[key]
        return True

    assert wait_until(read, timeout, interval=0.2), f"not readable within {timeout}s: {sorted(missing)}"


@pytest.fixture
def program(tmp_path: Path) -> Path:
    return copy_program("kv", tmp_path)


def test_writes_survive_sigkill_of_every_shard_and_a_new_run(program: Path, tmp_path: Path) -> None:
    values = {key: {"n": i, "tags": ["a", key]} for i, key in enumerate(KEYS)}
    with run_program(program, tmp=tmp_path) as running:
        url = running.url
        for key, value in values.items():
            assert _put(url, key, value), key
        assert post_json(url, {"op": "delete", "key": KEYS[0]}).body["deleted"] is True
        del values[KEYS[0]]
        shards = {_get(url, key)["shard"] for key in values}
        assert shards == {0, 1, 2}, "the keys spread over every shard"
        pids = {role: running.pid_of(running.role_ports(role)[0]) for role in SHARDS}
        assert all(pids.values()), pids
        for pid in pids.values():
            os.kill(pid, signal.SIGKILL)
        assert wait_until(lambda: all(running.pid_of(running.role_ports(r)[0]) not in (None, pids[r]) for r in SHARDS), 30), (
            "the supervisor restarts every killed shard"
        )
        _read_all(url, values)
        assert _get(url, KEYS[0])["found"] is False, "a deletion is durable too"
    data = program / ".metaparticle" / "state" / "kv"
    assert sorted(p.name for p in data.iterdir()) == ["kv-shard-0", "kv-shard-1", "kv-shard-2", "layout.json"]
    run_dir = tmp_path / "second"
    run_dir.mkdir()
    with run_program(program, tmp=run_dir) as again:
        _read_all(again.url, values)


def test_every_acknowledged_write_survives_a_shard_killed_during_a_stream_of_writes(program: Path, tmp_path: Path) -> None:
    acknowledged: dict[str, int] = {}
    with run_program(program, tmp=tmp_path) as running:
        url = running.url
        victim = running.pid_of(running.role_ports("kv-shard-1")[0])
        assert victim
        done = threading.Event()

        def writer() -> None:
            deadline = time.monotonic() + 60
            for i in range(300):
                if time.monotonic() > deadline:
                    break
                key = f"stream-{i}"
                if _put(url, key, i):
                    acknowledged[key] = i
            done.set()

        thread = threading.Thread(target=writer, daemon=True)
        thread.start()
        assert wait_until(lambda: len(acknowledged) >= 60, 30), "writes are acknowledged before the kill"
        os.kill(victim, signal.SIGKILL)
        killed_after = len(acknowledged)
        assert done.wait(90), "the stream of writes ends"
        thread.join(5)
        assert killed_after < 300 and len(acknowledged) > killed_after, "writes went on around the kill"
        _read_all(url, {k: v for k, v in acknowledged.items()})
        assert running.pid_of(running.role_ports("kv-shard-1")[0]) not in (None, victim)
