"""`mp.Container` on the deploy side: its arguments are checked with clear errors, it goes wherever
a function goes (but `gather` and `key`), and a role running it is configured as the adapter of the
user's server (MP_FUNCTION_URL) while the server is told PORT and MP_CONTEXT."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

import metaparticle_pulumi as mp
from metaparticle_pulumi._program import ProgramError, evaluate
from conftest import write_program


def program(tmp_path: Path, declarations: str, *, target: str = "local"):
    (tmp_path / "prog" / "fn").mkdir(parents=True, exist_ok=True)
    (tmp_path / "prog" / "fn" / "Dockerfile").write_text("FROM scratch\n")
    main = "import metaparticle_pulumi as mp\n\ndef merge(results):\n    return results\n\n" + declarations
    return evaluate(write_program(tmp_path / "prog", main), target=target)


NODE = "mp.Container(build='fn', command=['node', 'server.js'])"


# -- the arguments --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "needs command="),
        ({"build": "fn", "image": "node:20"}, "exclude each other"),
        ({"image": "has space"}, "image must be an image reference"),
        ({"image": "node:20", "port": 0}, "port must be a TCP port"),
        ({"image": "node:20", "port": True}, "port must be a TCP port"),
        ({"image": "node:20", "port": 50051}, "the runtime's gRPC port"),
        ({"image": "node:20", "port": 9090}, "the runtime's metrics port"),
        ({"command": []}, "must name a program"),
        ({"command": ["node", 3]}, "list of strings or a string"),
        ({"command": "node 'unclosed"}, "cannot be split"),
        ({"image": "node:20", "run_as_user": -1}, "run_as_user must be a user id"),
        ({"image": "node:20", "read_only_root_filesystem": "no"}, "read_only_root_filesystem must be True or False"),
        ({"image": "node:20", "resources": {"limit": {"cpu": "1"}}}, "resources must be"),
    ],
)
def test_bad_arguments_are_refused_naming_what_is_wrong(kwargs, message):
    with pytest.raises(mp.PatternError, match=message):
        mp.Container(**kwargs)


def test_a_command_string_is_split_like_a_shell_would_and_the_container_is_frozen():
    container = mp.Container(command="node 'my server.js' --flag")
    assert container.command == ("node", "my server.js", "--flag")
    with pytest.raises(AttributeError):
        container.port = 1  # type: ignore[misc]
    assert mp.Container(command=["node", "s.js"]) == mp.Container(command="node s.js")


# -- where it goes ------------------------------------------------------------------------------


def test_it_serves_as_the_function_of_every_pattern_and_as_a_leaf(tmp_path):
    evaluation = program(
        tmp_path,
        f"s = {NODE}\n"
        "mp.Service('one', function=s)\n"
        "mp.Spread('many', function=s, replicas=2)\n"
        "mp.Shard('keyed', function=s, shards=2, key='user')\n"
        "mp.ScatterGather('fan', leaf=s, gather=merge, leaves=2)\n",
    )
    for pattern in evaluation.patterns:
        functions = [r for r in pattern.topology.roles if r.kind == "function"]
        assert functions and all(r.container is not None and r.function is None for r in functions)
        assert all(r.container.build == str(tmp_path / "prog" / "fn") for r in functions)
    fan = evaluation.patterns[3].topology
    assert fan.entry.kind == "gather" and fan.entry.function is not None  # gather stays Python


@pytest.mark.parametrize(
    "declaration, message",
    [
        (f"mp.ScatterGather('fan', leaf=merge, gather={NODE})", "gather must be a Python function"),
        (f"mp.Shard('k', function=merge, key={NODE})", "key must be a Python function"),
        (f"mp.Service('s', function={NODE}, storage=True)", "storage= is a Python function's ctx.storage"),
        ("mp.Service('s', function=mp.Container(image='node:20'))", "local target runs the function's server with its command"),
        ("mp.Service('s', function=mp.Container(build='nowhere', command='node s.js'))", "build directory .* does not exist"),
    ],
)
def test_what_cannot_be_a_container_is_refused_clearly(tmp_path, declaration, message):
    with pytest.raises(ProgramError, match=message):
        program(tmp_path, declaration)


# -- the local processes ---------------------------------------------------------------------------


def test_each_local_replica_gets_its_own_server_on_a_port_of_its_own(tmp_path):
    evaluation = program(tmp_path, f"mp.Shard('keyed', function={NODE}, shards=2, key='user', replicas=2)")
    plan = evaluation.patterns[0].local_plan
    specs = [s for s in plan.processes(str(tmp_path)) if s.role.startswith("keyed-shard")]
    assert len(specs) == 4
    ports = [s.server.port for s in specs]
    assert len(set(ports) | {s.grpc_port for s in specs}) == 8  # no port twice
    for spec in specs:
        assert spec.config.function_url == f"http://127.0.0.1:{spec.server.port}"
        assert spec.config.function is None and spec.config.function_file is None
        assert spec.server.command == ("node", "server.js") and spec.server.cwd == str(tmp_path / "prog" / "fn")
        assert spec.server.env["PORT"] == str(spec.server.port)
        context = json.loads(spec.server.env["MP_CONTEXT"])
        assert context == {
            "pattern": "Shard", "name": "keyed", "role": "shard", "index": spec.config.index, "count": 2,
            "replica": spec.name,
        }
    router = next(s for s in plan.processes(str(tmp_path)) if s.role == "keyed-router")
    assert router.server is None and router.config.function_url is None


def test_without_build_the_local_server_runs_in_the_programs_directory_with_the_patterns_env(tmp_path):
    evaluation = program(tmp_path, "mp.Service('one', function=mp.Container(command='node s.js'), env={'GREETING': 'hi'})")
    (spec,) = evaluation.patterns[0].local_plan.processes(str(tmp_path))
    assert spec.server.cwd == str(tmp_path / "prog")
    assert spec.server.env["GREETING"] == "hi"
    assert json.loads(spec.server.env["MP_CONTEXT"])["role"] == "service"


# -- run --watch -----------------------------------------------------------------------------------


def test_a_changed_server_file_rolls_its_replicas_and_an_unchanged_one_keeps_them(tmp_path):
    from metaparticle_pulumi import _roll

    declaration = "mp.Spread('many', function=mp.Container(build='fn', command='node s.js'), replicas=2)\n"
    first = program(tmp_path, declaration)
    (tmp_path / "prog" / "fn" / "s.js").write_text("// v1\n")
    old = [s for plan in first.plans for s in plan.processes(str(tmp_path))]
    keys = dict(first.ports.keys)
    first.ports.close()
    assert _roll.port_keys(old) == keys  # the servers' ports too, as reserved

    same = evaluate(tmp_path / "prog", target="local", reuse_ports=keys)
    try:
        assert _roll.plan(old, same, str(tmp_path)).start == []
    finally:
        same.ports.close()
    (tmp_path / "prog" / "fn" / "s.js").write_text("// v2\n")
    busy = socket.create_server(("127.0.0.1", old[1].server.port))  # a running server binds without SO_REUSEPORT
    try:
        changed = evaluate(tmp_path / "prog", target="local", reuse_ports=keys)
    finally:
        busy.close()
    try:
        roll = _roll.plan(old, changed, str(tmp_path))
        # The replicas roll (and the router, whose upstreams' addresses change), each new server on
        # a port of its own while the old ones still serve.
        assert sorted(s.name for s in roll.start) == ["many-replica-0", "many-replica-1", "many-router"]
        new_ports = {s.server.port for s in roll.start if s.server}
        assert len(new_ports) == 2 and not new_ports & {s.server.port for s in old if s.server}
    finally:
        changed.ports.close()
