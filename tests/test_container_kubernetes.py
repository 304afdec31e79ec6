"""`mp.Container` on Kubernetes: the user's server is a second container of each function pod, with
the runtime's hardening unless its `mp.Container` relaxes it, its image built from `build=` (tagged
by content) or given by `image=`; the manifests stay valid Kubernetes objects."""

from __future__ import annotations

import json
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from metaparticle_pulumi._manifests import render_manifests
from metaparticle_pulumi._program import ProgramError

from target_support import copy_program, env_of, write_program

K8S_VERSIONS = ["1.30.0", kubernetes_validate.utils.latest_version()]
FUNCTION_ROLES = {"greeter-replica", "counters-shard-0", "counters-shard-1", "counters-shard-2"}


def manifests(paths) -> list[dict]:
    return [doc for p in paths for doc in yaml.safe_load_all(Path(p).read_text())]


def workloads(docs) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}


def containers(deployment) -> dict[str, dict]:
    return {c["name"]: c for c in deployment["spec"]["template"]["spec"]["containers"]}


@pytest.fixture(scope="module")
def polyglot(tmp_path_factory):
    base = tmp_path_factory.mktemp("polyglot")
    program = copy_program("polyglot", base)
    return program, manifests(render_manifests(program, base / "manifests"))


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_the_manifests_are_valid_kubernetes_objects(polyglot, version):
    _, docs = polyglot
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_every_function_pod_runs_the_users_server_next_to_the_runtime_and_routers_do_not(polyglot):
    _, docs = polyglot
    deployments = workloads(docs)
    assert {n for n, d in deployments.items() if "function" in containers(d)} == FUNCTION_ROLES
    for name in FUNCTION_ROLES:
        pod = containers(deployments[name])
        assert list(pod) == ["runtime", "function"]
        assert env_of(pod["runtime"])["MP_FUNCTION_URL"] == "http://127.0.0.1:8080"
        assert "MP_FUNCTION" not in env_of(pod["runtime"])
        server = pod["function"]
        assert server["command"] == ["node", "server.js"]
        assert server["ports"] == [{"name": "function", "containerPort": 8080, "protocol": "TCP"}]
        assert server["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "function"}


def test_the_server_gets_port_and_its_context_naming_the_pod(polyglot):
    _, docs = polyglot
    server = containers(workloads(docs)["counters-shard-2"])["function"]
    names = [e["name"] for e in server["env"]]
    # $(MP_REPLICA) is expanded by Kubernetes only when the variable is defined before MP_CONTEXT.
    assert names.index("MP_REPLICA") < names.index("MP_CONTEXT")
    env = env_of(server)
    assert env["MP_REPLICA"] == {"valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    assert env["PORT"] == "8080"
    assert json.loads(env["MP_CONTEXT"]) == {
        "pattern": "Shard", "name": "counters", "role": "shard", "index": 2, "count": 3, "replica": "$(MP_REPLICA)",
    }


def test_the_server_has_the_runtimes_hardening(polyglot):
    _, docs = polyglot
    deployment = workloads(docs)["greeter-replica"]
    pod = containers(deployment)
    server, runtime = pod["function"], pod["runtime"]
    assert server["securityContext"] == runtime["securityContext"]
    assert server["securityContext"]["readOnlyRootFilesystem"] is True
    assert server["securityContext"]["runAsNonRoot"] is True
    assert server["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert server["securityContext"]["allowPrivilegeEscalation"] is False
    assert server["resources"] == runtime["resources"] and server["resources"]["limits"]
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    (mount,) = server["volumeMounts"]
    assert mount["mountPath"] == "/tmp" and "emptyDir" in volumes[mount["name"]]


def test_the_servers_image_is_built_from_its_directory_and_tagged_by_its_content(polyglot, tmp_path):
    program, docs = polyglot
    image = containers(workloads(docs)["greeter-replica"])["function"]["image"]
    runtime_image = containers(workloads(docs)["greeter-replica"])["runtime"]["image"]
    assert image.startswith("polyglot-greeter-function:") and image != runtime_image
    (program / "server.js").write_text((program / "server.js").read_text() + "\n// changed\n")
    changed = manifests(render_manifests(program, tmp_path / "again"))
    assert containers(workloads(changed)["greeter-replica"])["function"]["image"] != image
    (program / "__main__.py").write_text((program / "__main__.py").read_text() + "\n# only the program changed\n")
    again = manifests(render_manifests(program, tmp_path / "third"))  # .dockerignore leaves __main__.py out
    assert containers(workloads(again)["greeter-replica"])["function"]["image"] == containers(workloads(changed)["greeter-replica"])["function"]["image"]


RELAXED = """
import pulumi
import metaparticle_pulumi as mp

fn = mp.Container(
    image="ghcr.io/example/fn:1.0", port=8081, read_only_root_filesystem=False, run_as_user=0,
    resources={"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "512Mi"}},
)
mp.Service("svc", function=fn, env={"PLAIN": "yes", "TOKEN": pulumi.Output.secret("s3cret")})
"""


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_a_container_relaxes_what_its_image_needs_and_gets_secret_env_by_reference(tmp_path, version):
    program = write_program(tmp_path / "relaxed", RELAXED)
    docs = manifests(render_manifests(program, tmp_path / "out"))
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)
    pod = containers(workloads(docs)["svc"])
    server = pod["function"]
    assert server["image"] == "ghcr.io/example/fn:1.0" and "command" not in server
    assert server["securityContext"]["readOnlyRootFilesystem"] is False
    assert (server["securityContext"]["runAsUser"], server["securityContext"]["runAsNonRoot"]) == (0, False)
    assert pod["runtime"]["securityContext"]["readOnlyRootFilesystem"] is True  # ours stays hardened
    assert server["resources"] == {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "512Mi"}}
    env = env_of(server)
    assert env["PLAIN"] == "yes"
    assert env["TOKEN"] == {"valueFrom": {"secretKeyRef": {"name": "svc-env", "key": "TOKEN"}}}
    assert env_of(pod["runtime"])["MP_FUNCTION_URL"] == "http://127.0.0.1:8081"


@pytest.mark.parametrize(
    "declaration, message",
    [
        ("mp.Service('svc', function=mp.Container(image='fn:1'))", "port 8080 is the runtime's HTTP entry port"),
        ("mp.Spread('s', function=mp.Container(command='node s.js'))", "needs image= or build="),
        ("mp.Spread('s', function=mp.Container(build='.', command='node s.js'))", "has no Dockerfile"),
    ],
)
def test_what_cannot_run_in_a_pod_is_refused_clearly(tmp_path, declaration, message):
    program = write_program(tmp_path / "bad", "import metaparticle_pulumi as mp\n" + declaration + "\n")
    with pytest.raises(ProgramError, match=message):
        render_manifests(program, tmp_path / "out")
