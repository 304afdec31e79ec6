"""How each pattern expands into roles, and how a role becomes the runtime's configuration."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

import metaparticle_pulumi as mp
from metaparticle_pulumi._program import Evaluation, ProgramError, evaluate
from metaparticle_pulumi._topology import Topology, dns_name, role_env
from metaparticle_runtime.config import RuntimeConfig
from conftest import write_program

HANDLERS = '''
def handle(request, ctx):
    return {"index": ctx.index, "request": request}


def user_of(request):
    return request["user"]


def merge(results):
    return results
'''


def program(tmp_path: Path, declarations: str, **evaluate_args) -> Evaluation:
    main = "import metaparticle_pulumi as mp\nfrom handlers import handle, user_of, merge\n\n" + declarations
    return evaluate(write_program(tmp_path / "prog", main, handlers=HANDLERS), **evaluate_args)


def only_topology(tmp_path: Path, declaration: str) -> Topology:
    evaluation = program(tmp_path, declaration)
    assert len(evaluation.patterns) == 1
    return evaluation.patterns[0].topology


def describe(topology: Topology) -> list[tuple]:
    return [(r.name, r.kind, r.component, r.replicas, r.entry, r.upstreams, r.index, r.count) for r in topology.roles]


# -- expansion ------------------------------------------------------------------------------------


def test_a_service_is_one_entry_role_running_the_function(tmp_path):
    topo = only_topology(tmp_path, "mp.Service('Hello World', function=handle)")
    assert topo.pattern == "Service" and topo.name == "Hello World"
    assert describe(topo) == [("hello-world", "function", "service", 1, True, (), None, None)]
    assert topo.entry.function.ref == "handlers:handle"


def test_a_spread_is_a_router_in_front_of_n_replicas(tmp_path):
    topo = only_topology(tmp_path, "mp.Spread('api', function=handle, replicas=4)")
    assert describe(topo) == [
        ("api-router", "spread", "router", 1, True, ("api-replica",), None, None),
        ("api-replica", "function", "replica", 4, False, (), None, None),
    ]
    assert topo.role("api-router").function is None
    assert topo.role("api-replica").function.ref == "handlers:handle"


def test_a_shard_routes_to_its_shards_in_index_order(tmp_path):
    topo = only_topology(tmp_path, "mp.Shard('users', function=handle, shards=4, replicas=2, key='user.id')")
    shards = tuple(f"users-shard-{i}" for i in range(4))
    assert describe(topo) == [("users-router", "shard", "router", 1, True, shards, None, None)] + [
        (name, "function", "shard", 2, False, (), i, 4) for i, name in enumerate(shards)
    ]
    router = topo.entry
    assert router.key_path == "user.id" and router.function is None


def test_a_shard_key_function_runs_on_the_router(tmp_path):
    topo = only_topology(tmp_path, "mp.Shard('users', function=handle, shards=2, key=user_of)")
    router = topo.entry
    assert router.key_path is None
    assert router.function.purpose == "key" and router.function.ref == "handlers:user_of"


def test_a_scatter_gather_is_a_root_fanning_out_to_leaves_in_order(tmp_path):
    topo = only_topology(
        tmp_path,
        "mp.ScatterGather('Search', leaf=handle, gather=merge, leaves=5, replicas=2, on_missing='partial', hedge_after=0.25)",
    )
    leaves = tuple(f"search-leaf-{i}" for i in range(5))
    assert describe(topo) == [("search-root", "gather", "root", 1, True, leaves, None, None)] + [
        (name, "function", "leaf", 2, False, (), i, 5) for i, name in enumerate(leaves)
    ]
    assert topo.entry.function.purpose == "gather" and topo.entry.function.ref == "handlers:merge"
    assert topo.settings.on_missing == "partial" and topo.settings.hedge_after == 0.25
    assert [r.name for r in topo.callers_of("search-leaf-3")] == ["search-root"]
    assert topo.callers_of("search-root") == ()


def test_settings_given_to_a_pattern_reach_its_topology(tmp_path):
    topo = only_topology(
        tmp_path, "mp.Spread('api', function=handle, timeout=2.5, max_request_bytes=4096, max_in_flight=7, retries=0)"
    )
    s = topo.settings
    assert (s.timeout, s.max_request_bytes, s.max_in_flight, s.retries) == (2.5, 4096, 7, 0)


def test_several_patterns_of_one_program_each_get_a_plan_and_only_the_first_the_given_port(tmp_path):
    evaluation = program(
        tmp_path,
        "mp.Service('a', function=handle)\nmp.Shard('b', function=handle, shards=3, key='k')\n",
        port=18555,
    )
    assert [p.topology.name for p in evaluation.plans] == ["a", "b"]
    assert evaluation.plans[0].http_port == 18555
    ports = [evaluation.plans[1].http_port] + [p for plan in evaluation.plans for ps in plan.grpc_ports.values() for p in ps]
    assert 18555 not in ports
    assert len(set(ports)) == len(ports) == 1 + 1 + 4


def test_a_plan_addresses_every_replica_of_a_role(tmp_path):
    plan = program(tmp_path, "mp.Spread('api', function=handle, replicas=3)").plans[0]
    ports = plan.grpc_ports["api-replica"]
    assert len(ports) == 3
    assert plan.address("api-replica") == "ipv4:" + ",".join(f"127.0.0.1:{p}" for p in ports)
    assert plan.grpc_url == f"grpc://127.0.0.1:{plan.grpc_ports['api-router'][0]}"


# -- validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "declaration, message",
    [
        ("mp.Shard('s', function=handle, shards=0, key='k')", "shards must be a positive integer, got 0"),
        ("mp.Shard('s', function=handle, shards=-2, key='k')", "shards must be a positive integer, got -2"),
        ("mp.Shard('s', function=handle, shards=True, key='k')", "shards must be a positive integer, got True"),
        ("mp.Shard('s', function=handle, shards='3', key='k')", "shards must be a positive integer, got '3'"),
        ("mp.Shard('s', function=handle, key='user..id')", "key must be a field path"),
        ("mp.Shard('s', function=handle, key='')", "key must be a field path"),
        ("mp.Shard('s', function=handle, key=42)", "key must be a function of the request or a JSON field path"),
        ("mp.Shard('s', function=handle)", "missing required argument 'key'"),
        ("mp.Spread('s', function=handle, replicas=0)", "replicas must be a positive integer"),
        ("mp.ScatterGather('s', leaf=handle, gather=merge, leaves=0)", "leaves must be a positive integer"),
        ("mp.ScatterGather('s', leaf=handle)", "missing required argument 'gather'"),
        ("mp.ScatterGather('s', leaf=handle, gather=merge, on_missing='maybe')", "on_missing must be 'fail' or 'partial'"),
        ("mp.Service('s', function=handle, timeout=0)", "timeout must be a positive number"),
        ("mp.Service('s', function=handle, max_request_bytes=10)", "max_request_bytes must be at least 1024"),
        ("mp.Service('s', function=handle, replicas=3)", "unknown argument(s) replicas"),
        ("mp.Service('s', function=42)", "must be callable"),
        ("mp.Service('', function=handle)", "resource_name must be a non-empty string"),
        ("mp.Service('!!!', function=handle)", "no letters or digits"),
    ],
)
def test_a_pattern_declared_wrong_is_refused_with_a_message_naming_the_problem(tmp_path, declaration, message):
    with pytest.raises(ProgramError) as info:
        program(tmp_path, declaration)
    text = str(info.value)
    assert message in text
    assert "\n" not in text


def test_a_name_too_long_for_its_role_names_is_refused(tmp_path):
    with pytest.raises(ProgramError) as info:
        program(tmp_path, f"mp.Shard('{'u' * 60}', function=handle, key='k')")
    assert "more than a DNS label's 63" in str(info.value)


def test_role_names_of_a_long_but_acceptable_name_are_dns_labels(tmp_path):
    topo = only_topology(tmp_path, f"mp.ScatterGather('{'s' * 50}', leaf=handle, gather=merge, leaves=12)")
    assert all(len(r.name) <= 63 for r in topo.roles)
    assert len({r.name for r in topo.roles}) == 13


# -- dns_name -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, label",
    [
        ("api", "api"),
        ("My API", "my-api"),
        ("users_db.v2", "users-db-v2"),
        ("--Edge--case--", "edge-case"),
        ("a   b", "a-b"),
    ],
)
def test_dns_name_makes_a_lowercase_dns_label(name, label):
    assert dns_name(name) == label


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=120).filter(lambda t: any(c.isascii() and c.isalnum() for c in t)))
def test_dns_name_of_any_name_with_a_letter_or_digit_is_a_dns_label(name):
    label = dns_name(name)
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", label)
    assert len(label) <= 63


def test_dns_name_cuts_long_names_to_63_characters_without_a_trailing_dash():
    assert dns_name("a" * 100) == "a" * 63
    assert dns_name("a" * 62 + "-b") == "a" * 62


def test_dns_name_refuses_a_name_without_letters_or_digits():
    with pytest.raises(ValueError):
        dns_name("---")


# -- role_env -------------------------------------------------------------------------------------


def addresses(topo: Topology) -> dict[str, str]:
    return {r.name: f"dns:///{r.name}:50051" for r in topo.roles}


def test_role_env_of_a_shard_router_lists_its_shards_in_order(tmp_path):
    topo = only_topology(tmp_path, "mp.Shard('users', function=handle, shards=3, replicas=2, key='user.id', timeout=3)")
    env = role_env(topo, topo.entry, addresses(topo), replica="users-router-0")
    assert env["MP_ROLE"] == "shard" and env["MP_PATTERN"] == "Shard" and env["MP_NAME"] == "users"
    assert env["MP_UPSTREAMS"] == '["dns:///users-shard-0:50051", "dns:///users-shard-1:50051", "dns:///users-shard-2:50051"]'
    assert env["MP_UPSTREAM_NAMES"] == '["users-shard-0", "users-shard-1", "users-shard-2"]'
    assert "MP_UPSTREAM_REPLICAS" not in env, "a router restarted whenever its shards scale"
    assert env["MP_KEY_PATH"] == "user.id"
    assert env["MP_HTTP_PORT"] == "8080" and env["MP_GRPC_PORT"] == "50051"
    assert float(env["MP_TIMEOUT"]) == 3.0
    assert "MP_FUNCTION" not in env and "MP_INDEX" not in env


def test_role_env_of_a_shard_carries_its_index_and_function_but_no_http_port(tmp_path):
    topo = only_topology(tmp_path, "mp.Shard('users', function=handle, shards=3, key='user.id')")
    env = role_env(topo, topo.role("users-shard-2"), addresses(topo), replica="users-shard-2-0", grpc_port=7001)
    assert (env["MP_ROLE"], env["MP_INDEX"], env["MP_COUNT"]) == ("function", "2", "3")
    assert env["MP_FUNCTION"] == "handlers:handle"
    assert env["MP_GRPC_PORT"] == "7001" and env["MP_REPLICA"] == "users-shard-2-0"
    assert "MP_HTTP_PORT" not in env and "MP_UPSTREAMS" not in env


def test_role_env_of_a_gather_root_carries_missing_leaf_policy_and_hedging(tmp_path):
    topo = only_topology(
        tmp_path, "mp.ScatterGather('s', leaf=handle, gather=merge, leaves=2, on_missing='partial', hedge_after=0.1)"
    )
    env = role_env(topo, topo.entry, addresses(topo), replica="s-root")
    assert env["MP_ON_MISSING"] == "partial" and float(env["MP_HEDGE_AFTER"]) == 0.1
    assert env["MP_FUNCTION"] == "handlers:merge"


def test_role_env_points_a_by_value_function_at_its_file(tmp_path):
    evaluation = evaluate(
        write_program(tmp_path / "byvalue", "import metaparticle_pulumi as mp\nmp.Service('s', function=lambda r: r)\n")
    )
    topo = evaluation.patterns[0].topology
    env = role_env(topo, topo.entry, {}, replica="s", function_file="/fn/function.pkl", source_dir="/src")
    assert env["MP_FUNCTION_FILE"] == "/fn/function.pkl" and env["MP_SOURCE_DIR"] == "/src"
    assert env["MP_FUNCTION_PYTHON"] == topo.entry.function.python
    assert "MP_FUNCTION" not in env
    with pytest.raises(ValueError):
        role_env(topo, topo.entry, {}, replica="s")


def test_the_runtime_accepts_the_env_of_every_role_of_every_pattern(tmp_path):
    evaluation = program(
        tmp_path,
        "mp.Service('a', function=handle)\n"
        "mp.Spread('b', function=handle, replicas=2)\n"
        "mp.Shard('c', function=handle, shards=2, key=user_of)\n"
        "mp.ScatterGather('d', leaf=handle, gather=merge, leaves=3, timeout=1.5)\n",
    )
    checked = 0
    for pattern in evaluation.patterns:
        topo = pattern.topology
        for role in topo.roles:
            env = role_env(topo, role, addresses(topo), replica=f"{role.name}-0", grpc_port=6000, http_port=6001)
            cfg = RuntimeConfig.from_env(env)
            assert (cfg.role, cfg.role_name, cfg.pattern, cfg.name) == (role.kind, role.name, topo.pattern, topo.name)
            assert cfg.upstreams == tuple(f"dns:///{u}:50051" for u in role.upstreams)
            assert cfg.upstream_names == role.upstreams
            assert (cfg.index, cfg.count) == (role.index, role.count)
            assert cfg.http_port == (6001 if role.entry else None)
            assert cfg.timeout == topo.settings.timeout
            assert cfg.function == (role.function.ref if role.function else None)
            checked += 1
    assert checked == 1 + 2 + 3 + 4


def test_an_evaluation_holds_its_local_ports_until_released(tmp_path):
    """Chosen ports stay bound (SO_REUSEPORT, not listening) by the evaluation: no other server takes one."""
    import socket

    evaluation = program(tmp_path, "mp.Spread('api', function=handle, replicas=2)", port=18556)
    plan = evaluation.plans[0]
    ports = [18556] + [p for ps in [*plan.grpc_ports.values(), *plan.metrics_ports.values()] for p in ps]
    assert len(ports) == 1 + 3 + 2  # the entry's HTTP port, a gRPC port per process, a metrics port per replica
    assert evaluation.ports.held() == sorted(ports)
    for port in ports:
        with socket.socket() as sock, pytest.raises(OSError):
            sock.bind(("127.0.0.1", port))
    evaluation.ports.close()
    for port in ports:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))


@pytest.mark.parametrize("target, expected", [("kubernetes", 2), ("docker", 2), ("local", 1)])
def test_routers_run_twice_where_a_router_is_a_single_point_of_failure(target, expected):
    from metaparticle_pulumi import testing

    with testing.mocked(target) as stack:
        mp.Spread("api", function=handle, replicas=3)
        mp.Shard("users", function=handle, key="user", shards=2, routers=3)
        mp.Service("one", function=handle)
    spread, shard, service = stack.patterns
    assert spread.topology.role("api-router").replicas == expected
    assert spread.topology.role("api-replica").replicas == 3
    assert shard.topology.role("users-router").replicas == 3
    assert service.topology.entry.replicas == 1


@pytest.mark.parametrize("routers, message", [(0, "routers must be a positive integer"), (True, "routers must be a positive integer")])
def test_routers_must_be_a_positive_count(routers, message):
    from metaparticle_pulumi import testing

    with pytest.raises(mp.PatternError, match=message):
        with testing.mocked("local"):
            mp.Spread("api", function=handle, routers=routers)
    with pytest.raises(mp.PatternError, match="a Service has none"):
        with testing.mocked("local"):
            mp.Service("api", function=handle, routers=2)


def handle(request):
    return request
