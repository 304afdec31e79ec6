"""`mp.Container` on the Docker target, offline: each replica's server is a container of its own in
its runtime container's network namespace, hardened as ours unless relaxed, built from `build=`;
the Pulumi applier and the SDK plan run the very same containers."""

from __future__ import annotations

import json

import pytest

from metaparticle_pulumi import testing
from metaparticle_pulumi._containers import plan
from metaparticle_pulumi._program import ProgramError, evaluate

from target_support import copy_program, write_program

CONTAINER = "docker:index/container:Container"


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    return copy_program("polyglot", tmp_path_factory.mktemp("polyglot"))


def env(items) -> dict[str, str]:
    return dict(e.split("=", 1) for e in items)


def test_each_replica_gets_its_server_in_its_network_namespace(program):
    evaluation = evaluate(program, target="docker")
    specs = [c for p in evaluation.patterns for c in p.docker_spec.containers]
    servers = [c for c in specs if c.server]
    assert {c.replica for c in servers} == {
        "greeter-replica-0-function", "greeter-replica-1-function",
        "counters-shard-0-0-function", "counters-shard-1-0-function", "counters-shard-2-0-function",
    }
    runtimes = {c.name: c for c in specs if not c.server}
    for server in servers:
        runtime = runtimes[server.network_of]
        assert server.options["network_mode"] == f"container:{runtime.name}"
        assert env(runtime.options["environment"])["MP_FUNCTION_URL"] == "http://127.0.0.1:8080"
        server_env = env(server.options["environment"])
        assert server_env["PORT"] == "8080"
        assert json.loads(server_env["MP_CONTEXT"])["replica"] == runtime.replica
        assert server.options["command"] == ["node", "server.js"]
        for key in ("user", "read_only", "tmpfs", "cap_drop", "security_opt"):
            assert server.options[key] == runtime.options[key], key
        assert "ports" not in server.options and "hostname" not in server.options
        assert server.image.startswith("polyglot-") and "-function:" in server.image
        assert specs.index(server) > specs.index(runtime)  # its namespace exists first


def test_the_sdk_plan_builds_the_servers_image_from_its_directory_and_keeps_it(program):
    the_plan = plan(evaluate(program, target="docker"))
    function_images = [i for i in the_plan.images if "-function:" in i.name]
    assert {i.context for i in function_images} == {program}
    assert all(i.build_args == {} for i in function_images)
    servers = [c for c in the_plan.containers if c.server]
    assert servers and all(c.image in {i.name for i in function_images} for c in servers)
    assert all(c.labels["io.metaparticle.project"] == the_plan.project for c in servers)


def test_the_pulumi_applier_creates_the_same_server_containers(program):
    stack = testing.evaluate(program, "docker")
    created = {r.name: r.inputs for r in stack.resources(type=CONTAINER)}
    servers = {n: c for n, c in created.items() if n.endswith("-function")}
    assert set(servers) == {
        "greeter-replica-0-function", "greeter-replica-1-function",
        "counters-shard-0-0-function", "counters-shard-1-0-function", "counters-shard-2-0-function",
    }
    server = servers["greeter-replica-1-function"]
    runtime = created["greeter-replica-1"]
    assert server["networkMode"] == f"container:{runtime['name']}"
    assert server["readOnly"] is True and server["capabilities"] == {"drops": ["ALL"]}
    assert "networksAdvanced" not in server
    images = [r.inputs["imageName"] for r in stack.resources(type="docker:index/image:Image")]
    assert any("-function:" in i for i in images) and server["image"] in images


LOCKED_DOWN = {
    "user": "10001:10001",
    "read_only": True,
    "tmpfs": {"/tmp": "rw,noexec,nosuid,size=64m"},
    "cap_drop": ["ALL"],
    "security_opt": ["no-new-privileges:true"],
    "restart_policy": {"Name": "unless-stopped"},
    "mem_limit": "256m",
}


def test_every_kind_of_container_runs_locked_down_in_both_appliers(program):
    """The routers' namespace holder, the routers, the runtimes and the users' servers alike."""
    stack = testing.evaluate(program, "docker")
    specs = [c for p in stack.patterns for c in p.docker_spec.containers]
    kinds = {"holder" if c.holder else "server" if c.server else "joins" if c.network_of else "own" for c in specs}
    assert kinds == {"holder", "server", "joins", "own"}
    created = {r.inputs["name"]: r.inputs for r in stack.resources(type=CONTAINER)}
    assert set(created) == {c.name for c in specs}
    for spec in specs:
        assert {k: spec.options.get(k) for k in LOCKED_DOWN} == LOCKED_DOWN, spec.name
        inputs = created[spec.name]
        assert (inputs["user"], inputs["readOnly"], inputs["tmpfs"]) == ("10001:10001", True, LOCKED_DOWN["tmpfs"])
        assert inputs["capabilities"] == {"drops": ["ALL"]} and inputs["securityOpts"] == ["no-new-privileges:true"]
        assert (inputs["restart"], inputs["memory"]) == ("unless-stopped", 256), spec.name


RELAXED = """
import pulumi
import metaparticle_pulumi as mp
fn = mp.Container(image="node:20-slim", command="node /srv/s.js", read_only_root_filesystem=False, run_as_user=1000,
                  resources={"limits": {"memory": "512Mi"}})
mp.Spread("s", function=fn, replicas=1, env=ENV)
"""


def test_a_relaxed_container_and_a_prebuilt_image(tmp_path):
    program = write_program(tmp_path / "relaxed", RELAXED.replace("ENV", "{'PLAIN': 'yes'}"))
    specs = evaluate(program, target="docker").patterns[0].docker_spec.containers
    (server,) = [c for c in specs if c.server]
    assert server.image == "node:20-slim"
    assert (server.options["read_only"], server.options["user"], server.options["mem_limit"]) == (False, "1000:1000", "512m")
    relaxed = {"read_only", "user", "mem_limit"}
    assert {k: server.options[k] for k in LOCKED_DOWN if k not in relaxed} == {k: v for k, v in LOCKED_DOWN.items() if k not in relaxed}
    assert env(server.options["environment"])["PLAIN"] == "yes"


def test_secret_env_for_a_server_is_refused_on_docker(tmp_path):
    program = write_program(tmp_path / "secret", RELAXED.replace("ENV", "{'T': pulumi.Output.secret('x')}"))
    with pytest.raises(ProgramError, match="secret env= values reach an mp.Container's server on Kubernetes"):
        evaluate(program, target="docker")
