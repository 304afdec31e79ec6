"""What the Kubernetes target applies, as plain manifests: per role a Service, a Deployment (a
StatefulSet for a role with storage=) and a NetworkPolicy, plus a PodDisruptionBudget, a
HorizontalPodAutoscaler and the env Secret where they apply.

A pure function of the Topology and the deployment settings (no Pulumi resources, no config, no
I/O). Two consumers: the Pulumi layer (`_targets/kubernetes.py`, one `pulumi_kubernetes` child per
object) and `metaparticle render` (`_manifests.py`, one YAML file per object). Values the settings
hold as Pulumi Outputs (the image reference, secret env values, a namespace) pass through untouched.

Upstream groups (roles a router calls) get a headless Service named after the role, so a router
reaches every ready replica with `dns:///<name>.<namespace>.svc.<domain>:50051`, balanced per call.
The entry gets a ClusterIP (or LoadBalancer) Service with gRPC and HTTP. Every pod runs as non-root
with a read-only root filesystem and health probes (gRPC, or under mutual TLS an httpGet of the
operations port's /healthz); a NetworkPolicy per role lets only its callers in (and with
egress="restricted" lets it reach only DNS and its upstreams). Every container serves Prometheus
metrics on its `metrics` port (pod annotations for annotation-based scraping; `monitoring=True` adds
a prometheus-operator ServiceMonitor). Secret env values reach the function as files of a Secret
volume, never as container env.

A role whose function is an `mp.Container` runs it as a second container, `function`, in the same
pod: the runtime calls it on 127.0.0.1 (no Service, no NetworkPolicy change: the traffic never
leaves the pod). It gets the same hardening as the runtime's container (non-root, read-only root
filesystem with an emptyDir /tmp, no privilege escalation, no capabilities, RuntimeDefault seccomp,
the pattern's requests/limits), relaxed only where its `mp.Container` says so
(`read_only_root_filesystem=False`, `run_as_user=`, `resources=`); its environment is PORT,
MP_CONTEXT (the replica: the pod's name) and the pattern's env (secret values by secretKeyRef).

A role with storage= (one replica of a shard, leaf or service: patterns refuse more) is a
StatefulSet of one pod instead of a Deployment: its Service is the StatefulSet's `serviceName`, its
volumeClaimTemplate `data` gives it a PersistentVolumeClaim `data-<role>-0` mounted at DATA_DIR, and
the claim is retained when the StatefulSet is deleted or scaled (data outlives `pulumi destroy`).
One StatefulSet per shard rather than one for all shards: each shard is a role of its own (its
Service, NetworkPolicy and address), so the router and the stateless layout stay as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from metaparticle_runtime.config import RuntimeConfig, server_env

from .._image import APP_DIR, RUN_AS, function_path
from .._topology import GRPC_PORT, HTTP_PORT, ROUTER_KINDS, Role, Topology, dns_name, role_config
from . import DATA_DIR, ENV_DIR, OPS_PORT, split_env
from .labels import object_labels, role_labels, selector_labels

#: Seconds a stopping replica keeps serving after turning NOT_SERVING, while endpoints update.
DRAIN_SECONDS = 5
#: Where the TLS Secret (tls.crt, tls.key, ca.crt) is mounted.
TLS_DIR = "/etc/metaparticle/tls"
CONTAINER = "runtime"
#: The container of a role's `mp.Container` function, next to the runtime's.
FUNCTION_CONTAINER = "function"
#: How objects are named: a role's objects after the role, the pattern's env Secret after the pattern.
ROLE_OBJECT = "{role}"
#: The volumeClaimTemplate (and pod volume) of a role's data; its claim is `data-<role>-0`.
DATA_VOLUME = "data"
#: The kinds that run a role's pods.
WORKLOADS = ("Deployment", "StatefulSet")
ENV_SECRET = "{base}-env"
MONITOR = "{base}-monitor"
#: Pod annotations that annotation-based Prometheus scrape configs look for.
SCRAPE_ANNOTATIONS = {"prometheus.io/scrape": "true", "prometheus.io/port": str(OPS_PORT), "prometheus.io/path": "/metrics"}


@dataclass(frozen=True)
class UsedPattern:
    """A pattern this one `uses`, as its callers need it: its entry Service and where it lives."""

    #: The entry role (its Service's name).
    entry: str
    #: Its namespace when known as a string (None: the same as this pattern's Services).
    namespace: Optional[str]
    #: The labels that select its entry's pods (for a restricted egress rule).
    selector: Mapping[str, str]


@dataclass(frozen=True)
class KubernetesSettings:
    """How a pattern is deployed on Kubernetes (validated by the caller)."""

    #: What the containers run: an image reference (a string, or an Output passed through).
    image: Any
    #: Every object's namespace: a string, an Output (passed through), or None (the provider's default).
    namespace: Any = None
    cluster_domain: str = "cluster.local"
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    #: Container resources {"requests": {...}, "limits": {...}}.
    resources: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    #: The user's env: strings and numbers as values, anything else (Outputs, secrets) from a Secret.
    env: Mapping[str, Any] = field(default_factory=dict)
    #: A LoadBalancer Service for the entry.
    public: bool = False
    egress: str = "open"
    #: Function replicas scale on CPU: (min, max, target CPU %).
    autoscale: Optional[tuple[int, int, int]] = None
    #: A Secret with tls.crt, tls.key, ca.crt: mutual TLS between roles.
    tls_secret: Optional[str] = None
    #: Seconds a stopping pod gets before it is killed.
    grace_seconds: int = 30
    #: A prometheus-operator ServiceMonitor for the pattern's Services.
    monitoring: bool = False
    #: The patterns its functions call, by the name they call them with.
    uses: Mapping[str, UsedPattern] = field(default_factory=dict)
    #: The image of its `mp.Container` function (a string, or an Output passed through).
    function_image: Any = None
    #: RuntimeConfig settings of Spread and Shard routers (the compiled router when the image carries it).
    router: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class KubernetesObject:
    """One kubectl-ready manifest, and how its name is made (ROLE_OBJECT or ENV_SECRET)."""

    manifest: Mapping[str, Any]
    template: str
    #: The role it belongs to (None: the pattern's own object).
    role: Optional[str] = None

    @property
    def kind(self) -> str:
        return str(self.manifest["kind"])

    @property
    def name(self) -> str:
        return str(self.manifest["metadata"]["name"])


@dataclass(frozen=True)
class KubernetesSpec:
    """A pattern on Kubernetes, in the order objects are created (Services first)."""

    objects: tuple[KubernetesObject, ...]

    def find(self, kind: str, name: str) -> KubernetesObject:
        for obj in self.objects:
            if obj.kind == kind and obj.name == name:
                return obj
        raise KeyError(f"no {kind} {name}")


def service_address(name: str, namespace: str, domain: str) -> str:
    """The gRPC target that reaches every ready replica behind the Service `name`."""
    return f"dns:///{name}.{namespace}.svc.{domain}:{GRPC_PORT}"


def tls_settings(tls_secret: Optional[str]) -> dict[str, str]:
    """Where the runtime finds the TLS Secret's files, when the pattern has one."""
    if not tls_secret:
        return {}
    return {"tls_cert": f"{TLS_DIR}/tls.crt", "tls_key": f"{TLS_DIR}/tls.key", "tls_ca": f"{TLS_DIR}/ca.crt"}


def kubernetes_spec(
    topology: Topology,
    settings: KubernetesSettings,
    *,
    service_namespace: Optional[str] = None,
) -> KubernetesSpec:
    """The objects of `topology`.

    Routers call their upstreams at the Services' addresses in `service_namespace`, by default
    `settings.namespace`, which must then be a string (no other object depends on it).
    """
    where = service_namespace if service_namespace is not None else settings.namespace
    if not isinstance(where, str):
        raise ValueError("the Services' namespace is needed as a string to address them (service_namespace=)")
    addresses = {r.name: service_address(r.name, where, settings.cluster_domain) for r in topology.roles}
    uses = {n: service_address(u.entry, u.namespace or where, settings.cluster_domain) for n, u in settings.uses.items()}
    base = dns_name(topology.name)
    labels = {r.name: role_labels(topology, r, settings.labels) for r in topology.roles}
    selectors = {r.name: selector_labels(topology, r.name) for r in topology.roles}

    def meta(name: str, its_labels: Mapping[str, str]) -> dict[str, Any]:
        m: dict[str, Any] = {"name": name, "labels": dict(its_labels)}
        if settings.namespace is not None:
            m["namespace"] = settings.namespace
        if settings.annotations:
            m["annotations"] = dict(settings.annotations)
        return m

    def role_object(api: str, kind: str, role: Role, spec: dict[str, Any]) -> KubernetesObject:
        manifest = {"apiVersion": api, "kind": kind, "metadata": meta(role.name, labels[role.name]), "spec": spec}
        return KubernetesObject(manifest, ROLE_OBJECT, role.name)

    objects = [role_object("v1", "Service", role, _service(role, selectors, settings)) for role in topology.roles]
    plain, hidden = split_env(settings.env)
    user_env = [{"name": k, "value": v} for k, v in plain.items()]
    if hidden:
        secret_name = ENV_SECRET.format(base=base)
        manifest = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": meta(secret_name, object_labels(topology, secret_name, "env", settings.labels)),
            "type": "Opaque",
            "stringData": dict(hidden),
        }
        objects.append(KubernetesObject(manifest, ENV_SECRET))
    env_secret = ENV_SECRET.format(base=base) if hidden else None
    for role in topology.roles:
        scaled = settings.autoscale if role.kind == "function" else None
        router = settings.router if role.kind in ROUTER_KINDS else {}
        env = _container_env(topology, role, addresses, uses, settings.tls_secret, bool(hidden), router) + user_env
        deployment = _deployment(role, settings, selectors, labels, env, scaled, env_secret)
        if role.container is not None:
            server = _function_container(topology, role, settings, user_env, sorted(hidden), env_secret)
            deployment["template"]["spec"]["containers"].append(server)
            deployment["template"]["spec"]["volumes"].append({"name": "function-tmp", "emptyDir": {"sizeLimit": "64Mi"}})
        if role.storage is not None:
            stateful = _stateful_set(role, deployment, labels[role.name])
            objects.append(role_object("apps/v1", "StatefulSet", role, stateful))
        else:
            objects.append(role_object("apps/v1", "Deployment", role, deployment))
        policy = _network_policy(topology, role, selectors, settings, where)
        objects.append(role_object("networking.k8s.io/v1", "NetworkPolicy", role, policy))
        least = scaled[0] if scaled else role.replicas
        if least > 1:
            budget = {"maxUnavailable": 1, "selector": {"matchLabels": dict(selectors[role.name])}}
            objects.append(role_object("policy/v1", "PodDisruptionBudget", role, budget))
        if scaled:
            objects.append(role_object("autoscaling/v2", "HorizontalPodAutoscaler", role, _autoscaler(role, scaled)))
    if settings.monitoring:
        monitor = MONITOR.format(base=base)
        manifest = {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "ServiceMonitor",
            "metadata": meta(monitor, object_labels(topology, monitor, "monitor", settings.labels)),
            "spec": {
                "selector": {"matchLabels": _pattern_selector(selectors)},
                "endpoints": [{"port": "metrics", "path": "/metrics", "interval": "15s"}],
            },
        }
        objects.append(KubernetesObject(manifest, MONITOR))
    return KubernetesSpec(tuple(objects))


def _pattern_selector(selectors: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """The labels every role of the pattern shares (what selects all its Services)."""
    common = None
    for labels in selectors.values():
        items = set(labels.items())
        common = items if common is None else common & items
    return dict(sorted(common or ()))


def _service(role: Role, selectors: Mapping[str, Mapping[str, str]], settings: KubernetesSettings) -> dict[str, Any]:
    """Headless for upstream groups (DNS gives every ready replica); ClusterIP/LoadBalancer for the entry."""
    ports = [
        {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "protocol": "TCP"},
        {"name": "metrics", "port": OPS_PORT, "targetPort": "metrics", "protocol": "TCP"},
    ]
    spec: dict[str, Any] = {"selector": dict(selectors[role.name]), "ports": ports}
    if role.entry:
        ports.append({"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP"})
        spec["type"] = "LoadBalancer" if settings.public else "ClusterIP"
    else:
        spec["clusterIP"] = "None"
        spec["publishNotReadyAddresses"] = False
    return spec


def _container_env(
    topology: Topology,
    role: Role,
    addresses: Mapping[str, str],
    uses: Mapping[str, str],
    tls_secret: Optional[str],
    env_files: bool,
    router: Mapping[str, str],
) -> list[dict[str, Any]]:
    """The runtime's configuration, with the pod's name as the replica."""
    config = role_config(
        topology,
        role,
        addresses,
        replica="",
        function_file=function_path(role.function),
        source_dir=APP_DIR,
        drain_seconds=DRAIN_SECONDS,
        metrics_port=OPS_PORT,
        env_dir=ENV_DIR if env_files else None,
        uses=uses,
        storage_dir=DATA_DIR if role.storage is not None else None,
        **tls_settings(tls_secret),
        **router,
    )
    replica = RuntimeConfig.env_name("replica")
    items: list[dict[str, Any]] = []
    for key, value in config.to_env().items():
        if key == replica:
            items.append({"name": key, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
        else:
            items.append({"name": key, "value": value})
    return items


def _function_container(
    topology: Topology,
    role: Role,
    settings: KubernetesSettings,
    user_env: list[dict[str, Any]],
    hidden: list[str],
    env_secret: Optional[str],
) -> dict[str, Any]:
    """The user's server of a role whose function is an `mp.Container` (see the module docstring)."""
    container = role.container
    assert container is not None
    if settings.function_image is None:
        raise ValueError(f"role {role.name} runs an mp.Container: its image is needed (function_image=)")
    replica = RuntimeConfig.env_name("replica")
    # Kubernetes expands $(NAME) of a variable defined before: MP_CONTEXT names the pod.
    context = server_env(
        container.port, pattern=topology.pattern, name=topology.name, role=role.component, index=role.index,
        count=role.count if role.index is not None else None, replica=f"$({replica})",
    )
    env: list[dict[str, Any]] = [{"name": replica, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
    env += [{"name": k, "value": v} for k, v in context.items()]
    env += user_env
    env += [{"name": k, "valueFrom": {"secretKeyRef": {"name": env_secret, "key": k}}} for k in hidden]
    uid = container.run_as_user if container.run_as_user is not None else RUN_AS
    check = {"httpGet": {"path": "/healthz", "port": "function"}}
    server: dict[str, Any] = {
        "name": FUNCTION_CONTAINER,
        "image": settings.function_image,
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": "function", "containerPort": container.port, "protocol": "TCP"}],
        "env": env,
        "resources": {k: dict(v) for k, v in (container.resources or settings.resources).items()},
        # Readiness is the runtime's (it follows this server's /healthz); a hung server is restarted.
        "startupProbe": {**check, "periodSeconds": 2, "timeoutSeconds": 2, "failureThreshold": 150},
        "livenessProbe": {**check, "periodSeconds": 10, "timeoutSeconds": 3, "failureThreshold": 6},
        "securityContext": {
            "runAsNonRoot": uid != 0,
            "runAsUser": uid,
            "runAsGroup": uid,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": container.read_only_root_filesystem,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "function-tmp", "mountPath": "/tmp"}],
    }
    if container.command is not None:
        server["command"] = list(container.command)
    return server


def _probes(tls: bool) -> dict[str, Any]:
    """gRPC health probes (the runtime's grpc.health.v1); under mutual TLS, which the kubelet's gRPC
    probe cannot speak, an httpGet of the operations port's /healthz: the same replica health
    (503 while starting or draining). The startup probe gives routers time to see their upstreams
    serve before liveness counts."""
    check: dict[str, Any] = {"httpGet": {"path": "/healthz", "port": "metrics"}} if tls else {"grpc": {"port": GRPC_PORT}}
    return {
        "startupProbe": {**check, "periodSeconds": 2, "timeoutSeconds": 2, "failureThreshold": 150},
        "readinessProbe": {**check, "periodSeconds": 5, "timeoutSeconds": 2, "failureThreshold": 2},
        "livenessProbe": {**check, "periodSeconds": 10, "timeoutSeconds": 3, "failureThreshold": 6},
    }


def _deployment(
    role: Role,
    settings: KubernetesSettings,
    selectors: Mapping[str, Mapping[str, str]],
    labels: Mapping[str, Mapping[str, str]],
    env: list[dict[str, Any]],
    autoscale: Optional[tuple[int, int, int]],
    env_secret: Optional[str],
) -> dict[str, Any]:
    selector = dict(selectors[role.name])
    ports = [{"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"}]
    if role.entry:
        ports.append({"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"})
    ports.append({"name": "metrics", "containerPort": OPS_PORT, "protocol": "TCP"})
    mounts = [{"name": "tmp", "mountPath": "/tmp"}]
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]
    if settings.tls_secret:
        mounts.append({"name": "tls", "mountPath": TLS_DIR, "readOnly": True})
        volumes.append({"name": "tls", "secret": {"secretName": settings.tls_secret, "defaultMode": 0o440}})
    if env_secret:
        # Readable by the runtime's group only (fsGroup); never in the container's env.
        mounts.append({"name": "env", "mountPath": ENV_DIR, "readOnly": True})
        volumes.append({"name": "env", "secret": {"secretName": env_secret, "defaultMode": 0o440}})
    container = {
        "name": CONTAINER,
        "image": settings.image,
        "imagePullPolicy": "IfNotPresent",
        "ports": ports,
        "env": env,
        "resources": {k: dict(v) for k, v in settings.resources.items()},
        **_probes(bool(settings.tls_secret)),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": mounts,
    }
    pod_meta: dict[str, Any] = {"labels": dict(labels[role.name]), "annotations": {**SCRAPE_ANNOTATIONS, **settings.annotations}}
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": settings.grace_seconds,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "fsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }
    if role.replicas > 1 or autoscale:
        pod_spec["topologySpreadConstraints"] = [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": selector},
            }
        ]
    spec: dict[str, Any] = {
        "selector": {"matchLabels": selector},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        "revisionHistoryLimit": 5,
        "template": {"metadata": pod_meta, "spec": pod_spec},
    }
    if autoscale is None:
        # Under an autoscaler the replica count is its to set: a fixed one would fight it on every up.
        spec["replicas"] = role.replicas
    return spec


def _stateful_set(role: Role, deployment: Mapping[str, Any], labels: Mapping[str, str]) -> dict[str, Any]:
    """The Deployment's pod template as a StatefulSet of one pod with its data volume claimed."""
    template = deployment["template"]
    pod = dict(template["spec"])
    (container,) = pod["containers"]
    container = {**container, "volumeMounts": [*container["volumeMounts"], {"name": DATA_VOLUME, "mountPath": DATA_DIR}]}
    # The volume's files belong to the runtime's group once, not re-chowned on every start.
    pod["securityContext"] = {**pod["securityContext"], "fsGroupChangePolicy": "OnRootMismatch"}
    pod["containers"] = [container]
    claim: dict[str, Any] = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": role.storage}}}
    if role.storage_class is not None:
        claim["storageClassName"] = role.storage_class
    return {
        "serviceName": role.name,
        "replicas": 1,
        "selector": deployment["selector"],
        "podManagementPolicy": "OrderedReady",
        "updateStrategy": {"type": "RollingUpdate"},
        "revisionHistoryLimit": deployment["revisionHistoryLimit"],
        "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Retain"},
        "template": {"metadata": template["metadata"], "spec": pod},
        "volumeClaimTemplates": [
            {"metadata": {"name": DATA_VOLUME, "labels": dict(labels)}, "spec": claim},
        ],
    }


def _network_policy(
    topology: Topology, role: Role, selectors: Mapping[str, Mapping[str, str]], settings: KubernetesSettings, namespace: str
) -> dict[str, Any]:
    """The entry accepts gRPC and HTTP from anywhere; any other role gRPC only from its callers' pods.
    With egress="restricted" a role may only resolve names (DNS), call its own upstreams and, where
    it runs user functions, the entries of the patterns it `uses` (in their namespaces)."""
    egress = settings.egress
    grpc_port = {"port": GRPC_PORT, "protocol": "TCP"}
    if role.entry:
        ingress = [{"ports": [grpc_port, {"port": HTTP_PORT, "protocol": "TCP"}]}]
    else:
        callers = [{"podSelector": {"matchLabels": dict(selectors[c.name])}} for c in topology.callers_of(role.name)]
        ingress = [{"from": callers, "ports": [grpc_port]}] if callers else []
    # Metrics and health (no requests) from anywhere: Prometheus runs in another namespace.
    ingress.append({"ports": [{"port": OPS_PORT, "protocol": "TCP"}]})
    spec: dict[str, Any] = {
        "podSelector": {"matchLabels": dict(selectors[role.name])},
        "policyTypes": ["Ingress"],
        "ingress": ingress,
    }
    if egress == "restricted":
        dns = {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}
        upstreams = [{"podSelector": {"matchLabels": dict(selectors[u])}} for u in role.upstreams]
        if role.kind in ("function", "gather"):
            for used in settings.uses.values():
                peer: dict[str, Any] = {"podSelector": {"matchLabels": dict(used.selector)}}
                if used.namespace is not None and used.namespace != namespace:
                    peer["namespaceSelector"] = {"matchLabels": {"kubernetes.io/metadata.name": used.namespace}}
                upstreams.append(peer)
        spec["policyTypes"] = ["Ingress", "Egress"]
        spec["egress"] = [dns] + ([{"to": upstreams, "ports": [grpc_port]}] if upstreams else [])
    return spec


def _autoscaler(role: Role, autoscale: tuple[int, int, int]) -> dict[str, Any]:
    low, high, cpu = autoscale
    return {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": role.name},
        "minReplicas": low,
        "maxReplicas": high,
        "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": cpu}}}],
    }
