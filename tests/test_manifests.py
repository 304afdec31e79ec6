"""Offline rendering: kubectl-ready manifests (validated against Kubernetes' own schemas), the preview
tree, and the testing helpers users write their own infrastructure tests with."""

from __future__ import annotations

import subprocess

import json
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

import metaparticle_pulumi as mp
from metaparticle_pulumi import testing
from metaparticle_pulumi._manifests import HEADER, preview_tree, render_manifests

from target_support import EXAMPLE_ROLES, copy_program, write_program
from conftest import METAPARTICLE

PATTERNS = list(EXAMPLE_ROLES)
#: The newest Kubernetes the installed validator knows, and the oldest one supported (1.30).
K8S_VERSIONS = ["1.30.0", kubernetes_validate.utils.latest_version()]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    out = {}
    for name in PATTERNS:
        base = tmp_path_factory.mktemp(name)
        program = copy_program(name, base)
        out[name] = (program, render_manifests(program, base / "manifests"))
    return out


def load(path: Path) -> dict:
    (doc,) = list(yaml.safe_load_all(path.read_text()))
    return doc


def test_the_validator_knows_a_recent_kubernetes():
    major, minor = K8S_VERSIONS[-1].split(".")[:2]
    assert (int(major), int(minor)) >= (1, 30)


@pytest.mark.parametrize("example", PATTERNS)
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_manifest_is_a_valid_kubernetes_object(rendered, example, version):
    _, paths = rendered[example]
    assert paths
    for path in paths:
        doc = load(path)
        assert list(doc)[:3] == ["apiVersion", "kind", "metadata"]
        kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("example", PATTERNS)
def test_one_file_per_object_and_unique_names_per_kind_and_namespace(rendered, example):
    _, paths = rendered[example]
    docs = [load(p) for p in paths]
    keys = [(d["kind"], d["metadata"]["namespace"], d["metadata"]["name"]) for d in docs]
    assert len(keys) == len(set(keys))
    roles = EXAMPLE_ROLES[example]
    assert sorted(n for k, _, n in keys if k == "Deployment") == sorted(roles)
    assert all(p.read_text().startswith(HEADER) for p in paths)
    # kubectl applies a directory in file-name order: Services before the Deployments that call them.
    kinds = [d["kind"] for d in docs]
    assert kinds.index("Service") < kinds.index("Deployment") < kinds.index("NetworkPolicy")


@pytest.mark.parametrize("example", PATTERNS)
def test_manifests_reference_the_image_by_its_content_tag_not_a_digest(rendered, example):
    program, paths = rendered[example]
    images = {
        c["image"]
        for p in paths
        if (d := load(p))["kind"] == "Deployment"
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    (image,) = images
    assert "@sha256:" not in image
    repo, tag = image.rsplit(":", 1)
    assert len(tag) == 16
    assert (program / ".metaparticle" / "build").is_dir(), "the context to build that tag from is written"


def test_addresses_inside_the_manifests_point_into_their_namespace(tmp_path):
    program = copy_program("shard", tmp_path)
    paths = render_manifests(program, tmp_path / "out", config={"metaparticle:namespace": "users"})
    docs = [load(p) for p in paths]
    assert {d["metadata"]["namespace"] for d in docs} == {"users"}
    (router,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "users-router"]
    env = {e["name"]: e.get("value") for e in router["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert json.loads(env["MP_UPSTREAMS"]) == [f"dns:///users-shard-{i}.users.svc.cluster.local:50051" for i in range(3)]


def test_rendering_twice_gives_the_same_bytes_and_removes_only_stale_rendered_files(tmp_path):
    program = copy_program("spread", tmp_path)
    out = tmp_path / "out"
    first = {p.name: p.read_bytes() for p in render_manifests(program, out)}
    (out / "00-deployment-gone.yaml").write_text(HEADER + "kind: Deployment\n")
    (out / "kustomization.yaml").write_text("resources: []\n")
    second = {p.name: p.read_bytes() for p in render_manifests(program, out)}
    assert first == second
    assert not (out / "00-deployment-gone.yaml").exists()
    assert (out / "kustomization.yaml").exists(), "files the render did not write are left alone"


def test_secrets_options_and_autoscaling_render_valid_objects(tmp_path):
    program = write_program(
        tmp_path / "prog",
        "import pulumi\nimport metaparticle_pulumi as mp\n"
        "def handler(request):\n    return request\n"
        "mp.Spread('api', function=handler, replicas=2, public=True, autoscale=(2, 5, 60),\n"
        "          tls_secret='api-tls', labels={'team': 'web'}, annotations={'note': 'x'},\n"
        "          env={'TOKEN': pulumi.Output.secret('t0ken'), 'MODE': 'fast'})\n",
    )
    left = render_manifests(program, tmp_path / "out")
    assert left.left_out == ["api-env"], "a secret value was written without --include-secrets"
    assert "t0ken" not in "".join(p.read_text() for p in left)
    paths = render_manifests(program, tmp_path / "out", include_secrets=True)
    docs = {(d["kind"], d["metadata"]["name"]): d for d in map(load, paths)}
    assert set(k for k, _ in docs) == {"Secret", "Service", "Deployment", "PodDisruptionBudget", "HorizontalPodAutoscaler", "NetworkPolicy"}
    assert docs[("Secret", "api-env")]["stringData"] == {"TOKEN": "t0ken"}
    (secret_file,) = [p for p in paths if "-secret-" in p.name]
    assert secret_file.stat().st_mode & 0o777 == 0o600
    for doc in docs.values():
        kubernetes_validate.validate(doc, K8S_VERSIONS[-1], strict=True)


def test_render_writes_the_patterns_specs_and_names_the_programs_own_objects_it_leaves_alone(tmp_path):
    program = write_program(
        tmp_path / "prog",
        "import pulumi_kubernetes as k8s\nimport metaparticle_pulumi as mp\n"
        "def handler(request):\n    return request\n"
        "k8s.core.v1.ConfigMap('settings', metadata={'name': 'settings'}, data={'a': '1'})\n"
        "k8s.Provider('cluster')\n"
        "mp.Service('api', function=handler)\n",
    )
    written = render_manifests(program, tmp_path / "out")
    assert sorted(p.name for p in written) == ["04-service-api.yaml", "05-deployment-api.yaml", "08-networkpolicy-api.yaml"]
    assert written.outside == ["kubernetes:core/v1:ConfigMap settings"]
    cli = subprocess.run([METAPARTICLE, "render", str(program), "-o", str(tmp_path / "cli")], capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    assert "not rendered: kubernetes:core/v1:ConfigMap settings (declared outside a pattern" in cli.stderr


def test_a_program_error_is_reported_not_rendered(tmp_path):
    from metaparticle_pulumi._program import ProgramError

    program = write_program(tmp_path / "bad", "import metaparticle_pulumi as mp\nmp.Spread('api', function=print, replicas=0)\n")
    with pytest.raises(ProgramError, match="replicas"):
        render_manifests(program, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.yaml"))


# --- preview tree -----------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["kubernetes", "docker"])
def test_the_preview_tree_shows_each_pattern_and_its_children(tmp_path, target):
    program = copy_program("spread", tmp_path)
    tree, images = preview_tree(program, target).split("\n\n")
    lines = tree.splitlines()
    assert lines[0] == "metaparticle:index:Spread  api"
    # What goes into the image, so a user can check nothing unexpected does.
    assert re.fullmatch(r"image spread-api:[0-9a-f]{16}: \d+ files, \d+ bytes \(the program's own: 2 files, \d+ bytes\)\n", images), images
    children = [line[3:] for line in lines[1:]]
    assert all(line.startswith(("├─ ", "└─ ")) for line in lines[1:])
    assert "docker:index/image:Image  api-image" in children
    if target == "kubernetes":
        assert {"kubernetes:apps/v1:Deployment  api-router", "kubernetes:apps/v1:Deployment  api-replica",
                "kubernetes:core/v1:Service  api-replica", "kubernetes:policy/v1:PodDisruptionBudget  api-replica"} <= set(children)
        assert len(children) == 1 + 2 + 2 + 2 + 2  # image, 2 Deployments, 2 Services, 2 policies, 2 budgets
    else:
        assert {"docker:index/network:Network  api-net", "docker:index/container:Container  api-replica-2",
                "docker:index/container:Container  api-router-net"} <= set(children)
        assert len(children) == 1 + 1 + 1 + 2 + 3  # image, network, the routers' namespace holder, 2 routers, 3 replicas


def test_the_preview_tree_lists_resources_outside_patterns_first(tmp_path):
    program = write_program(
        tmp_path / "prog",
        "import pulumi_kubernetes as k8s\nimport pulumi\nimport metaparticle_pulumi as mp\n"
        "cluster = k8s.Provider('cluster')\n"
        "def handler(request):\n    return request\n"
        "mp.Service('a', function=handler, opts=pulumi.ResourceOptions(provider=cluster))\n"
        "mp.Service('b', function=handler)\n",
    )
    text = preview_tree(program)
    assert text.splitlines()[0] == "pulumi:providers:kubernetes  cluster"
    assert text.index("metaparticle:index:Service  a") < text.index("metaparticle:index:Service  b")


# --- testing helpers --------------------------------------------------------------------------------


def test_mocked_stacks_answer_questions_about_what_was_declared():
    def handler(request):
        return request

    with testing.mocked(target="kubernetes") as stack:
        api = mp.Spread("api", function=handler, replicas=3)
    assert stack.patterns == [api]
    deployment = stack.resource("kubernetes:apps/v1:Deployment", "api-replica")
    assert deployment.inputs["spec"]["replicas"] == 3
    assert [o["metadata"]["name"] for o in stack.objects(kind="Deployment", name="api-router")] == ["api-router"]
    assert len(stack.resources(type="kubernetes:apps/v1:Deployment")) == 2
    assert stack.value(api.url) == "http://api-router.default.svc.cluster.local:8080"
    with pytest.raises(LookupError):
        stack.resource("kubernetes:apps/v1:Deployment", "missing")


def test_a_failing_declaration_leaves_the_next_mocked_stack_clean():
    with pytest.raises(mp.PatternError):
        with testing.mocked():
            mp.Spread("api", function=lambda r: r, replicas=-1)
    with testing.mocked() as stack:
        mp.Service("ok", function=lambda r: r)
    assert len(stack.objects(kind="Deployment")) == 1


def test_evaluate_runs_a_program_directory(tmp_path):
    stack = testing.evaluate(copy_program("hello_world", tmp_path))
    assert [p.topology.name for p in stack.patterns] == ["hello"]
    assert len(stack.objects(kind="Deployment")) == 1


def test_restricted_egress_allows_dns_and_each_roles_own_upstreams_only(tmp_path):
    program = write_program(
        tmp_path / "prog",
        "import metaparticle_pulumi as mp\n"
        "def leaf(request, ctx):\n    return ctx.index\n"
        "def merge(results):\n    return results\n"
        "mp.ScatterGather('search', leaf=leaf, gather=merge, leaves=2, egress='restricted')\n",
    )
    docs = {d["metadata"]["name"]: d for d in map(load, render_manifests(program, tmp_path / "out")) if d["kind"] == "NetworkPolicy"}
    dns = {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}
    root = docs["search-root"]["spec"]
    assert root["policyTypes"] == ["Ingress", "Egress"]
    assert root["egress"][0] == dns
    assert [t["podSelector"]["matchLabels"]["app.kubernetes.io/name"] for t in root["egress"][1]["to"]] == ["search-leaf-0", "search-leaf-1"]
    assert root["egress"][1]["ports"] == [{"port": 50051, "protocol": "TCP"}]
    for leaf in ("search-leaf-0", "search-leaf-1"):
        assert docs[leaf]["spec"]["egress"] == [dns], "a leaf calls nothing: DNS only"
    for doc in docs.values():
        kubernetes_validate.validate(doc, K8S_VERSIONS[-1], strict=True)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_the_kv_example_renders_a_valid_statefulset_per_shard_with_its_claim(tmp_path, version):
    program = copy_program("kv", tmp_path)
    paths = render_manifests(program, tmp_path / "out", config={"kv:storageClass": "standard"})
    docs = [load(p) for p in paths]
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)
    workloads = {(d["kind"], d["metadata"]["name"]) for d in docs if d["kind"] in ("Deployment", "StatefulSet")}
    assert workloads == {("Deployment", "kv-router"), *(("StatefulSet", f"kv-shard-{i}") for i in range(3))}
    for doc in docs:
        if doc["kind"] == "StatefulSet":
            (claim,) = doc["spec"]["volumeClaimTemplates"]
            assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
            assert claim["spec"]["storageClassName"] == "standard"
    names = [p.name for p in paths]
    assert names.index("04-service-kv-shard-0.yaml") < names.index("05-statefulset-kv-shard-0.yaml")
    assert not (program / ".metaparticle" / "state").exists(), "rendering writes no local data"
