"""The Kubernetes spec as data: plain manifests from a Topology and settings, no Pulumi, no mocks."""

from __future__ import annotations

import copy
import json

import kubernetes_validate
import pytest

from metaparticle_pulumi._functions import FunctionSpec
from metaparticle_pulumi._specs.kubernetes import ENV_SECRET, ROLE_OBJECT, KubernetesSettings, kubernetes_spec
from metaparticle_pulumi._topology import Role, Topology

HANDLER = FunctionSpec(purpose="handler", ref="handlers:handle", display="handle")
RESOURCES = {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}}


def shard(shards: int = 2, replicas: int = 1) -> Topology:
    """A shard router in front of `shards` shards, as patterns.Shard expands it."""
    names = tuple(f"users-shard-{i}" for i in range(shards))
    router = Role("users-router", "shard", 1, upstreams=names, entry=True, key_path="user", component="router")
    roles = [Role(n, "function", replicas, function=HANDLER, index=i, count=shards, component="shard") for i, n in enumerate(names)]
    return Topology("users", "Shard", (router, *roles))


def settings(**changes) -> KubernetesSettings:
    return KubernetesSettings(**{"image": "reg.example/users:0123456789abcdef", "namespace": "users", "resources": RESOURCES, **changes})


def manifests(spec, kind: str) -> dict[str, dict]:
    return {o.name: o.manifest for o in spec.objects if o.kind == kind}


def env(deployment: dict) -> dict:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_routers_call_their_upstreams_at_the_service_addresses_in_the_namespace_and_domain():
    spec = kubernetes_spec(shard(3), settings(cluster_domain="example.org"))
    router = manifests(spec, "Deployment")["users-router"]
    assert json.loads(env(router)["MP_UPSTREAMS"]) == [f"dns:///users-shard-{i}.users.svc.example.org:50051" for i in range(3)]
    assert env(router)["MP_REPLICA"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert {o.manifest["metadata"]["namespace"] for o in spec.objects} == {"users"}


def test_a_namespace_known_only_later_needs_the_services_namespace_for_the_addresses():
    later = object()  # stands for an Output: the spec passes it through without looking inside
    with pytest.raises(ValueError, match="service_namespace"):
        kubernetes_spec(shard(), settings(namespace=later))
    spec = kubernetes_spec(shard(), settings(namespace=later), service_namespace="ns-1")
    assert all(o.manifest["metadata"]["namespace"] is later for o in spec.objects)
    assert "users-shard-0.ns-1.svc" in env(manifests(spec, "Deployment")["users-router"])["MP_UPSTREAMS"]
    unset = kubernetes_spec(shard(), settings(namespace=None), service_namespace="default")
    assert all("namespace" not in o.manifest["metadata"] for o in unset.objects), "None: the provider's default"


def test_objects_come_services_first_then_each_roles_workload_and_policies():
    spec = kubernetes_spec(shard(2, replicas=2), settings(env={"TOKEN": object()}))
    kinds = [(o.kind, o.name) for o in spec.objects]
    assert kinds[:3] == [("Service", "users-router"), ("Service", "users-shard-0"), ("Service", "users-shard-1")]
    assert kinds[3] == ("Secret", "users-env")
    assert kinds[4:6] == [("Deployment", "users-router"), ("NetworkPolicy", "users-router")]
    assert kinds[6:9] == [("Deployment", "users-shard-0"), ("NetworkPolicy", "users-shard-0"), ("PodDisruptionBudget", "users-shard-0")]
    assert {(o.template, o.role) for o in spec.objects if o.kind != "Secret"} == {(ROLE_OBJECT, o.name) for o in spec.objects if o.kind != "Secret"}
    assert spec.find("Secret", "users-env").template == ENV_SECRET and spec.find("Secret", "users-env").role is None


def test_outputs_pass_through_untouched_and_secret_values_stay_out_of_the_deployments():
    image, token = object(), object()
    spec = kubernetes_spec(shard(), settings(image=image, env={"TOKEN": token, "MODE": "fast", "N": 3}))
    secret = spec.find("Secret", "users-env").manifest
    assert secret["stringData"]["TOKEN"] is token and secret["type"] == "Opaque"
    for d in manifests(spec, "Deployment").values():
        (container,) = d["spec"]["template"]["spec"]["containers"]
        assert container["image"] is image
        assert "TOKEN" not in env(d) and env(d)["MP_ENV_DIR"] == "/run/metaparticle/env"
        assert {"name": "env", "secret": {"secretName": "users-env", "defaultMode": 0o440}} in d["spec"]["template"]["spec"]["volumes"]
        assert env(d)["MODE"] == "fast" and env(d)["N"] == "3"
    plain = kubernetes_spec(shard(), settings(env={"MODE": "fast"}))
    assert not manifests(plain, "Secret"), "no Secret without a value to hide"


def test_autoscaled_functions_leave_the_replica_count_to_their_autoscaler():
    spec = kubernetes_spec(shard(2), settings(autoscale=(2, 6, 70)))
    deployments, hpas = manifests(spec, "Deployment"), manifests(spec, "HorizontalPodAutoscaler")
    assert deployments["users-router"]["spec"]["replicas"] == 1 and "users-router" not in hpas
    for name in ("users-shard-0", "users-shard-1"):
        assert "replicas" not in deployments[name]["spec"]
        assert hpas[name]["spec"]["minReplicas"] == 2 and hpas[name]["spec"]["maxReplicas"] == 6
        assert hpas[name]["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
    assert set(manifests(spec, "PodDisruptionBudget")) == {"users-shard-0", "users-shard-1"}, "at least 2 replicas each"


def test_restricted_egress_and_tls_shape_the_policies_pods_and_probes():
    spec = kubernetes_spec(shard(2), settings(egress="restricted", tls_secret="users-tls"))
    policies = manifests(spec, "NetworkPolicy")
    router = policies["users-router"]["spec"]
    assert router["policyTypes"] == ["Ingress", "Egress"]
    assert [t["podSelector"]["matchLabels"]["app.kubernetes.io/name"] for t in router["egress"][1]["to"]] == ["users-shard-0", "users-shard-1"]
    shard_in = policies["users-shard-0"]["spec"]["ingress"]
    assert [f["podSelector"]["matchLabels"]["app.kubernetes.io/name"] for f in shard_in[0]["from"]] == ["users-router"]
    d = manifests(spec, "Deployment")["users-shard-0"]
    pod = d["spec"]["template"]["spec"]
    assert {"name": "tls", "secret": {"secretName": "users-tls", "defaultMode": 0o440}} in pod["volumes"]
    assert pod["containers"][0]["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}, "the kubelet cannot probe gRPC over TLS"
    assert env(d)["MP_TLS_CA"] == "/etc/metaparticle/tls/ca.crt"


def test_monitoring_adds_a_service_monitor_of_every_services_metrics_port():
    spec = kubernetes_spec(shard(2), settings(monitoring=True))
    (monitor,) = manifests(spec, "ServiceMonitor").values()
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "15s"}]
    selector = monitor["spec"]["selector"]["matchLabels"]
    services = manifests(spec, "Service")
    assert services and all(selector.items() <= s["metadata"]["labels"].items() for s in services.values())
    assert all("metrics" in {p["name"] for p in s["spec"]["ports"]} for s in services.values())
    assert not manifests(kubernetes_spec(shard(2), settings()), "ServiceMonitor")


def test_the_spec_is_a_function_of_its_inputs():
    topology, given = shard(2), settings(labels={"team": "web"}, annotations={"note": "x"})
    before = copy.deepcopy(given)
    first, second = kubernetes_spec(topology, given), kubernetes_spec(topology, given)
    assert first == second
    assert given == before, "the settings are not changed"
    assert all(o.manifest["metadata"]["labels"]["team"] == "web" and o.manifest["metadata"]["annotations"] == {"note": "x"} for o in first.objects)


@pytest.mark.parametrize("options", [{}, {"public": True, "autoscale": (2, 5, 60), "egress": "restricted", "tls_secret": "t"}])
def test_every_manifest_is_a_valid_kubernetes_object(options):
    spec = kubernetes_spec(shard(3, replicas=2), settings(env={"A": "1", "S": "hidden"}, **options))
    for obj in spec.objects:
        kubernetes_validate.validate(dict(obj.manifest), kubernetes_validate.utils.latest_version(), strict=True)


def test_only_the_env_of_deployments_that_call_upstreams_depends_on_the_services_namespace():
    """What the Pulumi applier relies on when the namespace is known only once applied."""
    topology = shard(2, replicas=2)
    a = kubernetes_spec(topology, settings(namespace=None, autoscale=(2, 3, 50), egress="restricted"), service_namespace="a")
    b = kubernetes_spec(topology, settings(namespace=None, autoscale=(2, 3, 50), egress="restricted"), service_namespace="b")
    differ = [(x.kind, x.name) for x, y in zip(a.objects, b.objects, strict=True) if x != y]
    assert differ == [("Deployment", "users-router")]
    router_a, router_b = (s.find("Deployment", "users-router").manifest for s in (a, b))
    assert {**env(router_a), "MP_UPSTREAMS": None} == {**env(router_b), "MP_UPSTREAMS": None}


def stateful(shards: int = 2, storage: str = "2Gi", storage_class: str | None = None) -> Topology:
    """A Shard with storage=: each shard keeps its data."""
    plain = shard(shards)
    roles = tuple(
        r if r.kind != "function" else Role(
            r.name, r.kind, 1, function=HANDLER, index=r.index, count=r.count, component="shard",
            storage=storage, storage_class=storage_class,
        )
        for r in plain.roles
    )
    return Topology("users", "Shard", roles)


def test_a_shard_with_storage_is_a_statefulset_of_one_pod_whose_claim_outlives_it():
    spec = kubernetes_spec(stateful(2, "2Gi", "fast-ssd"), settings())
    assert set(manifests(spec, "Deployment")) == {"users-router"}
    sets = manifests(spec, "StatefulSet")
    assert set(sets) == {"users-shard-0", "users-shard-1"}
    services = manifests(spec, "Service")
    for name, sts in sets.items():
        body = sts["spec"]
        assert body["serviceName"] == name and services[name]["spec"]["clusterIP"] == "None", "a headless Service names it"
        assert body["replicas"] == 1
        assert body["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain", "whenScaled": "Retain"}
        (claim,) = body["volumeClaimTemplates"]
        assert claim["metadata"]["name"] == "data"
        assert claim["spec"] == {
            "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "2Gi"}}, "storageClassName": "fast-ssd",
        }
        pod = body["template"]["spec"]
        (container,) = pod["containers"]
        assert {"name": "data", "mountPath": "/var/lib/metaparticle/data"} in container["volumeMounts"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True, "only the volume is writable"
        assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsUser"], "the claim is the runtime's group's"
        assert env({"spec": body})["MP_STORAGE_DIR"] == "/var/lib/metaparticle/data"
        assert body["selector"]["matchLabels"].items() <= body["template"]["metadata"]["labels"].items()
    assert "MP_STORAGE_DIR" not in env(manifests(spec, "Deployment")["users-router"])
    no_class = kubernetes_spec(stateful(1), settings())
    (claim,) = manifests(no_class, "StatefulSet")["users-shard-0"]["spec"]["volumeClaimTemplates"]
    assert "storageClassName" not in claim["spec"], "the cluster's default class"


def test_stateless_patterns_keep_exactly_their_deployments():
    spec = kubernetes_spec(shard(3), settings())
    assert not manifests(spec, "StatefulSet")
    for d in manifests(spec, "Deployment").values():
        assert "MP_STORAGE_DIR" not in env(d)
        assert all(m["name"] != "data" for m in d["spec"]["template"]["spec"]["containers"][0]["volumeMounts"])


@pytest.mark.parametrize("options", [{}, {"egress": "restricted", "tls_secret": "t", "env": {"S": "x"}}])
def test_every_stateful_manifest_is_a_valid_kubernetes_object(options):
    spec = kubernetes_spec(stateful(3, "1Gi", "standard"), settings(**options))
    for version in ("1.30.0", kubernetes_validate.utils.latest_version()):
        for obj in spec.objects:
            kubernetes_validate.validate(dict(obj.manifest), version, strict=True)
