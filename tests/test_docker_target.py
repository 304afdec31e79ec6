"""The Docker target, checked offline against Pulumi's mocks: one network per pattern, one container
per replica reachable by its role's name, the entry and every container's metrics published (on 127.0.0.1)."""

from __future__ import annotations

import io
import json
import tarfile

import pulumi
import pulumi_docker as docker
import pytest

import metaparticle_pulumi as mp
from metaparticle_pulumi import testing
from metaparticle_pulumi._containers.running import END_OF_ARCHIVE, env_archive
from metaparticle_pulumi._image import FUNCTIONS_DIR
from metaparticle_pulumi._specs.docker import HOLD
from metaparticle_pulumi._topology import ROUTER_KINDS, role_env

from target_support import EXAMPLE_ENTRY, DEPLOYED_ROLES, EXAMPLE_ROLES, dumps, evaluate_examples

PATTERNS = list(EXAMPLE_ROLES)
CONTAINER = "docker:index/container:Container"


def handler(request):
    return request


@pytest.fixture(scope="module")
def stacks(tmp_path_factory):
    return evaluate_examples(tmp_path_factory, "docker")


def containers(stack) -> dict[str, dict]:
    return {r.name: r.inputs for r in stack.resources(type=CONTAINER)}


def env(container: dict) -> dict[str, str]:
    pairs = [e.split("=", 1) for e in container["envs"]]
    assert len({k for k, _ in pairs}) == len(pairs), "duplicate env names"
    return dict(pairs)


def holder_of(example: str) -> str | None:
    """The container holding the entry routers' network namespace, when there are several."""
    entry = EXAMPLE_ENTRY[example]
    return f"{entry}-net" if DEPLOYED_ROLES[example][entry] > 1 else None


def engine_name(stack, name: str) -> str:
    return containers(stack)[name]["name"]


@pytest.mark.parametrize("example", PATTERNS)
def test_one_network_and_one_container_per_replica(stacks, example):
    stack = stacks[example]
    roles = DEPLOYED_ROLES[example]
    assert len(stack.resources(type="docker:index/network:Network")) == 1
    assert len(stack.resources(type="docker:index/image:Image")) == 1
    expected = {f"{role}-{i}" for role, n in roles.items() for i in range(n)} | ({holder_of(example)} - {None})
    assert set(containers(stack)) == expected
    assert not [r for r in stack.resources() if r.type.startswith("kubernetes:")]


@pytest.mark.parametrize("example", PATTERNS)
def test_replicas_join_the_network_under_their_roles_name(stacks, example):
    stack = stacks[example]
    (network,) = stack.resources(type="docker:index/network:Network")
    holder = holder_of(example)
    for name, c in containers(stack).items():
        role = name.rsplit("-", 1)[0]
        if holder is not None and role == EXAMPLE_ENTRY[example] and name != holder:
            # The entry routers share the holder's namespace: it joins under the role's name.
            assert c["networkMode"] == f"container:{engine_name(stack, holder)}"
            assert not c.get("networksAdvanced") and not c.get("hostname")
        else:
            assert c["networksAdvanced"] == [{"name": network.inputs["name"], "aliases": [role]}]
            assert c["hostname"] == (role if name == holder else name)
            assert not c.get("networkMode")


@pytest.mark.parametrize("example", PATTERNS)
def test_the_entry_publishes_its_ports_every_container_its_metrics_only_on_loopback(stacks, example):
    holder = holder_of(example)
    entry = EXAMPLE_ENTRY[example]
    routers = DEPLOYED_ROLES[example][entry]
    for name, c in containers(stacks[example]).items():
        published = sorted((p["internal"], p["ip"]) for p in c["ports"])
        if name == holder:
            # The entry, and each router's operations port (9090 + its index).
            assert published == sorted([(8080, "127.0.0.1"), (50051, "127.0.0.1")] + [(9090 + i, "127.0.0.1") for i in range(routers)])
        elif holder is not None and name.startswith(f"{entry}-"):
            assert published == [], "published on the holder"
        elif name == f"{entry}-0":
            assert published == [(8080, "127.0.0.1"), (9090, "127.0.0.1"), (50051, "127.0.0.1")]
        else:
            assert published == [(9090, "127.0.0.1")]
        assert not any(p.get("external") for p in c["ports"]), "the engine picks the host ports"


@pytest.mark.parametrize("example", PATTERNS)
def test_container_env_is_role_env_with_docker_dns_addresses(stacks, example):
    stack = stacks[example]
    topology = stack.patterns[0].topology
    addresses = {r.name: f"dns:///{r.name}:50051" for r in topology.roles}
    holder = holder_of(example)
    for name, c in containers(stack).items():
        if name == holder:
            assert not c.get("envs") and c["command"] == list(HOLD)
            assert c["sysctls"] == {"net.ipv4.tcp_migrate_req": "1"}
            continue
        role = topology.role(name.rsplit("-", 1)[0])
        fn_file = f"{FUNCTIONS_DIR}/{role.function.file_name}" if role.function and role.function.by_value else None
        # Routers run the compiled router when the image carries it (tests/test_image_router.py).
        router = stack.patterns[0].image.router if role.kind in ROUTER_KINDS else {}
        shared = {}
        if holder is not None and role.entry:  # in one namespace: the entry's ports shared, ops ports apart
            shared = {"reuse_port": True, "metrics_port": 9090 + int(name.rsplit("-", 1)[1])}
        settings = {"metrics_port": 9090, **router, **shared}
        expected = role_env(topology, role, addresses, replica=name, function_file=fn_file, source_dir="/app", **settings)
        expected["MP_DRAIN_SECONDS"] = "1"
        assert env(c) == expected


def test_the_shard_router_calls_every_shard_by_alias_in_order(stacks):
    router = env(containers(stacks["shard"])["users-router-0"])
    assert json.loads(router["MP_UPSTREAMS"]) == [f"dns:///users-shard-{i}:50051" for i in range(3)]


@pytest.mark.parametrize("example", PATTERNS)
def test_containers_run_locked_down_with_a_health_check(stacks, example):
    holder = holder_of(example)
    for name, c in containers(stacks[example]).items():
        assert c["user"] == "10001:10001"
        assert c["readOnly"] is True
        assert c["tmpfs"] == {"/tmp": "rw,noexec,nosuid,size=64m"}
        assert c["capabilities"] == {"drops": ["ALL"]}
        assert c["securityOpts"] == ["no-new-privileges:true"]
        probe = ["CMD", "python", "-m", "metaparticle_runtime.probe"]
        if name == holder:
            assert c["healthcheck"]["tests"] == ["CMD", "true"]
        elif holder is not None and name.startswith(f"{EXAMPLE_ENTRY[example]}-"):
            # Its own operations port: the shared gRPC port answers for any router of the namespace.
            assert c["healthcheck"]["tests"] == [*probe, "--ops-port", str(9090 + int(name.rsplit("-", 1)[1]))]
        else:
            assert c["healthcheck"]["tests"] == [*probe, "--port", "50051"]
        assert c["memory"] == 256  # MB, from the default memory limit


@pytest.mark.parametrize("example", PATTERNS)
def test_containers_run_the_locally_built_image(stacks, example):
    stack = stacks[example]
    (image,) = stack.resources(type="docker:index/image:Image")
    assert image.inputs["skipPush"] is True
    assert "platform" not in image.inputs["build"]  # the local engine's own platform
    assert {c["image"] for c in containers(stack).values()} == {image.inputs["imageName"]}


def test_labels_reach_every_container_and_the_network():
    with testing.mocked("docker") as stack:
        mp.Spread("api", function=handler, replicas=2, labels={"team": "web"})
    for r in stack.resources(type=CONTAINER) + stack.resources(type="docker:index/network:Network"):
        labels = {item["label"]: item["value"] for item in r.inputs["labels"]}
        assert labels["team"] == "web"
        assert labels["app.kubernetes.io/instance"] == "api"


def test_url_is_the_entrys_published_http_port():
    with testing.mocked("docker") as stack:
        api = mp.Spread("api", function=handler)
    assert stack.value(api.url).startswith("http://127.0.0.1:")
    assert stack.value(api.grpc_url).startswith("grpc://127.0.0.1:")
    assert stack.value(api.url) != stack.value(api.grpc_url).replace("grpc", "http")


def test_names_on_the_engine_keep_stacks_and_patterns_apart():
    with testing.mocked("docker", project="shop", stack="dev") as dev:
        mp.Spread("api", function=handler, replicas=2)
        mp.Spread("admin", function=handler, replicas=2)
    with testing.mocked("docker", project="shop", stack="test") as test:
        mp.Spread("api", function=handler, replicas=2)
    dev_names = [r.inputs["name"] for r in dev.resources(type=CONTAINER)]
    test_names = [r.inputs["name"] for r in test.resources(type=CONTAINER)]
    assert len(dev_names) == len(set(dev_names)) == 10  # two routers, their namespace holder and two replicas per pattern
    assert not set(dev_names) & set(test_names)
    assert "shop-dev-api-router-0" in dev_names
    pairs = [(r.type, r.name) for r in dev.resources()]
    assert len(pairs) == len(set(pairs))


def test_a_docker_provider_given_to_the_pattern_reaches_every_child():
    with testing.mocked("docker") as stack:
        engine = docker.Provider("engine", host="unix:///var/run/docker.sock")
        mp.Shard("users", function=handler, key="user", shards=2, routers=1, opts=pulumi.ResourceOptions(providers=[engine]))
    children = [r for r in stack.resources() if r.type.startswith("docker:")]
    assert len(children) == 1 + 1 + 3  # image, network, router + 2 shards
    assert all("pulumi:providers:docker::engine::" in (r.provider or "") for r in children)


def test_extra_env_reaches_every_container_but_cannot_replace_the_runtimes():
    with testing.mocked("docker") as stack:
        mp.Spread("api", function=handler, env={"LOG_LEVEL": "debug"})
    # Every container that runs a role (the routers' namespace holder runs nothing, with no env).
    runs = [r for r in stack.resources(type=CONTAINER) if not r.name.endswith("-net")]
    assert len(runs) == 5 and all(env(r.inputs)["LOG_LEVEL"] == "debug" for r in runs)
    with pytest.raises(mp.PatternError, match="MP_UPSTREAMS"):
        with testing.mocked("docker"):
            mp.Spread("api", function=handler, env={"MP_UPSTREAMS": "[]"})


def test_nothing_from_the_deploying_machines_environment_reaches_the_containers(monkeypatch):
    monkeypatch.setenv("GITHUB_TOKEN", "ghp-leaked")
    with testing.mocked("docker") as stack:
        mp.Service("api", function=handler)
    assert "ghp-leaked" not in dumps([r.inputs for r in stack.resources()])


def test_preview_does_not_break():
    with testing.mocked("docker", preview=True) as stack:
        mp.Spread("api", function=handler, replicas=2)
    (image,) = stack.resources(type="docker:index/image:Image")
    assert {c["image"] for c in containers(stack).values()} == {image.inputs["imageName"]}


@pytest.mark.parametrize("example", PATTERNS)
def test_the_pulumi_containers_apply_the_pattern_s_docker_spec(stacks, example):
    """One spec, two appliers: what `pulumi up` creates says what `run --target docker` creates."""
    stack = stacks[example]
    (pattern,) = stack.patterns
    spec = pattern.docker_spec
    created = containers(stack)
    assert len(created) == len(spec.containers)
    for c in spec.containers:
        inputs = created[f"{c.role}-{c.replica.rsplit('-', 1)[1]}"]
        options = c.options
        assert inputs["name"] == c.name and inputs.get("hostname") == options.get("hostname")
        assert inputs.get("networkMode") == options.get("network_mode")
        assert inputs.get("envs", []) == list(options.get("environment", []))
        assert inputs.get("command") == options.get("command") and inputs.get("sysctls") == options.get("sysctls")
        assert inputs["user"] == options["user"] and inputs["readOnly"] is options["read_only"]
        assert inputs["tmpfs"] == options["tmpfs"] and inputs["capabilities"] == {"drops": options["cap_drop"]}
        assert inputs["securityOpts"] == options["security_opt"]
        assert inputs["memory"] == int(options["mem_limit"].rstrip("m"))
        check = inputs["healthcheck"]
        assert check["tests"] == options["healthcheck"]["test"]
        assert (check["interval"], check["timeout"], check["startPeriod"]) == ("5s", "3s", "10s")
        assert options["healthcheck"]["interval"] == 5 * 10**9 and check["retries"] == options["healthcheck"]["retries"]
        assert inputs["restart"] == options["restart_policy"]["Name"]
        assert inputs["stopTimeout"] == c.stop_timeout == inputs["destroyGraceSeconds"]
        published = [(p["internal"], p["ip"]) for p in inputs.get("ports") or []]
        assert published == [(int(k.split("/")[0]), host) for k, (host, _) in options["ports"].items()]
        if c.network_of is None:
            assert inputs["networksAdvanced"][0]["aliases"] == list(c.aliases)


def test_secret_env_values_go_as_files_never_into_the_configured_environment():
    with testing.mocked("docker") as stack:
        mp.Spread("api", function=handler, replicas=2, env={"LOG_LEVEL": "debug", "TOKEN": pulumi.Output.secret("s3cret")})
    (pattern,) = stack.patterns
    for spec in pattern.docker_spec.containers:
        if spec.holder:  # runs nothing: no env, no secrets
            assert not spec.env_files and "mounts" not in spec.options
            continue
        assert [k for k, _ in spec.env_files] == ["TOKEN"]
        assert spec.options["mounts"] == [{"Target": "/run/metaparticle/env", "Type": "volume", "ReadOnly": False}]
    for name, inputs in containers(stack).items():
        if name.endswith("-net"):
            assert "s3cret" not in dumps(inputs) and not inputs.get("uploads")
            continue
        variables = env(inputs)
        assert variables["LOG_LEVEL"] == "debug" and "TOKEN" not in variables
        assert variables["MP_ENV_DIR"] == "/run/metaparticle/env"
        assert "s3cret" not in dumps(inputs["envs"]) and "s3cret" not in dumps(inputs.get("labels"))
        (upload,) = testing.reveal(inputs["uploads"])
        assert upload == {"file": "/run/metaparticle/env/TOKEN", "content": "s3cret", "owner": "10001", "group": "10001", "permissions": "0400"}
        assert testing.is_secret(inputs["uploads"]), "kept encrypted in the stack's state"
        assert inputs["volumes"] == [{"containerPath": "/run/metaparticle/env"}]


def test_the_secret_env_archive_ends_at_its_end_of_archive_marker():
    """`metaparticle run --target docker` uploads secret env files as a tar; podman stops reading an
    upload at the tar's end-of-archive marker, so any byte after it could fail it (broken pipe)."""
    data = env_archive([("TOKEN", "s3cret"), ("BLOB", "x" * 700)])
    # a header block per file, its data rounded up to whole blocks (1 and 2), then the marker
    assert len(data) == (1 + 1 + 1 + 2) * 512 + END_OF_ARCHIVE
    assert data[-END_OF_ARCHIVE:] == bytes(END_OF_ARCHIVE)
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        modes = [(m.name, m.mode, m.uid, m.gid) for m in archive.getmembers()]
        assert modes == [("TOKEN", 0o400, 10001, 10001), ("BLOB", 0o400, 10001, 10001)]
        assert archive.extractfile("BLOB").read() == b"x" * 700
    long_name = "A" * 150  # a name past 100 bytes takes an extended header of its own
    data = env_archive([(long_name, "v")])
    assert data[-END_OF_ARCHIVE:] == bytes(END_OF_ARCHIVE) and data[-END_OF_ARCHIVE - 512:-END_OF_ARCHIVE] != bytes(512)
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        assert archive.extractfile(long_name).read() == b"v"


def test_without_secret_env_there_is_no_env_volume():
    with testing.mocked("docker") as stack:
        mp.Service("api", function=handler, env={"LOG_LEVEL": "debug"})
    (inputs,) = containers(stack).values()
    assert "MP_ENV_DIR" not in env(inputs) and not inputs.get("uploads") and not inputs.get("volumes")


@pytest.mark.parametrize("name", ["my-token", "1TOKEN", "a.b", "../x"])
def test_a_secret_env_name_that_cannot_be_a_file_name_is_refused(name):
    with pytest.raises(mp.PatternError, match=f"env '{name}' holds a secret value"):
        with testing.mocked("docker"):
            mp.Service("api", function=handler, env={name: pulumi.Output.secret("x")})


def test_a_stateful_shard_mounts_a_named_volume_per_shard_that_pulumi_destroy_keeps():
    with testing.mocked(target="docker") as stack:
        kv = mp.Shard("kv", function=handler, key="key", shards=2, storage=True)
    volumes = {r.name: r for r in stack.resources(type="docker:index/volume:Volume")}
    assert set(volumes) == {"kv-shard-0-data", "kv-shard-1-data"}
    spec = kv.docker_spec
    by_role = {v.role: v.name for v in spec.volumes}
    for i in range(2):
        role = f"kv-shard-{i}"
        assert volumes[f"{role}-data"].inputs["name"] == by_role[role] and by_role[role].endswith(f"-{role}-data")
        container = containers(stack)[f"{role}-0"]
        assert {"volumeName": by_role[role], "containerPath": "/var/lib/metaparticle/data"} in container["volumes"]
        assert env(container)["MP_STORAGE_DIR"] == "/var/lib/metaparticle/data"
        (sdk,) = [c for c in spec.containers if c.role == role]
        assert sdk.volume == by_role[role]
        assert {"Target": "/var/lib/metaparticle/data", "Source": by_role[role], "Type": "volume", "ReadOnly": False} in sdk.options["mounts"]
    router = containers(stack)["kv-router-0"]
    assert "MP_STORAGE_DIR" not in env(router) and not router.get("volumes")


def test_a_stateless_pattern_has_no_volume():
    with testing.mocked(target="docker") as stack:
        mp.Shard("users", function=handler, key="user", shards=2)
    assert not stack.resources(type="docker:index/volume:Volume")
    assert all("MP_STORAGE_DIR" not in env(c) for c in containers(stack).values())


def test_the_engine_refuses_a_changed_shard_count_over_its_volumes_unless_resharding(tmp_path):
    from metaparticle_pulumi import _containers as engine
    from metaparticle_pulumi._program import evaluate

    from target_support import copy_program

    program = copy_program("kv", tmp_path)
    plan = engine.plan(evaluate(program, target="docker"), port=18080)
    names = sorted(v.name for v in plan.volumes)
    assert len(names) == 3 and all(v.labels[engine.PROJECT_LABEL] == plan.project for v in plan.volumes)
    labels = {n: {engine.PROJECT_LABEL: plan.project, engine.PATTERN_LABEL: "kv"} for n in names}
    engine.planning.check_volumes(plan, labels)  # the same shards: fine
    engine.planning.check_volumes(plan, {})  # a first run: fine
    engine.planning.check_volumes(plan, {"other": {engine.PROJECT_LABEL: "another", engine.PATTERN_LABEL: "kv"}})
    grown = {**labels, names[0].replace("shard-0", "shard-3"): labels[names[0]]}
    with pytest.raises(engine.EngineError, match=r"3 shards but the engine holds data volumes of 4.*reshard=True"):
        engine.planning.check_volumes(plan, grown)
    with pytest.raises(engine.EngineError, match="of 2"):
        engine.planning.check_volumes(plan, {n: labels[n] for n in names[:2]})
    plan.resharding.add("kv")
    engine.planning.check_volumes(plan, grown)
