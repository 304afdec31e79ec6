"""examples/polyglot as real containers (the docker target through the Docker SDK, on Docker or
podman): each Node.js server runs from the image built from its directory, in its runtime
container's network namespace, non-root on a read-only root filesystem; calls through the Spread and
the Shard routers answer as on the local target; `delete` leaves nothing of the project behind.

Without an engine these tests skip, unless MP_REQUIRE_CONTAINERS=1 (CI), where they fail.
"""

from __future__ import annotations

import uuid
from typing import Any, Iterator

import pytest
import yaml

from metaparticle_pulumi import _containers as containers
from metaparticle_pulumi._program import evaluate
from metaparticle_runtime.hashing import shard_for

from conftest import post_json
from target_support import copy_program

pytestmark = [pytest.mark.containers, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def deployment(engine: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[containers.Deployment]:
    program = copy_program("polyglot", tmp_path_factory.mktemp("polyglot-containers"))
    project = f"polyglot-{uuid.uuid4().hex[:6]}"
    doc = yaml.safe_load((program / "Pulumi.yaml").read_text())
    doc["name"] = project
    (program / "Pulumi.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    running = containers.Deployment(engine, containers.plan(evaluate(program, target="docker")))
    try:
        running.build()
        running.start()
        pending = running.wait_ready(180)
        assert not pending, f"not serving: {[c.replica for c in pending]}"
        yield running
    finally:
        running.stop(grace=2)
        containers.delete(engine, project, images=True, grace=2)
        assert not containers.leftovers(engine, project), "the project left containers, networks or images behind"


def urls(deployment: containers.Deployment) -> dict[str, str]:
    return {p["name"]: p["url"] for p in deployment.endpoints()["patterns"]}


def test_the_servers_run_non_root_on_a_read_only_root_in_their_runtimes_namespace(deployment):
    servers = [c for c in deployment.plan.containers if c.server]
    assert len(servers) == 5
    for spec in servers:
        container = deployment.containers[spec.name]
        container.reload()
        host = container.attrs["HostConfig"]
        assert host["ReadonlyRootfs"] is True
        assert container.attrs["Config"]["User"] == "10001:10001"
        runtime = deployment.containers[spec.network_of]
        assert host["NetworkMode"] in (f"container:{runtime.id}", f"container:{spec.network_of}")
        code, output = container.exec_run(["node", "-e", "require('fs').writeFileSync('/tmp/x', 'ok')"])
        assert code == 0, output  # its /tmp is a writable tmpfs


def test_the_spread_answers_from_both_node_replicas(deployment):
    url = urls(deployment)["greeter"]
    seen = set()
    for i in range(8):
        reply = post_json(url, {"name": f"c{i}"}, timeout=15)
        assert reply.status == 200, reply.body
        assert reply.body["greeting"] == f"Hello, c{i}!" and reply.body["language"] == "javascript"
        seen.add(reply.body["replica"])
    assert seen == {"greeter-replica-0", "greeter-replica-1"}  # MP_CONTEXT names the replica


def test_the_shard_keeps_each_user_on_its_node_server(deployment):
    url = urls(deployment)["counters"]
    for user in ("alice", "bob", "carol"):
        first, second = (post_json(url, {"user": user}, timeout=15).body for _ in range(2))
        assert first["shard"] == second["shard"] == shard_for(user, 3)
        assert second["count"] == first["count"] + 1


def test_a_4xx_of_the_server_is_a_400_with_its_error_document(deployment):
    reply = post_json(urls(deployment)["greeter"], {"name": ""}, timeout=15)
    assert reply.status == 400 and reply.body["code"] == "INVALID_ARGUMENT"
    assert reply.body["body"] == {"error": "name must be a non-empty string"}
