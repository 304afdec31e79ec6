"""examples/kv as containers (`run --target docker`): a volume per shard keeps every acknowledged
write across SIGKILL of the shard containers (the engine restarts them), `delete` and a new run;
`delete --volumes` removes the data. Without an engine these tests skip, unless
MP_REQUIRE_CONTAINERS=1 (CI), where they fail."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from metaparticle_pulumi import _containers as containers
from metaparticle_pulumi._containers import EngineError

from conftest import METAPARTICLE, free_port, post_json, wait_until
from target_support import copy_program

pytestmark = [pytest.mark.containers, pytest.mark.timeout(900)]

KEYS = [f"user-{i}" for i in range(20)]


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([METAPARTICLE, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def _run_detached(program: Path, tmp: Path) -> str:
    port = free_port()
    endpoints = tmp / f"endpoints-{uuid.uuid4().hex[:4]}.json"
    done = _cli("run", str(program), "--target", "docker", "--detach", "--port", str(port), "--endpoints-json", str(endpoints))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(endpoints.read_text())["patterns"][0]["url"]


def _read_all(url: str, values: dict[str, Any], timeout: float = 60) -> None:
    missing = dict(values)

    def read() -> bool:
        for key in list(missing):
            try:
                reply = post_json(url, {"op": "get", "key": key}, timeout=5)
            except OSError:
                return False
            if reply.status != 200:
                return False
            assert reply.body["found"] is True and reply.body["value"] == missing[key], reply.body
            del missing[key]
        return True

    assert wait_until(read, timeout, 0.5), f"not readable within {timeout}s: {sorted(missing)}"


def test_kv_containers_keep_every_write_across_sigkill_delete_and_a_new_run(engine: Any, tmp_path: Path) -> None:
    program = copy_program("kv", tmp_path)
    project = f"kv-{uuid.uuid4().hex[:6]}"
    doc = yaml.safe_load((program / "Pulumi.yaml").read_text())
    (program / "Pulumi.yaml").write_text(yaml.safe_dump({**doc, "name": project}, sort_keys=False))
    label = {"label": f"{containers.PROJECT_LABEL}={project}"}
    values = {key: {"n": i} for i, key in enumerate(KEYS)}
    try:
        url = _run_detached(program, tmp_path)
        for key, value in values.items():
            reply = post_json(url, {"op": "put", "key": key, "value": value}, timeout=10)
            assert reply.status == 200 and reply.body["ok"] is True, reply.body
        volumes = sorted(v.name for v in engine.volumes.list(filters=label))
        assert len(volumes) == 3 and all(v.endswith("-data") for v in volumes)
        shards = [c for c in engine.containers.list(filters=label) if "-shard-" in c.name]
        assert len(shards) == 3
        for container in shards:
            # SIGKILL, then started again: podman's API service does not apply the restart policy
            # to a killed container, Docker's would. The same container, the same volume.
            container.kill()
            container.wait(timeout=60)
            container.start()
        _read_all(url, values)

        deleted = _cli("delete", str(program))
        assert deleted.returncode == 0, deleted.stderr
        assert "kept 3 data volumes" in deleted.stderr
        assert sorted(v.name for v in engine.volumes.list(filters=label)) == volumes
        assert not engine.containers.list(all=True, filters=label)

        url = _run_detached(program, tmp_path)
        _read_all(url, values)

        removed = _cli("delete", str(program), "--volumes")
        assert removed.returncode == 0, removed.stderr
        assert all(f"removed volume {v}" in removed.stdout for v in volumes)
        assert not engine.volumes.list(filters=label)
    finally:
        containers.delete(engine, project, images=True, volumes=True, grace=2)
