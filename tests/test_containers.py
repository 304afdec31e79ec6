"""Real containers on a Docker-compatible engine: the images, `metaparticle run --target docker`, and
the rendered Kubernetes manifests run pod by pod.

Each example is copied (under a per-session project name, so concurrent sessions on one engine
never meet) and its image built once per session; the local target's answers to the same requests
are the reference every container run must give. The conformance test plays the kubelet and the
cluster DNS: every Pod that the local cluster's controller-manager created from our Deployments
(`scripts/cluster`, deployed through the Pulumi engine) runs as a container with exactly its env,
ports, user, read-only root filesystem and /tmp emptyDir, on one network where each Service's name
(short and `<name>.<namespace>.svc.cluster.local`) resolves to the pods it selects.

Without an engine these tests skip, unless MP_REQUIRE_CONTAINERS=1 (CI), where they fail.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from metaparticle_pulumi import _containers as containers
from metaparticle_pulumi._containers import ContainerSpec, Deployment, EngineError, NetworkSpec, Plan
from metaparticle_pulumi._manifests import render_manifests
from metaparticle_pulumi._program import evaluate
from metaparticle_pulumi._containers.engine import HOLDER_LABEL
from metaparticle_pulumi._topology import GRPC_PORT, HTTP_PORT, ROUTER_KINDS, role_env

from conftest import METAPARTICLE, free_port, post_json, run_program, wait_until, write_program
from engine_support import Cluster, cluster_environment
from target_support import DEPLOYED_ROLES, EXAMPLE_ENTRY, EXAMPLE_ROLES, copy_program, matches

pytestmark = [pytest.mark.containers, pytest.mark.timeout(900)]

#: Keeps this session's projects, containers and networks apart from any other session's on the engine.
SESSION = uuid.uuid4().hex[:6]
EXAMPLES = list(EXAMPLE_ROLES)
#: The requests every example answers, on the local target and in containers alike.
REQUESTS: dict[str, list[Any]] = {
    "hello_world": [{"x": 1}, {"name": "metaparticle", "n": [1, 2, 3]}],
    "spread": [{"hello": "world", "i": i} for i in range(6)],
    "shard": [{"user": u} for u in ("alice", "bob", "carol", "dave", "erin", "frank")] * 2,
    "scatter_gather": [{"q": "pulumi"}, {"q": "leaf"}, {"q": "code"}, {"q": "nothing-matches"}],
}


# --- the engine and the images -------------------------------------------------------------------


@dataclass
class Example:
    name: str
    directory: Path
    project: str
    image: containers.ImageSpec
    built: containers.BuiltImage


def _rename_project(program: Path, project: str) -> None:
    file = program / "Pulumi.yaml"
    doc = yaml.safe_load(file.read_text())
    doc["name"] = project
    file.write_text(yaml.safe_dump(doc, sort_keys=False))


@pytest.fixture(scope="session")
def runtime_image(engine: Any) -> containers.BuiltImage:
    """The runtime alone: built first, so every example's build starts from its cached layers."""
    return containers.build_runtime_image(engine)


@pytest.fixture(scope="session")
def examples(engine: Any, runtime_image: containers.BuiltImage, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Example]]:
    """Each example copied under a session-unique project name, its image built once."""
    root = tmp_path_factory.mktemp("container-examples")
    out: dict[str, Example] = {}
    try:
        for name in EXAMPLES:
            program = copy_program(name, root)
            project = f"{name.replace('_', '-')}-{SESSION}"
            _rename_project(program, project)
            (image,) = containers.plan(evaluate(program, target="docker")).images
            out[name] = Example(name, program, project, image, containers.build(engine, image, project=project))
        yield out
    finally:
        for example in out.values():
            containers.delete(engine, example.project, images=True, grace=2)


@pytest.fixture(scope="session")
def local_answers(examples: dict[str, Example], tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Any]]:
    """What the local target answers to each example's requests: the reference."""
    out = {}
    for name, example in examples.items():
        with run_program(example.directory, tmp=tmp_path_factory.mktemp(f"local-{name}")) as running:
            out[name] = [_answer(running.url, request) for request in REQUESTS[name]]
    return out


def _answer(url: str, request: Any) -> Any:
    reply = post_json(url, request, timeout=15)
    assert reply.status == 200, f"{url} answered {reply.status}: {reply.body}"
    return reply.body


def _comparable(example: str, answer: Any) -> Any:
    """An answer without the replica's name (a process, a container and a pod are named differently)."""
    if isinstance(answer, dict) and "replica" in answer:
        return {k: v for k, v in answer.items() if k != "replica"}
    return answer


def check_answers(example: str, requests: list[Any], answers: list[Any], reference: list[Any]) -> None:
    """The same answers as the local target's, and what each pattern promises."""
    assert [_comparable(example, a) for a in answers] == [_comparable(example, a) for a in reference]
    if example == "hello_world":
        assert answers == [{"A": r} for r in requests]
    elif example == "spread":
        assert all(set(a) == {"replica", "echo"} and a["echo"] == r for a, r in zip(answers, requests))
        replicas = {a["replica"] for a in answers}
        assert all(r.startswith("api-replica-") for r in replicas), replicas
        assert len(replicas) >= 2, f"every request went to one replica: {replicas}"
    elif example == "shard":
        shard_of: dict[str, int] = {}
        for a, r in zip(answers, requests):
            assert a["user"] == r["user"]
            assert shard_of.setdefault(r["user"], a["shard"]) == a["shard"], f"{r['user']} moved shards"
            assert a["replica"].startswith(f"users-shard-{a['shard']}"), a
        assert len(set(shard_of.values())) >= 2
    elif example == "scatter_gather":
        assert all(a["leaves"] == [0, 1, 2, 3] for a in answers)
        assert answers[0]["count"] >= 1


# --- unit tests of the plan (no engine) ------------------------------------------------------------


@pytest.mark.parametrize("example", EXAMPLES)
def test_the_plan_is_the_docker_targets_containers(example, tmp_path):
    """Same env (role_env with dns:///<role>:50051), aliases, user and lock-down as _targets/docker.py."""
    program = copy_program(example, tmp_path)
    evaluation = evaluate(program, target="docker")
    plan = containers.plan(evaluation, port=18080)
    (topology,) = plan.topologies
    addresses = {r.name: f"dns:///{r.name}:{GRPC_PORT}" for r in topology.roles}
    entry = EXAMPLE_ENTRY[example]
    routers = DEPLOYED_ROLES[example][entry]
    holder = f"{entry}-net" if routers > 1 else None  # the entry routers' network namespace
    expected = {f"{role}-{i}" for role, n in DEPLOYED_ROLES[example].items() for i in range(n)} | ({holder} - {None})
    assert {c.replica for c in plan.containers} == expected
    (network,) = plan.networks
    assert network.labels[containers.PROJECT_LABEL] == evaluation.project
    router = evaluation.patterns[0].image.router  # the compiled router when the image carries it
    for spec in plan.containers:
        role = topology.role(spec.role)
        assert spec.network == network.name
        assert spec.options["user"] == "10001:10001" and spec.options["read_only"] is True
        assert spec.options["cap_drop"] == ["ALL"] and "/tmp" in spec.options["tmpfs"]
        assert spec.labels[containers.PROJECT_LABEL] == evaluation.project
        assert spec.labels[containers.ROLE_LABEL] == role.name
        if spec.holder:
            assert spec.replica == holder and spec.aliases == (entry,) and spec.entry
            assert spec.labels[HOLDER_LABEL] == "true" and "environment" not in spec.options
            assert spec.options["ports"] == {
                f"{HTTP_PORT}/tcp": ("127.0.0.1", 18080),
                f"{GRPC_PORT}/tcp": ("127.0.0.1", None),
                **{f"{9090 + i}/tcp": ("127.0.0.1", None) for i in range(routers)},
            }
            continue
        shared = spec.network_of is not None
        assert shared == (holder is not None and role.name == entry)
        env = dict(e.split("=", 1) for e in spec.options["environment"])
        fn = role.function
        fn_file = f"/app/.metaparticle/functions/{fn.file_name}" if fn is not None and fn.by_value else None
        settings = {"metrics_port": spec.metrics_port, **(router if role.kind in ROUTER_KINDS else {}), **({"reuse_port": True} if shared else {})}
        assert env == {**role_env(topology, role, addresses, replica=spec.replica, function_file=fn_file, source_dir="/app", **settings), "MP_DRAIN_SECONDS": "1"}
        probe = ("python", "-m", "metaparticle_runtime.probe")
        if shared:
            assert spec.aliases == () and spec.options["network_mode"] == f"container:{plan.container(spec.network_of).name}"
            assert spec.metrics_port == 9090 + int(spec.replica.rsplit("-", 1)[1])
            assert spec.probe == (*probe, "--ops-port", str(spec.metrics_port))
        else:
            assert spec.aliases == (role.name,) and spec.metrics_port == 9090
            assert spec.probe == (*probe, "--port", str(GRPC_PORT))
        if spec.entry:
            assert holder is None and spec.replica == f"{entry}-0"
            assert spec.options["ports"][f"{HTTP_PORT}/tcp"] == ("127.0.0.1", 18080)
            assert spec.options["ports"][f"{GRPC_PORT}/tcp"] == ("127.0.0.1", None)
        else:
            assert spec.options["ports"] == ({} if shared else {"9090/tcp": ("127.0.0.1", None)})
    order = [c.role for c in plan.containers]
    for role in topology.roles:
        for upstream in role.upstreams:
            assert max(i for i, r in enumerate(order) if r == upstream) < order.index(role.name), (
                f"{role.name} starts before {upstream}, whose names it resolves once at start"
            )
    (image,) = plan.images
    assert image.build_args["PYTHON_VERSION"] == containers.deploying_python()
    assert (image.context / "Dockerfile").is_file()


def test_another_python_is_refused_for_functions_shipped_by_value(tmp_path):
    evaluation = evaluate(copy_program("spread", tmp_path), target="docker")  # handler defined in __main__
    with pytest.raises(EngineError, match="pickled by Python"):
        containers.plan(evaluation, python_version="3.99")
    # By reference (scatter_gather's functions live in search.py): any Python may run them.
    evaluation = evaluate(copy_program("scatter_gather", tmp_path), target="docker")
    default = containers.plan(evaluation)
    plan = containers.plan(evaluation, python_version="3.12")
    (image,) = plan.images
    assert image.build_args["PYTHON_VERSION"] == "3.12"
    assert image.name == f"{default.images[0].name}-py3.12"  # another image, so another tag
    assert {c.image for c in plan.containers} == {image.name}


def test_the_content_tag_changes_with_the_build_args(tmp_path, monkeypatch):
    """An image built for another Python (or cloudpickle) never takes the tag of the one before."""
    from metaparticle_pulumi import _image as image_module
    from metaparticle_pulumi._image import write_build_context

    (pattern,) = evaluate(copy_program("scatter_gather", tmp_path), target="kubernetes").patterns
    before = write_build_context(pattern.topology).tag
    assert write_build_context(pattern.topology).tag == before
    monkeypatch.setattr(image_module, "build_args", lambda: {"PYTHON_VERSION": "3.99", "CLOUDPICKLE_VERSION": "9"})
    assert write_build_context(pattern.topology).tag != before


# --- images ----------------------------------------------------------------------------------------


def test_the_runtime_image_rebuilds_from_the_cache_into_the_same_image(engine, runtime_image):
    again = containers.build_runtime_image(engine)
    assert again.id == runtime_image.id
    assert again.cached, f"only {again.cache_hits} of {again.steps} steps came from the cache"
    assert runtime_image.size > 0
    print(f"\nruntime image: {runtime_image.size / 1e6:.0f} MB, built in {runtime_image.seconds:.1f}s, rebuilt in {again.seconds:.1f}s")


def test_rebuilding_an_unchanged_program_gives_the_same_image(engine, examples):
    example = examples["spread"]
    (image,) = containers.plan(evaluate(example.directory, target="docker")).images
    assert image.name == example.image.name  # the same context, so the same content tag
    again = containers.build(engine, image, project=example.project)
    assert again.id == example.built.id
    assert again.cached, f"only {again.cache_hits} of {again.steps} steps came from the cache"
    assert engine.images.get(image.name).id == example.built.id  # the tag still names that very image
    assert not containers.leftovers(engine, example.project).dangling_images
    for e in examples.values():
        print(f"\n{e.image.name}: {e.built.size / 1e6:.0f} MB, built in {e.built.seconds:.1f}s ({e.built.cache_hits}/{e.built.steps} steps cached)")
    print(f"rebuilt unchanged: {again.seconds:.1f}s")


def test_the_image_runs_the_deploying_pythons_minor_version_and_loads_by_value_functions(engine, examples):
    example = examples["spread"]  # its handler is defined in __main__: shipped by value
    (plan_spec,) = [c for c in containers.plan(evaluate(example.directory, target="docker")).containers if c.role == "api-replica"][:1]
    env = dict(e.split("=", 1) for e in plan_spec.options["environment"])
    script = (
        "import sys, cloudpickle; print('%d.%d' % sys.version_info[:2]); "
        f"fn = cloudpickle.load(open({env['MP_FUNCTION_FILE']!r}, 'rb')); print(fn.__name__)"
    )
    output = engine.containers.run(
        example.built.id, ["python", "-c", script], remove=True, user="10001:10001", read_only=True, network_disabled=True
    )
    python, name = output.decode().split()
    assert python == containers.deploying_python() == env["MP_FUNCTION_PYTHON"]
    assert name == "handler"


def test_the_image_labels_its_base_digest_and_the_versions_it_installed(engine, monkeypatch):
    """Pinned to the digest the engine reports for the base, the image says so in its OCI labels, and
    its pins label lists exactly what pip installed in it (read back from the container)."""
    from metaparticle_pulumi import _image as image_module

    base = image_module.base_image()
    digests = [d.split("@", 1)[1] for d in engine.images.get(base.name).attrs.get("RepoDigests") or []]
    assert digests, f"the engine reports no digest for {base.name}"
    monkeypatch.setenv(image_module.BASE_IMAGE_ENV, f"{base.name}@{digests[0]}")
    built = containers.build_runtime_image(engine)
    labels = engine.images.get(built.id).labels
    assert labels["org.opencontainers.image.base.name"] == base.name
    assert labels["org.opencontainers.image.base.digest"] == digests[0]
    pins = labels["io.metaparticle.runtime.requirements"].split()
    assert set(image_module.runtime_pins()) < set(pins)
    script = "from importlib.metadata import distributions as d; print(' '.join(f'{x.name}=={x.version}' for x in d()))"
    installed = engine.containers.run(built.id, ["python", "-c", script], remove=True, network_disabled=True).decode().split()
    norm = lambda pin: pin.lower().replace("_", "-")  # noqa: E731
    assert {norm(p) for p in pins} <= {norm(p) for p in installed}, "a label names a version the image does not run"


# --- metaparticle run --target docker ---------------------------------------------------------------


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([METAPARTICLE, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def _check_running(engine: Any, example: Example, endpoints: dict[str, Any], port: int) -> None:
    """Every container serves (its probe, run inside it), joined the pattern's network under its
    role's name (several entry routers: through their namespace's holder), runs the image built for
    the session, and publishes on loopback only: the entry its ports, every container its metrics
    (the `metrics_url` the endpoints list)."""
    (pattern,) = endpoints["patterns"]
    assert pattern["url"] == f"http://127.0.0.1:{port}"
    for role in pattern["roles"]:
        assert len(role["containers"]) == DEPLOYED_ROLES[example.name][role["name"]]
        for name in role["containers"]:
            container = engine.containers.get(name)
            assert container.labels[containers.PROJECT_LABEL] == example.project
            if container.attrs["Config"]["Image"].endswith(example.image.name):  # else the sources changed meanwhile
                assert container.image.id == example.built.id, "an unchanged program was not rebuilt from the cache"
            # Its own health check; one that times out once on a loaded machine is retried, as a
            # kubelet or Docker would.
            probe = container.attrs["Config"]["Healthcheck"]["Test"][1:]
            assert wait_until(lambda: containers.exec_probe(container, probe), 20, 1.0), f"{name}: the health probe fails inside the container"
            mode = container.attrs["HostConfig"].get("NetworkMode") or ""
            # Several entry routers live in the namespace of a holder, which joins and publishes for them.
            where = engine.containers.get(mode.split(":", 1)[1]) if mode.startswith("container:") else container
            shared = where is not container
            assert shared == (role["entry"] and len(role["containers"]) > 1), (name, mode)
            network = where.attrs["NetworkSettings"]["Networks"][pattern["network"]]
            assert role["name"] in (network.get("Aliases") or []), f"{name} is not reachable as {role['name']}"
            published = {k: v for k, v in where.attrs["NetworkSettings"]["Ports"].items() if v}
            assert {b["HostIp"] for bindings in published.values() for b in bindings} == {"127.0.0.1"}
            index = int(container.labels[containers.REPLICA_LABEL].rsplit("-", 1)[1])
            ops = f"{9090 + index}/tcp" if shared else "9090/tcp"
            if shared:
                assert where.labels.get(HOLDER_LABEL) == "true" and where.labels.get(containers.ENTRY_LABEL) == "true"
                routers = len(role["containers"])
                assert set(published) == {f"{HTTP_PORT}/tcp", f"{GRPC_PORT}/tcp", *(f"{9090 + i}/tcp" for i in range(routers))}
                assert published[f"{HTTP_PORT}/tcp"][0]["HostPort"] == str(port)
            elif container.labels.get(containers.ENTRY_LABEL) == "true":  # a single entry container
                assert published[f"{HTTP_PORT}/tcp"][0]["HostPort"] == str(port)
                assert set(published) == {f"{HTTP_PORT}/tcp", f"{GRPC_PORT}/tcp", "9090/tcp"}
            else:
                assert set(published) == {"9090/tcp"}, "only the entry publishes more than its metrics"
            (listed,) = [r for r in role["replicas"] if r["name"] == name]
            assert listed["metrics_url"] == f"http://127.0.0.1:{published[ops][0]['HostPort']}/metrics"


@pytest.mark.parametrize("example", EXAMPLES)
def test_run_target_docker_answers_as_the_local_target_and_leaves_nothing(engine, examples, local_answers, example, tmp_path):
    ex = examples[example]
    port = free_port()
    endpoints_file = tmp_path / "endpoints.json"
    detached = example in ("hello_world", "shard")  # run-then-delete; the others stop with Ctrl-C
    args = ["run", str(ex.directory), "--target", "docker", "--port", str(port), "--endpoints-json", str(endpoints_file)]
    log_path = tmp_path / "run.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([METAPARTICLE, *args, *(["--detach"] if detached else [])], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        ok = wait_until(lambda: endpoints_file.exists() or process.poll() is not None, 240, 0.1)
        assert ok and endpoints_file.exists(), f"not serving:\n{log_path.read_text()[-3000:]}"
        if detached:
            assert process.wait(timeout=30) == 0, log_path.read_text()[-3000:]
            assert f"http://127.0.0.1:{port}" in log_path.read_text()
        endpoints = json.loads(endpoints_file.read_text())
        try:
            _check_running(engine, ex, endpoints, port)
            answers = [_answer(endpoints["patterns"][0]["url"], r) for r in REQUESTS[example]]
            check_answers(example, REQUESTS[example], answers, local_answers[example])
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- metaparticle run ---\n{log_path.read_text()[-3000:]}") from None
        if detached:
            deleted = _cli("delete", str(ex.directory))
            assert deleted.returncode == 0, deleted.stderr
            assert "removed container" in deleted.stdout
        else:
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=90) == 0, log_path.read_text()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        left = containers.leftovers(engine, ex.project)
        containers.delete(engine, ex.project, grace=2)
    assert not left, f"left behind: {left}"
    assert re.search(r"built \S+ \(\d+ MB", log_path.read_text()), log_path.read_text()[-2000:]


def test_a_second_run_of_a_running_program_is_refused(engine, examples, tmp_path):
    ex = examples["hello_world"]
    first = _cli("run", str(ex.directory), "--target", "docker", "--port", str(free_port()), "--detach", timeout=240)
    try:
        assert first.returncode == 0, first.stdout + first.stderr
        second = _cli("run", str(ex.directory), "--target", "docker", "--port", str(free_port()))
        assert second.returncode == 2
        assert "already runs" in second.stderr and "metaparticle delete" in second.stderr
    finally:
        deleted = _cli("delete", str(ex.directory))
    assert deleted.returncode == 0
    assert not containers.leftovers(engine, ex.project)
    nothing = _cli("delete", str(ex.directory))
    assert nothing.returncode == 0 and "nothing of" in nothing.stdout


SECRET_PROGRAM = """
import pulumi
import metaparticle_pulumi as mp
import handlers

mp.Spread("vault", function=handlers.handler, replicas=2, env={"PLAIN": "visible", "TOKEN": pulumi.Output.secret("s3cret-value")})
"""
SECRET_HANDLERS = """
import os

TOKEN_AT_IMPORT = os.environ.get("TOKEN")


def handler(request):
    path = os.path.join(os.environ["MP_ENV_DIR"], "TOKEN")
    return {"token": TOKEN_AT_IMPORT, "plain": os.environ.get("PLAIN"), "mode": oct(os.stat(path).st_mode & 0o777), "uid": os.stat(path).st_uid}
"""


def test_secret_env_reaches_the_function_as_a_file_never_in_the_container_configuration(engine, runtime_image, tmp_path):
    program = write_program(tmp_path / f"vault-{SESSION}", SECRET_PROGRAM, handlers=SECRET_HANDLERS)
    project = program.name
    port = free_port()
    try:
        started = _cli("run", str(program), "--target", "docker", "--port", str(port), "--detach", timeout=600)
        assert started.returncode == 0, started.stdout + started.stderr
        reply = post_json(f"http://127.0.0.1:{port}/", {"q": 1})
        assert reply.status == 200, reply.body
        assert reply.body == {"token": "s3cret-value", "plain": "visible", "mode": "0o400", "uid": 10001}
        found = engine.containers.list(filters={"label": f"{containers.PROJECT_LABEL}={project}"})
        assert len(found) == 5  # two routers, the holder of their network namespace, two replicas
        volumes = {m["Name"] for c in found for m in c.attrs["Mounts"] if m["Type"] == "volume" and m["Destination"] == "/run/metaparticle/env"}
        assert len(volumes) == 4, "one anonymous volume per container that runs a role"
        for container in found:
            config = container.attrs["Config"]
            if container.labels.get(HOLDER_LABEL) == "true":  # runs nothing: no env, no secrets
                assert not [e for e in config["Env"] or [] if e.startswith(("PLAIN=", "MP_"))]
                continue
            assert "s3cret-value" not in json.dumps(config["Env"]) + json.dumps(config["Labels"])
            assert "s3cret-value" not in json.dumps(container.attrs["HostConfig"])
            assert "PLAIN=visible" in config["Env"]
    finally:
        deleted = _cli("delete", str(program))
    assert deleted.returncode == 0, deleted.stderr
    assert not containers.leftovers(engine, project)
    assert not volumes & {v.name for v in engine.volumes.list()}, "the secret volumes outlive their containers"


# --- the rendered Kubernetes manifests, pod by pod -------------------------------------------------

#: Container fields the emulation applies; any other one fails the test (it would be ignored silently).
POD_CONTAINER_FIELDS = {
    "name", "image", "imagePullPolicy", "ports", "env", "resources", "startupProbe", "readinessProbe",
    "livenessProbe", "securityContext", "volumeMounts", "command", "args", "workingDir",
}
#: Container fields the API server fills in that change nothing the emulation could show.
API_SERVER_DEFAULTS = {"terminationMessagePath", "terminationMessagePolicy"}
CLUSTER_DOMAIN = "cluster.local"
_QUANTITY = {"": 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 10**3, "M": 10**6, "G": 10**9, "m": 1e-3}


def _quantity(value: Any) -> float:
    number, unit = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value)).groups()  # type: ignore[union-attr]
    return float(number) * _QUANTITY[unit]


@dataclass
class Pod:
    spec: ContainerSpec
    deployment: str
    #: Commands of the container's probes, by probe name.
    probes: dict[str, list[str]]
    env: dict[str, str]
    container: dict[str, Any]
    security: dict[str, Any]


def _probe_command(probe: dict[str, Any], ports: dict[str, int]) -> list[str]:
    """What the kubelet would check, as a command run inside the container."""
    def port_of(value: Any) -> int:
        return ports[value] if isinstance(value, str) else int(value)

    if "grpc" in probe:
        command = list(containers.PROBE) + ["--port", str(port_of(probe["grpc"]["port"]))]
        command += ["--timeout", str(probe.get("timeoutSeconds", 1))]
        if probe["grpc"].get("service"):
            command += ["--service", probe["grpc"]["service"]]
        return command
    if "tcpSocket" in probe:
        port = port_of(probe["tcpSocket"]["port"])
        return ["python", "-c", f"import socket; socket.create_connection(('127.0.0.1', {port}), 2).close()"]
    if "httpGet" in probe:
        get = probe["httpGet"]
        url = f"http://127.0.0.1:{port_of(get['port'])}{get.get('path', '/')}"
        return ["python", "-c", f"import urllib.request; urllib.request.urlopen({url!r}, timeout=2)"]
    if "exec" in probe:
        return list(probe["exec"]["command"])
    raise AssertionError(f"unsupported probe {probe}")


def _instances(objects: list[dict[str, Any]]) -> list[tuple[str, str, dict[str, Any]]]:
    """(deployment, pod name, pod template) of every pod to run: the Pod objects when the API server's
    controllers made them, else each Deployment's template `replicas` times."""
    deployments = [o for o in objects if o["kind"] == "Deployment"]
    live = [o for o in objects if o["kind"] == "Pod"]
    if live:
        owners = {d["metadata"]["name"] for d in deployments}
        out = []
        for pod in live:
            owner = pod["metadata"]["labels"]["app.kubernetes.io/name"]
            assert owner in owners, f"pod {pod['metadata']['name']} belongs to no Deployment"
            out.append((owner, pod["metadata"]["name"], {"metadata": pod["metadata"], "spec": pod["spec"]}))
        return out
    return [
        (d["metadata"]["name"], f"{d['metadata']['name']}-{SESSION}-{i}", d["spec"]["template"])
        for d in deployments
        for i in range(d["spec"].get("replicas", 1))
    ]


def _secret_value(secret: dict[str, Any], key: str) -> str:
    if key in secret.get("stringData", {}):
        return str(secret["stringData"][key])
    return base64.b64decode(secret["data"][key]).decode()


def pods_of(objects: list[dict[str, Any]], image: str, project: str) -> tuple[Plan, list[Pod], dict[str, str]]:
    """Every pod as a container on one network (the kubelet and the cluster DNS played by the
    engine): the Pod objects a real controller-manager created when `objects` hold them, else the
    Deployments' templates; the entry Services' published HTTP addresses, by Service name."""
    deployments = [o for o in objects if o["kind"] == "Deployment"]
    services = [o for o in objects if o["kind"] == "Service"]
    secrets = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Secret"}
    network = f"mpk8s-{project}"
    labels = {containers.PROJECT_LABEL: project}
    plan = Plan(project, networks=[NetworkSpec(network, project, labels)])
    pods: list[Pod] = []
    entries: dict[str, str] = {}
    for service in services:
        assert any(
            matches(service["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"]) for d in deployments
        ), f"Service {service['metadata']['name']} selects no pods"
    by_deployment = {d["metadata"]["name"]: d for d in deployments}

    def routes(template: dict[str, Any]) -> bool:
        return any(e["name"] == "MP_UPSTREAMS" for c in template["spec"]["containers"] for e in c.get("env", []))

    # Routers last, as containers.plan does: the engine's DNS answers only with started containers.
    for name, pod, template in sorted(_instances(objects), key=lambda item: routes(item[2])):
        deployment = by_deployment[name]
        namespace = deployment["metadata"].get("namespace", "default")
        pod_labels = template["metadata"]["labels"]
        assert matches(deployment["spec"]["selector"]["matchLabels"], pod_labels), f"{name} does not select its own pods"
        pod_spec = template["spec"]
        (container,) = pod_spec["containers"]
        unknown = set(container) - POD_CONTAINER_FIELDS - API_SERVER_DEFAULTS
        assert not unknown, f"{name}: the emulation does not apply {sorted(unknown)}"
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", []) if p.get("name")}
        selecting = [s for s in services if matches(s["spec"]["selector"], pod_labels)]
        aliases: list[str] = []
        published: dict[str, Any] = {}
        for service in selecting:
            svc, ns = service["metadata"]["name"], service["metadata"].get("namespace", "default")
            aliases += [svc, f"{svc}.{ns}", f"{svc}.{ns}.svc", f"{svc}.{ns}.svc.{CLUSTER_DOMAIN}"]
            for port in service["spec"]["ports"]:
                target = port.get("targetPort", port["port"])
                container_port = ports[target] if isinstance(target, str) else int(target)
                # Names resolve straight to the pods here, so callers reach a pod on the Service's port.
                assert container_port == port["port"], f"Service {svc} maps {port['port']} to {container_port}"
                if service["spec"].get("clusterIP") != "None":
                    published[f"{container_port}/{port.get('protocol', 'TCP').lower()}"] = ("127.0.0.1", None)
        security = {**pod_spec.get("securityContext", {}), **container.get("securityContext", {})}
        uid, gid = security.get("runAsUser"), security.get("runAsGroup")
        if security.get("runAsNonRoot"):
            assert uid not in (None, 0), f"{name}: runAsNonRoot needs a non-zero runAsUser (the image's USER is not checked here)"
        volumes = {v["name"]: v for v in pod_spec.get("volumes", [])}
        tmpfs = {}
        for mount in container.get("volumeMounts", []):
            volume = volumes[mount["name"]]
            assert "emptyDir" in volume, f"{name}: only emptyDir volumes are emulated, not {volume}"
            size = volume["emptyDir"].get("sizeLimit")
            tmpfs[mount["mountPath"]] = "rw,mode=1777" + (f",size={int(_quantity(size))}" if size else "")
        limits = (container.get("resources") or {}).get("limits") or {}
        env: dict[str, str] = {}
        for item in container.get("env", []):
            if "value" in item:
                env[item["name"]] = str(item["value"])
                continue
            source = item["valueFrom"]
            if "fieldRef" in source:
                field = source["fieldRef"]["fieldPath"]
                env[item["name"]] = {"metadata.name": pod, "metadata.namespace": namespace}[field]
            elif "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                env[item["name"]] = _secret_value(secrets[ref["name"]], ref["key"])
            else:
                raise AssertionError(f"{name}: unsupported env source {source}")
        options: dict[str, Any] = {
            "hostname": pod,
            "environment": env,
            "user": f"{uid}:{gid}" if uid is not None and gid is not None else (str(uid) if uid is not None else None),
            "read_only": bool(security.get("readOnlyRootFilesystem")),
            "tmpfs": tmpfs,
            "cap_drop": list((security.get("capabilities") or {}).get("drop") or []),
            "cap_add": list((security.get("capabilities") or {}).get("add") or []),
            "security_opt": ["no-new-privileges"] if security.get("allowPrivilegeEscalation") is False else [],
            "privileged": bool(security.get("privileged")),
            "ports": published,
        }
        if "command" in container:
            options["entrypoint"] = container["command"]
        if "args" in container:
            options["command"] = container["args"]
        if "workingDir" in container:
            options["working_dir"] = container["workingDir"]
        if "memory" in limits:
            options["mem_limit"] = int(_quantity(limits["memory"]))
        if "cpu" in limits:
            options["nano_cpus"] = int(_quantity(limits["cpu"]) * 1e9)
        probes = {
            kind: _probe_command(container[kind], ports)
            for kind in ("startupProbe", "readinessProbe", "livenessProbe")
            if kind in container
        }
        assert probes, f"{name} has no probes"
        spec = ContainerSpec(
            name=pod,
            pattern=project,
            role=name,
            replica=pod,
            image=image,
            network=network,
            aliases=tuple(aliases),
            labels={**labels, **pod_labels},
            options=options,
            probe=tuple(probes.get("readinessProbe") or next(iter(probes.values()))),
            stop_timeout=int(pod_spec.get("terminationGracePeriodSeconds", 30)),
            entry=bool(published),
        )
        plan.containers.append(spec)
        pods.append(Pod(spec, name, probes, env, container, security))
        for service in selecting:
            if service["spec"].get("clusterIP") != "None" and any(p.get("name") == "http" for p in service["spec"]["ports"]):
                entries.setdefault(service["metadata"]["name"], pod)
    return plan, pods, entries


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Cluster:
    return Cluster(cluster_environment(tmp_path_factory.mktemp("pulumi-backend")))


@pytest.mark.engine
@pytest.mark.parametrize("example", EXAMPLES)
def test_the_pods_kubernetes_creates_run_as_containers_and_answer_as_the_local_target(
    engine, examples, local_answers, cluster, example, tmp_path
):
    """`up` through the engine into the local cluster; then the Pod objects its controller-manager
    made from our Deployments (with the API server's defaults) run as containers."""
    ex = examples[example]
    namespace = cluster.namespace(f"mp-pods-{example.replace('_', '-')}")
    stack = "pods"
    try:
        cluster.engine(
            "up", ex.directory, stack, "-c", f"metaparticle:namespace={namespace}", "-c", "metaparticle:imageBuild=external", tmp=tmp_path
        )
        objects = cluster.objects(namespace, kinds="deployments,pods,services,secrets")
    finally:
        cluster.metaparticle("destroy", str(ex.directory), "--stack", stack, "--remove", check=False)
        cluster.delete_namespace(namespace)
    deployments = [o for o in objects if o["kind"] == "Deployment"]
    assert {d["metadata"]["name"]: d["spec"]["replicas"] for d in deployments} == DEPLOYED_ROLES[example]
    live = [o for o in objects if o["kind"] == "Pod"]
    assert len(live) == sum(DEPLOYED_ROLES[example].values())
    images = {c["image"] for p in live for c in p["spec"]["containers"]}
    assert images == {ex.image.name}, "the pods run another image than the one built from the program"
    plan, pods, entries = pods_of(objects, ex.built.id, f"{ex.project}-k8s")
    assert list(entries) == [EXAMPLE_ENTRY[example]]
    deployment = Deployment(engine, plan)
    try:
        deployment.start()
        pending = deployment.wait_ready(120)
        assert not pending, f"not serving: {[p.name for p in pending]}\n" + "\n".join(deployment.logs(pending[0], 20))
        entry = plan.container(next(iter(entries.values())))
        url = f"http://{deployment.published(entry, HTTP_PORT)}"
        assert containers.wait_healthz(url, 60), f"{url}/healthz: the entry does not see its topology serving"
        for pod in pods:
            _check_pod(deployment, pod)
        answers = [_answer(url, r) for r in REQUESTS[example]]
        check_answers(example, REQUESTS[example], answers, local_answers[example])
    finally:
        deployment.stop(grace=2)
        left = containers.leftovers(engine, plan.project)
    assert not left, f"left behind: {left}"


@pytest.mark.parametrize("example", EXAMPLES)
def test_rendered_manifests_name_the_image_built_from_the_program(examples, example, tmp_path):
    """`metaparticle render` (offline, no cluster) references the same content-tagged image."""
    ex = examples[example]
    written = render_manifests(ex.directory, tmp_path / "manifests")
    objects = [yaml.safe_load(p.read_text()) for p in written]
    deployments = [o for o in objects if o["kind"] == "Deployment"]
    assert {d["metadata"]["name"]: d["spec"]["replicas"] for d in deployments} == DEPLOYED_ROLES[example]
    images = {c["image"] for d in deployments for c in d["spec"]["template"]["spec"]["containers"]}
    assert images == {ex.image.name}, "the manifests reference another image than the one built from the program"


def _check_pod(deployment: Deployment, pod: Pod) -> None:
    """Every probe passes once the pod serves; the ports the manifests name are the runtime's; the
    user and the read-only root filesystem apply; upstream Service names resolve (one exec per pod)."""
    ports = {p["name"]: p["containerPort"] for p in pod.container.get("ports", [])}
    assert ports["grpc"] == int(pod.env["MP_GRPC_PORT"])
    for probe in (pod.container.get(k) for k in ("startupProbe", "readinessProbe", "livenessProbe")):
        if probe and "grpc" in probe:
            assert probe["grpc"]["port"] in (int(pod.env["MP_GRPC_PORT"]), "grpc"), "the gRPC probe checks another port than the runtime's"
    if "http" in ports:
        assert ports["http"] == int(pod.env["MP_HTTP_PORT"])
    else:
        assert "MP_HTTP_PORT" not in pod.env
    hosts = [a.removeprefix("dns:///").rsplit(":", 1)[0] for a in json.loads(pod.env.get("MP_UPSTREAMS", "[]"))]
    checks = [(kind, shlex.join(command)) for kind, command in pod.probes.items()]
    checks += [("rootfs-writable", "touch /rofs-check"), ("tmp-writable", "touch /tmp/check")]
    checks += [
        (f"resolve {host}", shlex.join(["python", "-c", f"import socket; socket.getaddrinfo({host!r}, None)"]))
        for host in hosts
    ]
    script = "echo uid=$(id -u) gid=$(id -g)\n" + "".join(
        f"if {command} >/dev/null 2>&1; then echo {shlex.quote(kind)}=ok; else echo {shlex.quote(kind)}=fail; fi\n"
        for kind, command in checks
    )
    container = deployment.containers[pod.spec.name]
    for _ in range(3):  # a probe fails a pod only after failureThreshold misses: retry a miss on a loaded machine
        lines = container.exec_run(["sh", "-c", script]).output.decode(errors="replace").splitlines()
        identity = dict(item.split("=") for item in lines[0].split())
        outcome = dict(line.rsplit("=", 1) for line in lines[1:])
        if all(outcome.get(kind) == "ok" for kind in pod.probes):
            break
        time.sleep(1.0)
    assert (int(identity["uid"]), int(identity["gid"])) == (pod.security["runAsUser"], pod.security["runAsGroup"])
    for kind in pod.probes:
        assert outcome[kind] == "ok", f"{pod.spec.name}: {kind} {pod.probes[kind]} fails once the pod serves"
    assert outcome["rootfs-writable"] == ("fail" if pod.security.get("readOnlyRootFilesystem") else "ok")
    assert outcome["tmp-writable"] == "ok", "the emptyDir /tmp is not writable"
    for host in hosts:
        assert outcome[f"resolve {host}"] == "ok", f"{pod.spec.name} cannot resolve {host}"
