"""The real engine: every example through `preview / up / up again / a changed config / destroy /
stack rm`, by the Pulumi CLI and the Kubernetes provider, against a real kube-apiserver whose
controller-manager, scheduler and kwok's fake nodes make Deployments Available.

Needs `scripts/cluster up`; without it these tests skip, unless MP_REQUIRE_CLUSTER=1 (CI), where
they fail. Images are not built by the engine here (the Docker provider cannot be built from the
module proxy): `metaparticle:imageBuild=external` references the content-tagged image by name.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlparse

import pytest

from conftest import wait_until
from engine_support import Cluster, cluster_environment, copy_project
from target_support import EXAMPLE_ENTRY, DEPLOYED_ROLES, EXAMPLE_ROLES

pytestmark = [pytest.mark.engine, pytest.mark.timeout(900)]

PROJECTS = [*EXAMPLE_ROLES, "root"]
#: The roles of each project (the root project deploys the scatter/gather example).
ROLES = {**DEPLOYED_ROLES, "root": DEPLOYED_ROLES["scatter_gather"]}
ENTRY = {**EXAMPLE_ENTRY, "root": EXAMPLE_ENTRY["scatter_gather"]}
COMPONENT = {"hello_world": "Service", "spread": "Spread", "shard": "Shard", "scatter_gather": "ScatterGather", "root": "ScatterGather"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Cluster:
    return Cluster(cluster_environment(tmp_path_factory.mktemp("pulumi-backend")))


def _config(namespace: str) -> list[str]:
    return ["-c", f"metaparticle:namespace={namespace}", "-c", "metaparticle:imageBuild=external"]


def _expected_children(project: Path, namespace: str) -> Counter[tuple[str, str]]:
    """The custom resources the program declares, as evaluated offline under Pulumi's mocks."""
    from metaparticle_pulumi import testing

    stack = testing.evaluate(project, "kubernetes", config={"metaparticle:namespace": namespace, "metaparticle:imageBuild": "external"})
    return Counter((r.type, r.name) for r in stack.resources() if not r.type.startswith("metaparticle:"))


def _state(cluster: Cluster, project: Path, stack: str) -> list[dict[str, Any]]:
    return json.loads(cluster.pulumi("stack", "export", "--stack", stack, cwd=project))["deployment"].get("resources") or []


def _name(urn: str) -> str:
    return urn.rsplit("::", 1)[-1]


@pytest.mark.parametrize("name", PROJECTS)
def test_the_engine_previews_deploys_keeps_and_destroys_every_example(cluster: Cluster, name: str, tmp_path: Path) -> None:
    project = copy_project(name, tmp_path)
    namespace = cluster.namespace(f"mp-{name.replace('_', '-')}")
    stack = "e2e"
    config = _config(namespace)
    expected = _expected_children(project, namespace)
    roles = ROLES[name]
    try:
        # preview: a plan to create the stack, one component and every child, and nothing else
        plan = cluster.engine("preview", project, stack, *config, tmp=tmp_path)
        total = sum(expected.values()) + 2  # + the stack and the component
        assert plan["changes"] == {"create": total}, plan

        # up: every object exists in the API server and every Deployment is Available
        first = cluster.engine("up", project, stack, tmp=tmp_path)
        assert first["changes"] == {"create": total}, first
        entry = ENTRY[name]
        assert first["outputs"] == {
            "url": f"http://{entry}.{namespace}.svc.cluster.local:8080",
            "grpc_url": f"grpc://{entry}.{namespace}.svc.cluster.local:50051",
        }
        objects = cluster.objects(namespace)
        deployments = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Deployment"}
        assert {n: d["spec"]["replicas"] for n, d in deployments.items()} == roles
        for d in deployments.values():
            conditions = {c["type"]: c["status"] for c in d["status"].get("conditions", [])}
            assert conditions.get("Available") == "True", f"{d['metadata']['name']}: {d['status']}"
            assert d["status"].get("readyReplicas") == d["spec"]["replicas"]
        pods = [o for o in objects if o["kind"] == "Pod"]
        assert len(pods) == sum(roles.values()), "a pod per replica, each admitted under Pod Security restricted"
        for kind in ("Service", "NetworkPolicy"):
            assert {o["metadata"]["name"] for o in objects if o["kind"] == kind} == set(roles)
        assert {o["metadata"]["name"] for o in objects if o["kind"] == "PodDisruptionBudget"} == {r for r, n in roles.items() if n > 1}

        # the state holds exactly what the mocks predicted, each child parented by its component
        state = _state(cluster, project, stack)
        children = Counter(
            (r["type"], _name(r["urn"])) for r in state
            if r.get("custom") and not r["type"].startswith("pulumi:providers:")
        )
        assert children == expected
        (component,) = [r for r in state if r["type"] == f"metaparticle:index:{COMPONENT[name]}"]
        for r in state:
            if r.get("custom") and not r["type"].startswith("pulumi:providers:"):
                assert r.get("parent") == component["urn"], f"{r['urn']} is not a child of its pattern"
        assert set(component.get("outputs", {})) >= {"url", "grpc_url"}

        # a second up of the unchanged program changes nothing
        again = cluster.engine("up", project, stack, tmp=tmp_path)
        assert again["changes"] == {"same": total}, again
        assert again["outputs"] == first["outputs"]

        # destroy leaves nothing of ours in the namespace, and stack rm removes the stack
        gone = cluster.engine("destroy", project, stack, "--remove", tmp=tmp_path)
        assert gone["changes"] == {"delete": total}, gone
        left = [f"{o['kind']}/{o['metadata']['name']}" for o in cluster.objects(namespace, selector=None) if o["kind"] != "Secret" or not o["metadata"]["name"].startswith("default-token")]
        assert not [x for x in left if not x.startswith("Pod/")] and not _live_pods(cluster, namespace), left
        assert not (project / f"Pulumi.{stack}.yaml").exists()
        assert stack not in cluster.pulumi("stack", "ls", "--json", cwd=project)
    finally:
        cluster.metaparticle("destroy", str(project), "--stack", stack, "--remove", check=False)
        cluster.delete_namespace(namespace)


def _live_pods(cluster: Cluster, namespace: str) -> list[str]:
    """Pods not yet gone (a deleted Deployment's pods terminate shortly after it)."""
    import time

    deadline = time.monotonic() + 60
    while True:
        pods = [o["metadata"]["name"] for o in cluster.objects(namespace, kinds="pods", selector=None)]
        if not pods or time.monotonic() > deadline:
            return pods
        time.sleep(0.5)


@pytest.mark.parametrize(
    ("name", "replicas", "changes"),
    [
        # one Deployment's replica count: an in-place update of that Deployment only
        ("spread", "5", {"update": 1}),
        # two replicas per shard: each shard's Deployment updated, a disruption budget created for each
        ("shard", "2", {"update": 3, "create": 3}),
    ],
)
def test_a_replica_change_is_an_update_of_exactly_the_affected_objects(
    cluster: Cluster, name: str, replicas: str, changes: dict[str, int], tmp_path: Path
) -> None:
    project = copy_project(name, tmp_path)
    namespace = cluster.namespace(f"mp-{name}-scale")
    stack = "scale"
    try:
        first = cluster.engine("up", project, stack, *_config(namespace), tmp=tmp_path)
        total = first["changes"]["create"]
        plan = cluster.engine("preview", project, stack, "-c", f"replicas={replicas}", tmp=tmp_path)
        unchanged = total - changes.get("update", 0)
        assert plan["changes"] == {**changes, "same": unchanged}, plan
        done = cluster.engine("up", project, stack, tmp=tmp_path)
        assert done["changes"] == {**changes, "same": unchanged}, done
        deployments = {o["metadata"]["name"]: o for o in cluster.objects(namespace, kinds="deployments")}
        scaled = {n: 2 if n == ENTRY[name] else int(replicas) for n in ROLES[name]}  # routers: 2
        assert {n: d["spec"]["replicas"] for n, d in deployments.items()} == scaled
        # The engine waits for a scaled-up Deployment's new pods; after a scale-down the controller
        # reports the pods it removed a moment later (its status lags the spec): wait for that.
        deadline = time.monotonic() + 60
        while True:
            ready = {o["metadata"]["name"]: o["status"].get("readyReplicas") for o in cluster.objects(namespace, kinds="deployments")}
            if ready == scaled or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert ready == scaled
        pdbs = {o["metadata"]["name"] for o in cluster.objects(namespace, kinds="poddisruptionbudgets")}
        assert pdbs == {n for n, r in scaled.items() if r > 1}
    finally:
        cluster.metaparticle("destroy", str(project), "--stack", stack, "--remove", check=False)
        cluster.delete_namespace(namespace)


def test_the_namespace_refuses_pods_that_break_the_restricted_standard(cluster: Cluster) -> None:
    """The proof above means something: the same API server refuses a pod without our hardening."""
    namespace = cluster.namespace("mp-psa")
    try:
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "plain", "namespace": namespace},
            "spec": {"containers": [{"name": "c", "image": "python:3.11-slim"}]},
        }
        done = subprocess.run(
            ["kubectl", "apply", "-f", "-"], input=json.dumps(pod), env=cluster.env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode != 0
        assert 'violates PodSecurity "restricted:latest"' in done.stderr, done.stderr
        assert "runAsNonRoot" in done.stderr and "seccompProfile" in done.stderr
        assert not cluster.objects(namespace, kinds="pods", selector=None)
    finally:
        cluster.delete_namespace(namespace)


def test_the_api_server_accepts_restricted_egress_and_a_program_of_the_users_own(cluster: Cluster, tmp_path: Path) -> None:
    """A program written here (its function in a module of its own, so by reference) with
    egress="restricted": the real API server stores exactly the policies the mocks predicted."""
    project = tmp_path / "orders"
    project.mkdir()
    (project / "Pulumi.yaml").write_text("name: orders\nruntime: python\n")
    (project / "handlers.py").write_text("def handle(request, ctx):\n    return {'shard': ctx.index}\n")
    (project / "__main__.py").write_text(
        "import pulumi\nimport metaparticle_pulumi as mp\nfrom handlers import handle\n"
        "orders = mp.Shard('orders', function=handle, shards=2, key='customer', egress='restricted')\n"
        "pulumi.export('url', orders.url)\n"
    )
    namespace = cluster.namespace("mp-egress")
    try:
        first = cluster.engine("up", project, "e2e", *_config(namespace), tmp=tmp_path)
        assert first["outputs"]["url"] == f"http://orders-router.{namespace}.svc.cluster.local:8080"
        policies = {o["metadata"]["name"]: o["spec"] for o in cluster.objects(namespace, kinds="networkpolicies")}
        assert set(policies) == {"orders-router", "orders-shard-0", "orders-shard-1"}
        router = policies["orders-router"]
        assert router["policyTypes"] == ["Ingress", "Egress"]
        called = [t["podSelector"]["matchLabels"]["app.kubernetes.io/name"] for t in router["egress"][1]["to"]]
        assert called == ["orders-shard-0", "orders-shard-1"]
        for shard in ("orders-shard-0", "orders-shard-1"):
            assert [p["port"] for p in policies[shard]["egress"][0]["ports"]] == [53, 53]
            assert len(policies[shard]["egress"]) == 1
        shard = next(d for d in cluster.objects(namespace, kinds="deployments") if d["metadata"]["name"] == "orders-shard-0")
        env = {e["name"]: e.get("value") for e in shard["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["MP_FUNCTION"] == "handlers:handle", "a function of the program's own module travels by reference"
        gone = cluster.engine("destroy", project, "e2e", "--remove", tmp=tmp_path)
        assert gone["changes"] == {"delete": first["changes"]["create"]}
    finally:
        cluster.metaparticle("destroy", str(project), "--stack", "e2e", "--remove", check=False)
        cluster.delete_namespace(namespace)


@dataclass
class HelloStack:
    """The hello_world project on a stack and namespace of its own, for `up`s that get interrupted."""

    cluster: Cluster
    project: Path
    stack: str
    namespace: str
    tmp_path: Path
    sessions: list[int] = field(default_factory=list)

    @property
    def locks(self) -> Path:
        """Where the session's file backend keeps stack locks."""
        return Path(urlparse(self.cluster.env["PULUMI_BACKEND_URL"]).path) / ".pulumi" / "locks"

    def up_under_way(self, output: int) -> "subprocess.Popen[str]":
        """`metaparticle up` in a session of its own, once it holds the stack's lock and has
        created a Deployment (the update is under way)."""
        up = subprocess.Popen(
            [sys.executable, "-m", "metaparticle_pulumi", "up", str(self.project), "--stack", self.stack, *_config(self.namespace)],
            env=self.cluster.env, stdout=output, stderr=output, text=True, start_new_session=True,
        )
        self.sessions.append(up.pid)
        deadline = time.monotonic() + 120
        while not (any(self.locks.rglob("*.json")) and self.cluster.objects(self.namespace, kinds="deployments")):
            if up.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the up never held the lock with a Deployment created (exit {up.poll()})")
            time.sleep(0.1)
        return up

    def up_deploys_hello_world(self) -> None:
        done = self.cluster.engine("up", self.project, self.stack, tmp=self.tmp_path)
        assert done["outputs"]["url"] == f"http://{ENTRY['hello_world']}.{self.namespace}.svc.cluster.local:8080"
        deployments = self.cluster.objects(self.namespace, kinds="deployments")
        assert {d["metadata"]["name"]: d["status"].get("readyReplicas") for d in deployments} == ROLES["hello_world"]


@pytest.fixture
def hello_stack(cluster: Cluster, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[HelloStack]:
    """A HelloStack; afterwards every process its `up`s started is killed, the stack unlocked and
    destroyed, and the namespace deleted."""
    name = request.node.name.removeprefix("test_")[:20].replace("_", "-").strip("-")
    hello = HelloStack(cluster, copy_project("hello_world", tmp_path), name, cluster.namespace(f"mp-{name}"), tmp_path)
    try:
        yield hello
    finally:
        for sid in hello.sessions:
            _kill_session(sid)
        cluster.metaparticle("cancel", str(hello.project), "--stack", hello.stack, check=False)
        cluster.metaparticle("destroy", str(hello.project), "--stack", hello.stack, "--remove", check=False)
        cluster.delete_namespace(hello.namespace)


def test_a_stack_left_locked_by_a_killed_up_is_unlocked_by_cancel_and_the_next_up_completes(hello_stack: HelloStack) -> None:
    cluster, project, stack, namespace, locks = hello_stack.cluster, hello_stack.project, hello_stack.stack, hello_stack.namespace, hello_stack.locks
    # An up killed (SIGKILL: nothing can clean up) while it holds the lock and creates objects.
    first = hello_stack.up_under_way(output=subprocess.DEVNULL)
    _kill_session(first.pid)
    first.wait(timeout=30)
    assert any(locks.rglob("*.json")), "the killed up left no lock"

    # The next up is refused, and the error says how to unlock the stack.
    refused = cluster.metaparticle("up", str(project), "--stack", stack, check=False)
    assert refused.returncode == 1, refused.stdout
    assert "currently locked" in refused.stderr, refused.stderr
    assert f"metaparticle cancel {project} --stack {stack}" in refused.stderr, refused.stderr

    # cancel removes the lock and names what the killed up was creating: the Deployment it
    # had created (in the cluster, not in the state) among them.
    unlocked = cluster.metaparticle("cancel", str(project), "--stack", stack)
    assert f"stack {stack!r} is unlocked" in unlocked.stderr
    assert not any(locks.rglob("*.json"))
    creating = [line.split() for line in unlocked.stdout.splitlines() if line.strip()]
    assert ["Deployment", f"{namespace}/hello"] in creating, unlocked.stdout
    # Deleting those (as the message says), the next up finishes what the killed one began.
    for kind, where in creating:
        ns, _, name = where.rpartition("/")
        cluster.kubectl("delete", kind.lower(), name, "-n", ns, "--ignore-not-found", "--wait=true")
    hello_stack.up_deploys_hello_world()
    again = cluster.engine("up", project, stack, tmp=hello_stack.tmp_path)
    assert set(again["changes"]) == {"same"}, again


def test_ctrl_c_during_up_lets_the_engine_cancel_release_the_lock_and_the_next_up_finish(hello_stack: HelloStack) -> None:
    # Ctrl-C in a terminal: SIGINT to the whole foreground process group (CLI and engine).
    first = hello_stack.up_under_way(output=subprocess.PIPE)
    os.killpg(first.pid, signal.SIGINT)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 130, err[-3000:]
    assert "interrupted: the engine stopped the operation" in err and "Traceback" not in err, err[-3000:]
    # The engine released the lock, left no pending operation, and nothing of the session runs on.
    assert not any(hello_stack.locks.rglob("*.json"))
    state = hello_stack.cluster.pulumi("stack", "export", "--stack", hello_stack.stack, cwd=hello_stack.project)
    deployment = json.loads(state)["deployment"]
    assert not deployment.get("pending_operations"), deployment.get("pending_operations")
    assert wait_until(lambda: not _session_processes(first.pid), 10), _session_processes(first.pid)

    # The same command again finishes the deployment, without a cancel.
    hello_stack.up_deploys_hello_world()


def _session_processes(sid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == sid:
                    found.append(int(entry))
            except (ProcessLookupError, PermissionError):
                pass
    return found


def _kill_session(sid: int) -> None:
    """SIGKILL to every process of session `sid`: the CLI, the engine and the provider plugins,
    which the engine starts in process groups of their own."""
    for pid in _session_processes(sid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _volumes_for(cluster: Cluster, namespace: str, claims: list[str]) -> list[str]:
    """A PersistentVolume pre-bound to each claim (the cluster has no provisioner): the claims bind,
    the scheduler places the pods and kwok reports them Ready."""
    names = []
    for claim in claims:
        name = f"{namespace}-{claim}"
        volume = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": name},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Delete",
                "hostPath": {"path": f"/tmp/{name}"},
                "claimRef": {"namespace": namespace, "name": claim},
            },
        }
        cluster.kubectl("apply", "-f", "-", input=json.dumps(volume))
        names.append(name)
    return names


def test_the_kv_example_deploys_a_statefulset_per_shard_whose_data_outlives_destroy(cluster: Cluster, tmp_path: Path) -> None:
    """storage=: StatefulSets (one pod each) with bound claims, unchanged on a second up; destroy
    removes the StatefulSets and keeps every claim (persistentVolumeClaimRetentionPolicy Retain)."""
    project = copy_project("kv", tmp_path)
    namespace = cluster.namespace("mp-kv")
    claims = [f"data-kv-shard-{i}-0" for i in range(3)]
    volumes = _volumes_for(cluster, namespace, claims)
    stack = "e2e"
    try:
        first = cluster.engine("up", project, stack, *_config(namespace), tmp=tmp_path)
        objects = cluster.objects(namespace, kinds="statefulsets,deployments,pods,persistentvolumeclaims", selector=None)
        sets = {o["metadata"]["name"]: o for o in objects if o["kind"] == "StatefulSet"}
        assert set(sets) == {"kv-shard-0", "kv-shard-1", "kv-shard-2"}
        for s in sets.values():
            assert s["status"].get("readyReplicas") == 1, s["status"]
        assert {o["metadata"]["name"] for o in objects if o["kind"] == "Deployment"} == {"kv-router"}
        bound = {o["metadata"]["name"]: o["status"].get("phase") for o in objects if o["kind"] == "PersistentVolumeClaim"}
        assert bound == {c: "Bound" for c in claims}
        again = cluster.engine("up", project, stack, tmp=tmp_path)
        assert again["changes"] == {"same": first["changes"]["create"]}, again
        gone = cluster.engine("destroy", project, stack, "--remove", tmp=tmp_path)
        assert gone["changes"] == {"delete": first["changes"]["create"]}
        assert not cluster.objects(namespace, kinds="statefulsets", selector=None)
        kept = {o["metadata"]["name"] for o in cluster.objects(namespace, kinds="persistentvolumeclaims", selector=None)}
        assert kept == set(claims), "the data outlives pulumi destroy"
    finally:
        cluster.metaparticle("destroy", str(project), "--stack", stack, "--remove", check=False)
        cluster.delete_namespace(namespace)
        cluster.kubectl("delete", "pv", *volumes, "--wait=false", "--ignore-not-found", check=False)
