"""The Kubernetes target, checked offline against Pulumi's mocks: what each pattern creates and how
the objects fit together (selectors, addresses, policies), production defaults, and options."""

from __future__ import annotations

import json
import pickle
from types import SimpleNamespace

import pulumi
import pulumi_kubernetes as k8s
import pytest

import metaparticle_pulumi as mp
from metaparticle_pulumi import testing
from metaparticle_pulumi._image import FUNCTIONS_DIR
from metaparticle_pulumi._targets import _shared
from metaparticle_pulumi._topology import ROUTER_KINDS, role_env

from target_support import (
    EXAMPLE_ENTRY,
    DEPLOYED_ROLES,
    EXAMPLE_ROLES,
    FAKE_DIGEST,
    by_name,
    container_of,
    dumps,
    env_of,
    evaluate_examples,
    matches,
)

PATTERNS = list(EXAMPLE_ROLES)
STANDARD_LABELS = {"app.kubernetes.io/part-of": "metaparticle", "app.kubernetes.io/managed-by": "pulumi"}


def handler(request):
    return request


@pytest.fixture(scope="module")
def stacks(tmp_path_factory):
    return evaluate_examples(tmp_path_factory, "kubernetes")


def kinds(stack) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in stack.resources():
        counts[r.type] = counts.get(r.type, 0) + 1
    return counts


# --- what each pattern creates ---------------------------------------------------------------


@pytest.mark.parametrize("example", PATTERNS)
def test_each_role_gets_a_deployment_a_service_and_a_network_policy(stacks, example):
    stack = stacks[example]
    roles = DEPLOYED_ROLES[example]
    n = len(roles)
    pdbs = sum(1 for replicas in roles.values() if replicas > 1)
    pattern_type = {"hello_world": "Service", "spread": "Spread", "shard": "Shard", "scatter_gather": "ScatterGather"}[example]
    assert kinds(stack) == {
        f"metaparticle:index:{pattern_type}": 1,
        "docker:index/image:Image": 1,
        "kubernetes:apps/v1:Deployment": n,
        "kubernetes:core/v1:Service": n,
        "kubernetes:networking.k8s.io/v1:NetworkPolicy": n,
        **({"kubernetes:policy/v1:PodDisruptionBudget": pdbs} if pdbs else {}),
    }
    assert set(by_name(stack.objects(kind="Deployment"))) == set(roles)
    assert set(by_name(stack.objects(kind="Service"))) == set(roles)


@pytest.mark.parametrize("example", PATTERNS)
def test_deployments_run_the_replicas_of_their_role(stacks, example):
    deployments = by_name(stacks[example].objects(kind="Deployment"))
    assert {name: d["spec"]["replicas"] for name, d in deployments.items()} == DEPLOYED_ROLES[example]


@pytest.mark.parametrize("example", PATTERNS)
def test_selectors_select_exactly_their_own_pods(stacks, example):
    stack = stacks[example]
    deployments = by_name(stack.objects(kind="Deployment"))
    pods = {name: d["spec"]["template"]["metadata"]["labels"] for name, d in deployments.items()}
    for name, d in deployments.items():
        selector = d["spec"]["selector"]["matchLabels"]
        assert [p for p, labels in pods.items() if matches(selector, labels)] == [name]
    for kind, path in (("Service", ("spec", "selector")), ("NetworkPolicy", ("spec", "podSelector", "matchLabels")),
                       ("PodDisruptionBudget", ("spec", "selector", "matchLabels"))):
        for obj in stack.objects(kind=kind):
            selector = obj
            for key in path:
                selector = selector[key]
            selected = [p for p, labels in pods.items() if matches(selector, labels)]
            assert selected == [obj["metadata"]["name"]], f"{kind} {obj['metadata']['name']} selects {selected}"


@pytest.mark.parametrize("example", PATTERNS)
def test_every_object_and_pod_carries_the_standard_labels(stacks, example):
    stack = stacks[example]
    pattern = stack.patterns[0]
    for obj in stack.objects():
        labels = obj["metadata"]["labels"]
        assert STANDARD_LABELS.items() <= labels.items()
        assert labels["app.kubernetes.io/instance"] == pattern.topology.name
    for d in stack.objects(kind="Deployment"):
        role = pattern.topology.role(d["metadata"]["name"])
        assert d["spec"]["template"]["metadata"]["labels"] == {
            **STANDARD_LABELS,
            "app.kubernetes.io/name": role.name,
            "app.kubernetes.io/instance": pattern.topology.name,
            "app.kubernetes.io/component": role.component,
        }


@pytest.mark.parametrize("example", PATTERNS)
def test_upstream_groups_get_headless_services_and_the_entry_a_cluster_ip(stacks, example):
    services = by_name(stacks[example].objects(kind="Service"))
    entry = services.pop(EXAMPLE_ENTRY[example])
    assert entry["spec"]["type"] == "ClusterIP"
    assert {(p["name"], p["port"]) for p in entry["spec"]["ports"]} == {("grpc", 50051), ("http", 8080), ("metrics", 9090)}
    for name, svc in services.items():
        assert svc["metadata"]["name"] == name
        assert svc["spec"]["clusterIP"] == "None", f"{name} must be headless so DNS gives every replica"
        assert [(p["name"], p["port"]) for p in svc["spec"]["ports"]] == [("grpc", 50051), ("metrics", 9090)]


@pytest.mark.parametrize("example", PATTERNS)
def test_ports_of_entry_and_upstream_containers(stacks, example):
    for name, d in by_name(stacks[example].objects(kind="Deployment")).items():
        ports = {(p["name"], p["containerPort"]) for p in container_of(d)["ports"]}
        expected = {("grpc", 50051), ("http", 8080)} if name == EXAMPLE_ENTRY[example] else {("grpc", 50051)}
        assert ports == expected | {("metrics", 9090)}
        annotations = d["spec"]["template"]["metadata"]["annotations"]
        assert annotations == {"prometheus.io/scrape": "true", "prometheus.io/port": "9090", "prometheus.io/path": "/metrics"}


# --- wiring between roles --------------------------------------------------------------------


@pytest.mark.parametrize(
    "example, router, upstreams",
    [
        ("spread", "api-router", ["api-replica"]),
        ("shard", "users-router", ["users-shard-0", "users-shard-1", "users-shard-2"]),
        ("scatter_gather", "search-root", [f"search-leaf-{i}" for i in range(4)]),
    ],
)
def test_routers_call_the_headless_services_of_their_upstreams_in_order(stacks, example, router, upstreams):
    stack = stacks[example]
    services = by_name(stack.objects(kind="Service"))
    env = env_of(container_of(by_name(stack.objects(kind="Deployment"))[router]))
    assert json.loads(env["MP_UPSTREAMS"]) == [f"dns:///{u}.default.svc.cluster.local:50051" for u in upstreams]
    assert json.loads(env["MP_UPSTREAM_NAMES"]) == upstreams
    if example == "scatter_gather":
        assert json.loads(env["MP_UPSTREAM_REPLICAS"]) == [DEPLOYED_ROLES[example][u] for u in upstreams]
    else:
        assert "MP_UPSTREAM_REPLICAS" not in env
    for u in upstreams:
        assert services[u]["spec"]["clusterIP"] == "None"


@pytest.mark.parametrize("example", PATTERNS)
def test_container_env_is_role_env_with_the_pod_name_as_replica(stacks, example):
    stack = stacks[example]
    topology = stack.patterns[0].topology
    addresses = {r.name: f"dns:///{r.name}.default.svc.cluster.local:50051" for r in topology.roles}
    for d in stack.objects(kind="Deployment"):
        role = topology.role(d["metadata"]["name"])
        fn_file = f"{FUNCTIONS_DIR}/{role.function.file_name}" if role.function and role.function.by_value else None
        # Routers run the compiled router when the image carries it (tests/test_image_router.py).
        router = stack.patterns[0].image.router if role.kind in ROUTER_KINDS else {}
        expected = role_env(topology, role, addresses, replica="x", function_file=fn_file, source_dir="/app", metrics_port=9090, **router)
        expected["MP_REPLICA"] = {"valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
        expected["MP_DRAIN_SECONDS"] = "5"
        assert env_of(container_of(d)) == expected


def test_by_value_functions_are_baked_into_the_image_where_the_env_points(stacks):
    stack = stacks["shard"]  # key=lambda ... in __main__: shipped by value
    image = stack.resources(type="docker:index/image:Image")[0]
    router = env_of(container_of(by_name(stack.objects(kind="Deployment"))["users-router"]))
    path = router["MP_FUNCTION_FILE"]
    assert path.startswith("/app/.metaparticle/functions/key-") and path.endswith(".pkl")
    context = stack.patterns[0].topology.source_dir + "/" + image.inputs["build"]["context"]
    with open(f"{context}/functions/{path.rsplit('/', 1)[1]}", "rb") as fh:
        key = pickle.load(fh)
    assert key({"user": "alice"}) == "alice"


def test_by_reference_functions_are_imported_from_the_program_directory(stacks):
    env = env_of(container_of(by_name(stacks["scatter_gather"].objects(kind="Deployment"))["search-leaf-2"]))
    assert env["MP_FUNCTION"] == "search:search_leaf"
    assert env["MP_SOURCE_DIR"] == "/app"
    assert (env["MP_INDEX"], env["MP_COUNT"]) == ("2", "4")
    assert "MP_FUNCTION_FILE" not in env


# --- image ------------------------------------------------------------------------------------


@pytest.mark.parametrize("example", PATTERNS)
def test_workloads_reference_the_built_image_by_digest(stacks, example):
    stack = stacks[example]
    (image,) = stack.resources(type="docker:index/image:Image")
    name = image.inputs["imageName"]
    assert image.inputs["skipPush"] is True  # no registry configured
    assert image.inputs["build"]["platform"] == "linux/amd64"
    for d in stack.objects(kind="Deployment"):
        assert container_of(d)["image"] == name.split(":")[0] + FAKE_DIGEST


def test_registry_from_config_names_and_pushes_the_image():
    with testing.mocked(config={"metaparticle:registry": "registry.example.com/team"}, project="shop") as stack:
        mp.Service("cart", function=handler)
    (image,) = stack.resources(type="docker:index/image:Image")
    assert image.inputs["imageName"].startswith("registry.example.com/team/shop-cart:")
    assert image.inputs["skipPush"] is False
    (d,) = stack.objects(kind="Deployment")
    assert container_of(d)["image"] == "registry.example.com/team/shop-cart" + FAKE_DIGEST


def test_a_prebuilt_image_skips_the_build():
    with testing.mocked() as stack:
        mp.Spread("api", function=handler, image="ghcr.io/me/api:1.2", replicas=2)
    assert stack.resources(type="docker:index/image:Image") == []
    assert {container_of(d)["image"] for d in stack.objects(kind="Deployment")} == {"ghcr.io/me/api:1.2"}


def test_an_external_image_build_creates_no_image_resource_and_references_the_content_tag():
    """metaparticle:imageBuild=external: the engine needs no Docker provider; the image is the one
    `metaparticle build` (or CI) builds under the same content tag."""
    with testing.mocked(config={"metaparticle:imageBuild": "external"}, project="shop") as stack:
        api = mp.Spread("api", function=handler, replicas=2)
    assert stack.resources(type="docker:index/image:Image") == []
    images = {container_of(d)["image"] for d in stack.objects(kind="Deployment")}
    assert images == {api.image.name}
    assert api.image.name == f"shop-api:{api.image.context.tag}"
    assert "Dockerfile" in api.image.context.files, "the context `metaparticle build` builds from"


def test_an_unknown_image_builder_is_refused_by_name():
    with pytest.raises(mp.PatternError, match="metaparticle:imageBuild must be one of pulumi, external, got 'kaniko'"):
        with testing.mocked(config={"metaparticle:imageBuild": "kaniko"}):
            mp.Service("cart", function=handler)


@pytest.mark.parametrize("kind", ["Spread", "Shard"])
def test_scaling_the_replicas_changes_only_their_own_deployments(kind):
    """Found by the real engine: routers were told their upstreams' replica counts, so every scale
    of a Spread or a Shard rolled its router too."""

    def deployments(replicas: int) -> dict[str, dict]:
        extra = {"key": "user"} if kind == "Shard" else {}
        with testing.mocked(config={"metaparticle:imageBuild": "external"}) as stack:
            getattr(mp, kind)("api", function=handler, replicas=replicas, **extra)
        return by_name(stack.objects(kind="Deployment"))

    before, after = deployments(2), deployments(5)
    assert before["api-router"] == after["api-router"]
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {name for name in before if name != "api-router"}
    for name in changed:
        assert {**before[name], "spec": {**before[name]["spec"], "replicas": 5}} == after[name]


def test_a_preview_of_an_image_to_build_leaves_its_digest_unknown():
    """As with any image Pulumi builds: the digest exists once pushed, so a preview shows it unknown
    (the engine then reports the workloads' image as computed) while the entry's address is known."""
    with testing.mocked(preview=True) as stack:
        api = mp.Spread("api", function=handler, replicas=2)
    (image,) = stack.resources(type="docker:index/image:Image")
    assert image.inputs["imageName"].startswith("test-api:")
    for d in stack.objects(kind="Deployment"):
        assert isinstance(container_of(d)["image"], pulumi.output.Unknown)
    assert stack.value(api.url) == "http://api-router.default.svc.cluster.local:8080"


# --- production defaults -----------------------------------------------------------------------


@pytest.mark.parametrize("example", PATTERNS)
def test_every_pod_is_probed_over_grpc_and_locked_down(stacks, example):
    for d in stacks[example].objects(kind="Deployment"):
        pod = d["spec"]["template"]["spec"]
        c = container_of(d)
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            assert c[probe]["grpc"] == {"port": 50051}
        assert c["securityContext"] == {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
        assert {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}} in pod["volumes"]
        assert c["resources"] == {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}}
        assert pod["terminationGracePeriodSeconds"] >= 5 + 10  # drain + request timeout


#: Every role lets anyone reach its operations port (GET /metrics and /healthz; no requests).
OPS_RULE = {"ports": [{"port": 9090, "protocol": "TCP"}]}


def test_only_the_router_reaches_the_shards_and_anyone_the_entry(stacks):
    stack = stacks["shard"]
    pods = {n: d["spec"]["template"]["metadata"]["labels"] for n, d in by_name(stack.objects(kind="Deployment")).items()}
    policies = by_name(stack.objects(kind="NetworkPolicy"))
    entry = policies.pop("users-router")
    assert entry["spec"]["policyTypes"] == ["Ingress"]
    assert entry["spec"]["ingress"] == [{"ports": [{"port": 50051, "protocol": "TCP"}, {"port": 8080, "protocol": "TCP"}]}, OPS_RULE]
    assert len(policies) == 3
    for name, policy in policies.items():
        rule, ops = policy["spec"]["ingress"]
        assert ops == OPS_RULE, "metrics and health only, from anywhere (Prometheus, the kubelet)"
        assert rule["ports"] == [{"port": 50051, "protocol": "TCP"}]
        allowed = [p for p, labels in pods.items() for peer in rule["from"] if matches(peer["podSelector"]["matchLabels"], labels)]
        assert allowed == ["users-router"], f"{name} lets in {allowed}"


def test_leaves_accept_only_the_root(stacks):
    stack = stacks["scatter_gather"]
    pods = {n: d["spec"]["template"]["metadata"]["labels"] for n, d in by_name(stack.objects(kind="Deployment")).items()}
    for name, policy in by_name(stack.objects(kind="NetworkPolicy")).items():
        if name == "search-root":
            continue
        rule, ops = policy["spec"]["ingress"]
        assert ops == OPS_RULE
        assert [p for p, labels in pods.items() for peer in rule["from"] if matches(peer["podSelector"]["matchLabels"], labels)] == ["search-root"]


def test_disruption_budgets_only_where_a_group_has_more_than_one_replica():
    with testing.mocked() as stack:
        mp.Shard("users", function=handler, key="user", shards=2, replicas=2)
        mp.Spread("one", function=handler, replicas=1, routers=1)
    pdbs = by_name(stack.objects(kind="PodDisruptionBudget"))
    assert set(pdbs) == {"users-router", "users-shard-0", "users-shard-1"}, "two routers by default"
    assert all(p["spec"]["maxUnavailable"] == 1 for p in pdbs.values())


def test_autoscaling_scales_function_roles_and_leaves_routers_alone():
    with testing.mocked() as stack:
        mp.Spread("api", function=handler, replicas=2, autoscale=(2, 10, 70))
    (hpa,) = stack.objects(kind="HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["metadata"]["name"] == "api-replica"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "api-replica"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 10)
    assert hpa["spec"]["metrics"][0]["resource"] == {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}
    deployments = by_name(stack.objects(kind="Deployment"))
    assert "replicas" not in deployments["api-replica"]["spec"], "the autoscaler owns the replica count"
    assert deployments["api-router"]["spec"]["replicas"] == 2, "routers= (default 2), not the autoscaler"
    assert set(by_name(stack.objects(kind="PodDisruptionBudget"))) == {"api-router", "api-replica"}


@pytest.mark.parametrize("autoscale", [(3, 2, 50), (0, 2, 50), (1, 2, 0), (1, 2), "lots"])
def test_impossible_autoscaling_is_refused(autoscale):
    with pytest.raises(mp.PatternError, match="autoscale"):
        with testing.mocked():
            mp.Spread("api", function=handler, autoscale=autoscale)


def test_autoscaling_needs_a_cpu_request():
    with pytest.raises(mp.PatternError, match="CPU request"):
        with testing.mocked():
            mp.Spread("api", function=handler, autoscale=(1, 3, 60), resources={"requests": {"memory": "1Gi"}})


# --- options reaching every child --------------------------------------------------------------


SCRAPE = {"prometheus.io/scrape": "true", "prometheus.io/port": "9090", "prometheus.io/path": "/metrics"}


def test_namespace_labels_annotations_resources_and_env_reach_every_child():
    with testing.mocked() as stack:
        mp.ScatterGather(
            "search",
            leaf=handler,
            gather=handler,
            leaves=2,
            namespace="search",
            labels={"team": "discovery"},
            annotations={"owner": "discovery@example.com"},
            resources={"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
            env={"LOG_LEVEL": "debug", "MP_LOG_LEVEL": "DEBUG"},
        )
    objects = stack.objects()
    assert len(objects) == 10  # 3 Deployments, 3 Services, 3 NetworkPolicies, the two roots' PodDisruptionBudget
    for obj in objects:
        assert obj["metadata"]["namespace"] == "search"
        assert obj["metadata"]["labels"]["team"] == "discovery"
        assert obj["metadata"]["annotations"] == {"owner": "discovery@example.com"}
    for d in stack.objects(kind="Deployment"):
        template = d["spec"]["template"]
        assert template["metadata"]["labels"]["team"] == "discovery"
        assert template["metadata"]["annotations"] == {"owner": "discovery@example.com", **SCRAPE}
        c = container_of(d)
        assert c["resources"]["limits"] == {"cpu": "1", "memory": "512Mi"}
        env = env_of(c)
        assert (env["LOG_LEVEL"], env["MP_LOG_LEVEL"]) == ("debug", "DEBUG")
    root = env_of(container_of(by_name(stack.objects(kind="Deployment"))["search-root"]))
    assert json.loads(root["MP_UPSTREAMS"]) == [
        "dns:///search-leaf-0.search.svc.cluster.local:50051",
        "dns:///search-leaf-1.search.svc.cluster.local:50051",
    ]


def test_namespace_from_config_when_the_pattern_sets_none():
    with testing.mocked(config={"metaparticle:namespace": "staging"}) as stack:
        api = mp.Spread("api", function=handler)
    assert {o["metadata"]["namespace"] for o in stack.objects()} == {"staging"}
    assert stack.value(api.url) == "http://api-router.staging.svc.cluster.local:8080"


class _NamespacedProvider(testing.Mocks):
    """Mocks of a provider whose default namespace is "apps" (as a kubeconfig context may set)."""

    def new_resource(self, args):
        if args.typ.startswith("kubernetes:") and "namespace" not in (args.inputs.get("metadata") or {}):
            args.inputs["metadata"] = {**args.inputs["metadata"], "namespace": "apps"}
        return super().new_resource(args)


def test_without_a_namespace_routers_call_the_services_where_the_provider_put_them(monkeypatch):
    monkeypatch.setattr(testing, "Mocks", _NamespacedProvider)
    with testing.mocked() as stack:
        mp.Shard("users", function=handler, key="user", shards=2)
    (router,) = stack.objects(kind="Deployment", name="users-router")
    upstreams = json.loads(env_of(container_of(router))["MP_UPSTREAMS"])
    assert upstreams == [f"dns:///users-shard-{i}.apps.svc.cluster.local:50051" for i in range(2)]


def test_a_namespace_given_as_an_output_reaches_the_objects_and_the_addresses():
    with testing.mocked() as stack:
        api = mp.Spread("api", function=handler, namespace=pulumi.Output.from_input("later"))
    assert {o["metadata"]["namespace"] for o in stack.objects()} == {"later"}
    (router,) = stack.objects(kind="Deployment", name="api-router")
    assert json.loads(env_of(container_of(router))["MP_UPSTREAMS"]) == ["dns:///api-replica.later.svc.cluster.local:50051"]
    recorded = stack.value(api.kubernetes_spec).find("Deployment", "api-router").manifest
    assert env_of(container_of(recorded)) == env_of(container_of(router)), "the spec render writes is the one applied"


@pytest.mark.parametrize("how", ["providers", "provider"])
def test_a_kubernetes_provider_given_to_the_pattern_reaches_every_kubernetes_child(how):
    with testing.mocked() as stack:
        cluster = k8s.Provider("cluster", namespace="apps")
        opts = pulumi.ResourceOptions(providers={"kubernetes": cluster}) if how == "providers" else pulumi.ResourceOptions(provider=cluster)
        mp.Shard("users", function=handler, key="user", shards=2, opts=opts, routers=1)
    children = [r for r in stack.resources() if r.type.startswith("kubernetes:")]
    assert len(children) == 9
    for r in children:
        assert "pulumi:providers:kubernetes::cluster::" in (r.provider or ""), f"{r.type} {r.name} uses {r.provider!r}"


def test_every_child_is_parented_by_its_component():
    with testing.mocked() as stack:
        mp.Spread("api", function=handler, replicas=2, autoscale=(2, 4, 50), env={"TOKEN": pulumi.Output.secret("x")})
    (pattern,) = stack.patterns
    children = {(c.pulumi_resource_type, c.pulumi_resource_name) for c in pattern._childResources}
    registered = {(r.type, r.name) for r in stack.resources() if not r.type.startswith("metaparticle:")}
    assert children == registered
    assert all(not c._childResources for c in pattern._childResources)


def test_secret_env_lives_in_a_secret_volume_never_in_the_pod_spec_or_its_env():
    with testing.mocked() as stack:
        mp.Service("api", function=handler, env={"TOKEN": pulumi.Output.secret("s3cr3t-value"), "MODE": "fast"})
    (secret,) = stack.objects(kind="Secret")
    assert secret["metadata"]["name"] == "api-env"
    assert testing.is_secret(secret["stringData"])
    assert testing.reveal(secret["stringData"]) == {"TOKEN": "s3cr3t-value"}
    (d,) = stack.objects(kind="Deployment")
    c = container_of(d)
    env = env_of(c)
    assert "TOKEN" not in env and env["MODE"] == "fast"
    assert env["MP_ENV_DIR"] == "/run/metaparticle/env"
    assert {"name": "env", "secret": {"secretName": "api-env", "defaultMode": 0o440}} in d["spec"]["template"]["spec"]["volumes"]
    assert {"name": "env", "mountPath": "/run/metaparticle/env", "readOnly": True} in c["volumeMounts"]
    assert "s3cr3t-value" not in dumps(d)


def test_nothing_from_the_deploying_machines_environment_reaches_the_pods(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "leaked-from-the-laptop")
    monkeypatch.setenv("MP_TIMEOUT", "999")
    with testing.mocked() as stack:
        mp.Spread("api", function=handler)
    text = dumps([r.inputs for r in stack.resources()])
    assert "leaked-from-the-laptop" not in text
    assert "999" not in text


def test_env_cannot_override_what_the_runtime_is_configured_with():
    with pytest.raises(mp.PatternError, match="MP_ROLE"):
        with testing.mocked():
            mp.Service("api", function=handler, env={"MP_ROLE": "shard"})


def test_labels_that_selectors_rely_on_are_refused():
    with pytest.raises(mp.PatternError, match="app.kubernetes.io/name"):
        with testing.mocked():
            mp.Service("api", function=handler, labels={"app.kubernetes.io/name": "mine"})


def test_mutual_tls_mounts_the_secret_and_points_the_runtime_at_it():
    with testing.mocked() as stack:
        mp.Spread("api", function=handler, tls_secret="api-mtls")
    for d in stack.objects(kind="Deployment"):
        pod = d["spec"]["template"]["spec"]
        c = container_of(d)
        assert {"name": "tls", "secret": {"secretName": "api-mtls", "defaultMode": 0o440}} in pod["volumes"]
        assert {"name": "tls", "mountPath": "/etc/metaparticle/tls", "readOnly": True} in c["volumeMounts"]
        env = env_of(c)
        assert (env["MP_TLS_CERT"], env["MP_TLS_KEY"], env["MP_TLS_CA"]) == (
            "/etc/metaparticle/tls/tls.crt",
            "/etc/metaparticle/tls/tls.key",
            "/etc/metaparticle/tls/ca.crt",
        )
        # The kubelet's gRPC probe cannot speak TLS: the plain operations port's /healthz, which
        # answers the replica's own gRPC health (503 while it starts or drains).
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe]["httpGet"] == {"path": "/healthz", "port": "metrics"}
        assert env["MP_METRICS_PORT"] == "9090"


# --- urls -------------------------------------------------------------------------------------


def test_url_is_the_entry_services_cluster_dns_name(stacks):
    stack = stacks["hello_world"]
    (pattern,) = stack.patterns
    assert stack.value(pattern.url) == "http://hello.default.svc.cluster.local:8080"
    assert stack.value(pattern.grpc_url) == "grpc://hello.default.svc.cluster.local:50051"


def test_a_public_entry_is_a_load_balancer_and_its_url_the_ingress_address():
    with testing.mocked() as stack:
        api = mp.Spread("api", function=handler, public=True)
    services = by_name(stack.objects(kind="Service"))
    assert services["api-router"]["spec"]["type"] == "LoadBalancer"
    assert services["api-replica"]["spec"]["clusterIP"] == "None"
    assert stack.value(api.url) == "http://203.0.113.10:8080"


# --- several patterns in one program ----------------------------------------------------------


def test_two_instances_of_one_pattern_never_collide():
    with testing.mocked() as stack:
        mp.Spread("api", function=handler, replicas=2)
        mp.Spread("admin", function=handler, replicas=2)
        mp.Shard("users", function=handler, key="user", shards=2)
    pairs = [(r.type, r.name) for r in stack.resources()]
    assert len(pairs) == len(set(pairs))
    keys = [(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in stack.objects()]
    assert len(keys) == len(set(keys))
    pods = {o["metadata"]["name"]: o["spec"]["template"]["metadata"]["labels"] for o in stack.objects(kind="Deployment")}
    for svc in stack.objects(kind="Service"):
        assert [p for p, labels in pods.items() if matches(svc["spec"]["selector"], labels)] == [svc["metadata"]["name"]]
    admin_router = env_of(container_of(by_name(stack.objects(kind="Deployment"))["admin-router"]))
    assert json.loads(admin_router["MP_UPSTREAMS"]) == ["dns:///admin-replica.default.svc.cluster.local:50051"]


def test_patterns_whose_objects_would_overwrite_each_other_are_refused():
    with pytest.raises(mp.PatternError, match="api-router"):
        with testing.mocked():
            mp.Spread("api", function=handler)
            mp.Service("api-router", function=handler)


def test_the_same_object_names_in_two_namespaces_are_fine():
    with testing.mocked() as stack:
        mp.Spread("api", function=handler, namespace="blue")
        mp.Service("api-router", function=handler, namespace="green")
    routers = [o["metadata"]["namespace"] for o in stack.objects(kind="Deployment", name="api-router")]
    assert sorted(routers) == ["blue", "green"]


# --- renames ------------------------------------------------------------------------------------


def test_former_child_names_become_aliases(monkeypatch):
    monkeypatch.setitem(_shared.FORMER_NAMES, ("kubernetes:apps/v1:Deployment", "{role}"), ("{role}-deployment",))
    component = SimpleNamespace(children=[])
    opts = _shared.child_opts(component, "kubernetes:apps/v1:Deployment", "{role}", {"role": "api-router"})
    assert [a.name for a in opts.aliases] == ["api-router-deployment"]
    plain = _shared.child_opts(component, "kubernetes:core/v1:Service", "{role}", {"role": "api-router"})
    assert not plain.aliases
    assert component.children == [("kubernetes:apps/v1:Deployment", "api-router"), ("kubernetes:core/v1:Service", "api-router")]


def test_a_stateful_shard_is_applied_as_a_statefulset_per_shard_under_a_namespace_known_later():
    """storage=: one StatefulSet per shard with its claim and data directory; the router (a
    Deployment) still addresses each shard's Service in a namespace given as an Output."""
    with testing.mocked() as stack:
        mp.Shard("kv", function=handler, key="key", shards=2, storage="5Gi", namespace=pulumi.Output.from_input("later"))
    sets = {o["metadata"]["name"]: o for o in stack.objects(kind="StatefulSet")}
    assert set(sets) == {"kv-shard-0", "kv-shard-1"}
    assert {o["metadata"]["name"] for o in stack.objects(kind="Deployment")} == {"kv-router"}
    for name, sts in sets.items():
        assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "5Gi"
        assert env_of(container_of(sts))["MP_STORAGE_DIR"] == "/var/lib/metaparticle/data"
        assert stack.resource("kubernetes:apps/v1:StatefulSet", name)
    (router,) = stack.objects(kind="Deployment", name="kv-router")
    assert json.loads(env_of(container_of(router))["MP_UPSTREAMS"]) == [f"dns:///kv-shard-{i}.later.svc.cluster.local:50051" for i in range(2)]
