"""The Kubernetes target: per role a Deployment and a Service, plus the policies production needs.

Upstream groups (roles a router calls) get a headless Service named after the role, so a router
reaches every ready replica with `dns:///<name>.<namespace>.svc.cluster.local:50051`, balanced per
call. The entry gets a ClusterIP (or LoadBalancer) Service with gRPC and HTTP. Every pod runs as
non-root with a read-only root filesystem and gRPC health probes; a NetworkPolicy per role lets
only its callers in; PodDisruptionBudgets and HorizontalPodAutoscalers where they apply.

Children are named after the pattern (`<role>` for the role's objects, `<base>-env`,
`<base>-image`) and created with parent=component, so a Kubernetes provider given to the pattern
(`provider=` or `providers=`) reaches all of them. Former names go to `_shared.FORMER_NAMES`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Optional

import pulumi
import pulumi_kubernetes as k8s
from metaparticle_runtime.config import RuntimeConfig

from .._errors import PatternError
from ..image import APP_DIR, RUN_AS, ContainerImage, container_image, function_path
from ..topology import GRPC_PORT, HTTP_PORT, Role, Topology, dns_name, role_config
from . import TargetOutputs
from ._shared import (
    check_env,
    check_labels,
    check_unique,
    child_opts,
    config,
    config_bool,
    grace_seconds,
    object_labels,
    resources,
    role_labels,
    selector_labels,
)

if TYPE_CHECKING:
    from ..patterns import PatternArgs, _Pattern

#: Seconds a stopping replica keeps serving after turning NOT_SERVING, while endpoints update.
DRAIN_SECONDS = 5
#: Where the TLS Secret (tls.crt, tls.key, ca.crt) is mounted.
TLS_DIR = "/etc/metaparticle/tls"
CONTAINER = "runtime"
#: Reads `metaparticle:render`: set when manifests are rendered offline (images by name).
RENDER_KEY = "render"


def render(component: "_Pattern", topology: Topology, args: "PatternArgs") -> TargetOutputs:
    """Creates the Kubernetes objects of `topology` as children of `component`."""
    where = f"{topology.pattern} {topology.name!r}"
    check_labels(args, where)
    autoscale = _autoscale(args, where)
    container_resources = resources(args, where)
    if autoscale and "cpu" not in container_resources.get("requests", {}):
        raise PatternError(f"{where}: autoscale needs a CPU request in resources (it scales on CPU use)")
    namespace = args.namespace if args.namespace is not None else config().get("namespace")
    check_unique(component, topology, "kubernetes", namespace)
    check_env(topology, args.env, where, source_dir=APP_DIR, drain_seconds=DRAIN_SECONDS, **_tls_settings(args))
    domain = config().get("clusterDomain") or "cluster.local"
    base = dns_name(topology.name)
    image = container_image(component, topology, args, by_name=bool(config_bool(RENDER_KEY)))

    def meta(name: str, labels: Mapping[str, str]) -> dict[str, Any]:
        m: dict[str, Any] = {"name": name, "labels": dict(labels)}
        if namespace is not None:
            m["namespace"] = namespace
        if args.annotations:
            m["annotations"] = dict(args.annotations)
        return m

    def opts(type_token: str, template: str, role: Optional[Role] = None) -> pulumi.ResourceOptions:
        fields = {"base": base, "role": role.name if role else base}
        return child_opts(component, type_token, template, fields, delete_before_replace=True)

    # Services first: their metadata (name, namespace) is what routers are told to call.
    services: dict[str, k8s.core.v1.Service] = {}
    for role in topology.roles:
        services[role.name] = _service(topology, role, args, meta, opts)

    def address(svc: k8s.core.v1.Service) -> pulumi.Output[str]:
        return svc.metadata.apply(lambda m: f"dns:///{m.name}.{m.namespace}.svc.{domain}:{GRPC_PORT}")

    addresses = {name: address(svc) for name, svc in services.items()}
    user_env = _user_env(component, topology, args, meta, opts)

    for role in topology.roles:
        scaled = autoscale if role.kind == "function" else None
        _deployment(topology, role, args, image, addresses, user_env, container_resources, scaled, meta, opts)
        _network_policy(topology, role, args, meta, opts)
        least = scaled[0] if scaled else role.replicas
        if least > 1:
            _disruption_budget(topology, role, args, meta, opts)
        if scaled:
            _autoscaler(topology, role, scaled, args, meta, opts)

    entry = services[topology.entry.name]
    url, grpc_url = _entry_urls(entry, args.public, domain)
    return TargetOutputs(url=url, grpc_url=grpc_url, extra={"image": image.ref})


def _autoscale(args: "PatternArgs", where: str) -> Optional[tuple[int, int, int]]:
    if args.autoscale is None:
        return None
    try:
        low, high, cpu = args.autoscale
    except (TypeError, ValueError):
        raise PatternError(f"{where}: autoscale must be (min replicas, max replicas, target CPU %), got {args.autoscale!r}") from None
    values = (low, high, cpu)
    if any(isinstance(v, bool) or not isinstance(v, int) for v in values) or not (1 <= low <= high) or cpu < 1:
        raise PatternError(f"{where}: autoscale needs 1 <= min <= max and a CPU target of at least 1%, got {args.autoscale!r}")
    return low, high, cpu


def _service(topology: Topology, role: Role, args: "PatternArgs", meta: Any, opts: Any) -> k8s.core.v1.Service:
    """Headless for upstream groups (DNS gives every ready replica); ClusterIP/LoadBalancer for the entry."""
    ports = [{"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "protocol": "TCP"}]
    spec: dict[str, Any] = {"selector": selector_labels(topology, role.name), "ports": ports}
    if role.entry:
        ports.append({"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP"})
        spec["type"] = "LoadBalancer" if args.public else "ClusterIP"
    else:
        spec["clusterIP"] = "None"
        spec["publishNotReadyAddresses"] = False
    return k8s.core.v1.Service(
        role.name,
        metadata=meta(role.name, role_labels(topology, role, args.labels)),
        spec=spec,
        opts=opts("kubernetes:core/v1:Service", "{role}", role),
    )


def _user_env(
    component: "_Pattern", topology: Topology, args: "PatternArgs", meta: Any, opts: Any
) -> list[dict[str, Any]]:
    """`args.env` as container env: plain strings as values, Outputs (maybe secret) from a Secret."""
    plain: list[dict[str, Any]] = []
    hidden: dict[str, Any] = {}
    for key in sorted(args.env):
        value = args.env[key]
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            plain.append({"name": key, "value": str(value)})
        else:
            hidden[key] = value
    if not hidden:
        return plain
    base = dns_name(topology.name)
    secret = k8s.core.v1.Secret(
        f"{base}-env",
        metadata=meta(f"{base}-env", object_labels(topology, f"{base}-env", "env", args.labels)),
        type="Opaque",
        string_data=hidden,
        opts=opts("kubernetes:core/v1:Secret", "{base}-env"),
    )
    refs = [
        {"name": key, "valueFrom": {"secretKeyRef": {"name": secret.metadata.apply(lambda m: m.name), "key": key}}}
        for key in sorted(hidden)
    ]
    return sorted(plain + refs, key=lambda e: e["name"])


def _tls_settings(args: "PatternArgs") -> dict[str, str]:
    """Where the runtime finds the TLS Secret's files, when the pattern has one."""
    if not args.tls_secret:
        return {}
    return {"tls_cert": f"{TLS_DIR}/tls.crt", "tls_key": f"{TLS_DIR}/tls.key", "tls_ca": f"{TLS_DIR}/ca.crt"}


def _container_env(
    topology: Topology,
    role: Role,
    addresses: Mapping[str, str],
    args: "PatternArgs",
    user_env: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """The runtime's configuration (with the pod's name as replica) plus the user's own env."""
    config = role_config(
        topology,
        role,
        addresses,
        replica="",
        function_file=function_path(role.function),
        source_dir=APP_DIR,
        drain_seconds=DRAIN_SECONDS,
        **_tls_settings(args),
    )
    replica = RuntimeConfig.env_name("replica")
    items: list[dict[str, Any]] = []
    for key, value in config.to_env().items():
        if key == replica:
            items.append({"name": key, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
        else:
            items.append({"name": key, "value": value})
    return items + user_env


def _probes(tls: bool) -> dict[str, Any]:
    """gRPC health probes (the runtime's grpc.health.v1); a TCP check when the port speaks TLS,
    which the kubelet's gRPC probe cannot. The startup probe gives routers time to see their
    upstreams serve before liveness counts."""
    check: dict[str, Any] = {"tcpSocket": {"port": GRPC_PORT}} if tls else {"grpc": {"port": GRPC_PORT}}
    return {
        "startupProbe": {**check, "periodSeconds": 2, "timeoutSeconds": 2, "failureThreshold": 150},
        "readinessProbe": {**check, "periodSeconds": 5, "timeoutSeconds": 2, "failureThreshold": 2},
        "livenessProbe": {**check, "periodSeconds": 10, "timeoutSeconds": 3, "failureThreshold": 6},
    }


def _deployment(
    topology: Topology,
    role: Role,
    args: "PatternArgs",
    image: ContainerImage,
    addresses: Mapping[str, pulumi.Output[str]],
    user_env: list[dict[str, Any]],
    container_resources: dict[str, dict[str, str]],
    autoscale: Optional[tuple[int, int, int]],
    meta: Any,
    opts: Any,
) -> k8s.apps.v1.Deployment:
    selector = selector_labels(topology, role.name)
    labels = role_labels(topology, role, args.labels)
    ups = list(role.upstreams)
    env = pulumi.Output.all(pulumi.Output.all(*[addresses[u] for u in ups]), pulumi.Output.from_input(user_env)).apply(
        lambda resolved: _container_env(topology, role, dict(zip(ups, resolved[0])), args, resolved[1])
    )
    ports = [{"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"}]
    if role.entry:
        ports.append({"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"})
    mounts = [{"name": "tmp", "mountPath": "/tmp"}]
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]
    if args.tls_secret:
        mounts.append({"name": "tls", "mountPath": TLS_DIR, "readOnly": True})
        volumes.append({"name": "tls", "secret": {"secretName": args.tls_secret, "defaultMode": 0o440}})
    container = {
        "name": CONTAINER,
        "image": image.ref,
        "imagePullPolicy": "IfNotPresent",
        "ports": ports,
        "env": env,
        "resources": container_resources,
        **_probes(bool(args.tls_secret)),
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
    pod_meta: dict[str, Any] = {"labels": labels}
    if args.annotations:
        pod_meta["annotations"] = dict(args.annotations)
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": grace_seconds(topology, DRAIN_SECONDS),
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
    return k8s.apps.v1.Deployment(
        role.name,
        metadata=meta(role.name, labels),
        spec=spec,
        opts=opts("kubernetes:apps/v1:Deployment", "{role}", role),
    )


def _network_policy(topology: Topology, role: Role, args: "PatternArgs", meta: Any, opts: Any) -> k8s.networking.v1.NetworkPolicy:
    """The entry accepts gRPC and HTTP from anywhere; any other role gRPC only from its callers' pods.
    With egress="restricted" a role may only resolve names (DNS) and call its own upstreams."""
    grpc_port = {"port": GRPC_PORT, "protocol": "TCP"}
    if role.entry:
        ingress = [{"ports": [grpc_port, {"port": HTTP_PORT, "protocol": "TCP"}]}]
    else:
        callers = [{"podSelector": {"matchLabels": selector_labels(topology, c.name)}} for c in topology.callers_of(role.name)]
        ingress = [{"from": callers, "ports": [grpc_port]}] if callers else []
    spec: dict[str, Any] = {
        "podSelector": {"matchLabels": selector_labels(topology, role.name)},
        "policyTypes": ["Ingress"],
        "ingress": ingress,
    }
    if args.egress == "restricted":
        dns = {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}
        upstreams = [{"podSelector": {"matchLabels": selector_labels(topology, u)}} for u in role.upstreams]
        spec["policyTypes"] = ["Ingress", "Egress"]
        spec["egress"] = [dns] + ([{"to": upstreams, "ports": [grpc_port]}] if upstreams else [])
    return k8s.networking.v1.NetworkPolicy(
        role.name,
        metadata=meta(role.name, role_labels(topology, role, args.labels)),
        spec=spec,
        opts=opts("kubernetes:networking.k8s.io/v1:NetworkPolicy", "{role}", role),
    )


def _disruption_budget(topology: Topology, role: Role, args: "PatternArgs", meta: Any, opts: Any) -> k8s.policy.v1.PodDisruptionBudget:
    """At most one replica of a group down at a time for voluntary disruptions (node drains)."""
    return k8s.policy.v1.PodDisruptionBudget(
        role.name,
        metadata=meta(role.name, role_labels(topology, role, args.labels)),
        spec={"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(topology, role.name)}},
        opts=opts("kubernetes:policy/v1:PodDisruptionBudget", "{role}", role),
    )


def _autoscaler(
    topology: Topology, role: Role, autoscale: tuple[int, int, int], args: "PatternArgs", meta: Any, opts: Any
) -> k8s.autoscaling.v2.HorizontalPodAutoscaler:
    low, high, cpu = autoscale
    return k8s.autoscaling.v2.HorizontalPodAutoscaler(
        role.name,
        metadata=meta(role.name, role_labels(topology, role, args.labels)),
        spec={
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": role.name},
            "minReplicas": low,
            "maxReplicas": high,
            "metrics": [
                {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": cpu}}}
            ],
        },
        opts=opts("kubernetes:autoscaling/v2:HorizontalPodAutoscaler", "{role}", role),
    )


def _entry_urls(service: k8s.core.v1.Service, public: bool, domain: str) -> tuple[pulumi.Output[str], pulumi.Output[str]]:
    """The in-cluster DNS name, or the LoadBalancer's address when public."""
    if public:

        def host(status: Any) -> str:
            ingress = (status.load_balancer.ingress if status and status.load_balancer else None) or []
            if not ingress:
                return ""
            return ingress[0].ip or ingress[0].hostname or ""

        address = service.status.apply(host)
    else:
        address = service.metadata.apply(lambda m: f"{m.name}.{m.namespace}.svc.{domain}")
    return (
        address.apply(lambda a: f"http://{a}:{HTTP_PORT}"),
        address.apply(lambda a: f"grpc://{a}:{GRPC_PORT}"),
    )
