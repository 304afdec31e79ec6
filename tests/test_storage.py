"""storage=: the durable write, ctx.storage, what patterns accept, and the local target's data
directories (kept across runs, refused over a changed shard count, removed by `delete --target local`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import metaparticle_pulumi as mp
from metaparticle_pulumi import _state as state
from metaparticle_pulumi._program import evaluate
from metaparticle_runtime import storage as runtime_storage
from metaparticle_runtime.config import ConfigError, RuntimeConfig

from conftest import METAPARTICLE, free_port, write_program


def test_write_durably_replaces_the_file_whole_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    target = tmp_path / "value.json"
    mp.write_durably(target, '{"v": 1}')
    mp.write_durably(target, b'{"v": 2}')
    assert target.read_bytes() == b'{"v": 2}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["value.json"]
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    mp.write_durably(target, "{}")
    assert len(synced) == 2, "the file and its directory are fsynced"


def test_a_failed_durable_write_keeps_the_old_contents(tmp_path, monkeypatch):
    target = tmp_path / "value"
    mp.write_durably(target, "old")

    def broken(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(OSError):
        mp.write_durably(target, "new")
    monkeypatch.undo()
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["value"], "the temporary file is removed"


def test_remove_durably_says_whether_the_file_was_there(tmp_path):
    target = tmp_path / "k"
    target.write_text("x")
    assert mp.remove_durably(target) is True
    assert mp.remove_durably(target) is False
    assert not target.exists()


def test_the_storage_directory_travels_in_the_runtime_config_and_must_be_writable(tmp_path):
    cfg = RuntimeConfig(role="function", function="m:f", storage_dir=str(tmp_path / "d"))
    assert RuntimeConfig.from_env(cfg.to_env()).storage_dir == str(tmp_path / "d")
    assert runtime_storage.prepare(cfg.storage_dir) == tmp_path / "d" and (tmp_path / "d").is_dir()
    with pytest.raises(ConfigError, match="absolute"):
        RuntimeConfig.from_env({**cfg.to_env(), "MP_STORAGE_DIR": "relative"})
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="cannot be created|not a writable directory"):
        runtime_storage.prepare(str(tmp_path / "file" / "d"))


def _shard_program(directory: Path, **options: str) -> Path:
    extra = "".join(f", {k}={v}" for k, v in options.items())
    return write_program(
        directory,
        "import pulumi\nimport metaparticle_pulumi as mp\n"
        "def handler(request, ctx):\n    return {'storage': str(ctx.storage), 'shard': ctx.index}\n"
        f"mp.Shard('kv', function=handler, key='k', target='local'{extra})\n",
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"storage": "True", "replicas": "2"}, "replicas do not share"),
        ({"storage": "'lots'"}, "storage must be True or a volume size"),
        ({"storage": "'0Gi'"}, "storage must be True or a volume size"),
        ({"storage_class": "'fast'"}, "storage_class= needs storage="),
        ({"storage": "True", "storage_class": "'Fast SSD'"}, "storage_class must be the name"),
        ({"storage": "True", "autoscale": "(1, 3, 50)"}, "autoscale"),
    ],
)
def test_storage_options_a_pattern_cannot_keep_safely_are_refused(tmp_path, options, message):
    program = _shard_program(tmp_path / "p", **options)
    with pytest.raises(mp.ProgramError, match=message):
        evaluate(program, target="local")


def test_spread_has_no_storage_its_replicas_would_not_share_it(tmp_path):
    program = write_program(
        tmp_path / "p",
        "import metaparticle_pulumi as mp\nmp.Spread('api', function=lambda r: r, storage=True, target='local')\n",
    )
    with pytest.raises(mp.ProgramError, match="unknown argument.*storage"):
        evaluate(program, target="local")


def test_each_stateful_role_gets_its_directory_under_the_program(tmp_path):
    program = _shard_program(tmp_path / "p", shards="2", storage="True")
    evaluation = evaluate(program, target="local")
    (plan,) = evaluation.plans
    specs = plan.processes(str(tmp_path))
    evaluation.ports.close()
    dirs = {s.role: s.config.storage_dir for s in specs}
    base = program.resolve() / ".metaparticle" / "state" / "kv"
    assert dirs == {"kv-router": None, "kv-shard-0": str(base / "kv-shard-0"), "kv-shard-1": str(base / "kv-shard-1")}
    assert all(Path(d).is_dir() for d in dirs.values() if d)
    assert json.loads((base / "layout.json").read_text()) == {"pattern": "Shard", "shards": 2}


def test_a_changed_shard_count_over_existing_data_is_refused_unless_resharding(tmp_path):
    program = _shard_program(tmp_path / "p", shards="3", storage="True")
    evaluation = evaluate(program, target="local")
    evaluation.plans[0].processes(str(tmp_path))  # what a run does: the data now belongs to 3 shards
    evaluation.ports.close()
    _shard_program(program, shards="4", storage="True")
    with pytest.raises(mp.ProgramError, match="written by 3 shards and it now has 4.*reshard=True"):
        evaluate(program, target="local")
    _shard_program(program, shards="4", storage="True", reshard="True")
    evaluation = evaluate(program, target="local")
    evaluation.plans[0].processes(str(tmp_path))
    evaluation.ports.close()
    assert state.recorded_shards(program.resolve() / ".metaparticle" / "state" / "kv") == 4
    _shard_program(program, shards="4", storage="True")
    evaluate(program, target="local").ports.close()  # the new count is the recorded one now


def test_delete_target_local_removes_the_data_and_only_the_data(tmp_path):
    program = _shard_program(tmp_path / "p", shards="2", storage="True")
    evaluation = evaluate(program, target="local")
    evaluation.plans[0].processes(str(tmp_path))
    evaluation.ports.close()
    build = program / ".metaparticle" / "build"
    build.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([METAPARTICLE, "delete", str(program), "--target", "local"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "removed" in done.stdout and "kv" in done.stdout
    assert not (program / ".metaparticle" / "state").exists() and build.is_dir()
    again = subprocess.run([METAPARTICLE, "delete", str(program), "--target", "local"], capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "no local data" in again.stdout
    wrong = subprocess.run([METAPARTICLE, "delete", str(program), "--target", "local", "--volumes"], capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 2 and "--target docker" in wrong.stderr


_COUNTER = (
    "import pulumi\nimport metaparticle_pulumi as mp\n"
    "def bump(ctx):\n"
    "    path = ctx.storage / 'count'\n"
    "    n = int(path.read_text()) + 1 if path.exists() else 1\n"
    "    mp.write_durably(path, str(n))\n"
    "    return {'n': n, 'dir': ctx.storage.name}\n"
    "def count(request, ctx):\n    return bump(ctx)\n"
    "def gather(results):\n    return results\n"
)


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("mp.Service('counter', function=count, storage=True)", lambda n: {"n": n, "dir": "counter"}),
        (
            "mp.ScatterGather('fan', leaf=count, gather=gather, leaves=2, storage='1Gi')",
            lambda n: [{"n": n, "dir": "fan-leaf-0"}, {"n": n, "dir": "fan-leaf-1"}],
        ),
    ],
)
def test_a_service_and_scatter_gather_leaves_keep_their_data_across_runs(tmp_path, pattern, expected):
    """Each run answers from what the previous run left in ctx.storage (a counter per directory)."""
    program = write_program(tmp_path / "counters", _COUNTER + pattern + "\n")
    for n in (1, 2):
        done = subprocess.run(
            [METAPARTICLE, "run", str(program), "--port", str(free_port()), "--request", "{}"],
            capture_output=True, text=True, timeout=120, cwd=tmp_path,
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        answer = json.loads(done.stdout[min(i for i in (done.stdout.find("{"), done.stdout.find("[")) if i >= 0):])
        assert answer == expected(n)
    assert not (program / ".metaparticle" / "state" / "fan" / "layout.json").exists(), "leaves have no shard-count marker"


def test_a_storage_directory_belongs_to_one_live_process(tmp_path):
    directory = tmp_path / "shard"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"from metaparticle_runtime import storage; storage.prepare({str(directory)!r}); print('held', flush=True); input()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match=rf"in use by pid {holder.pid}"):
            runtime_storage.prepare(str(directory))
    finally:
        holder.kill()
        holder.wait(10)
    assert runtime_storage.prepare(str(directory)) == directory, "a dead holder's lock is gone"
