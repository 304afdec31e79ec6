"""The Kubernetes target's Pulumi applier: `specs.kubernetes` as `pulumi_kubernetes` children of the component.

One child per manifest, named after the pattern (`<role>` for a role's objects, `<base>-env` for
the env Secret, `<base>-image` for the image) with parent=component, so a Kubernetes provider given
to the pattern (`provider=` or `providers=`) reaches all of them. Former names go to
`_shared.FORMER_NAMES`. The component keeps the spec (`kubernetes_spec`): `metaparticle render`
writes it as YAML.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import pulumi
import pulumi_kubernetes as k8s

from .._errors import PatternError
from .._image import APP_DIR, container_image, function_image
from .._specs.kubernetes import (
    CONTAINER,
    DRAIN_SECONDS,
    WORKLOADS,
    KubernetesObject,
    KubernetesSettings,
    UsedPattern,
    kubernetes_spec,
    tls_settings,
)
from .._specs.labels import selector_labels
from .._topology import GRPC_PORT, HTTP_PORT, Topology, dns_name
from . import TargetOutputs
from ._shared import check_env, check_labels, check_unique, child_opts, config, config_bool, grace_seconds, resources

if TYPE_CHECKING:
    from .._patterns import PatternArgs, _Pattern

#: Reads `metaparticle:render`: set when manifests are rendered offline (images by name).
RENDER_KEY = "render"

#: Stands for a namespace known only once applied, where no address is computed from it.
UNKNOWN_NAMESPACE = "<unknown>"
#: The pulumi_kubernetes resource of each kind, and its type token.
RESOURCES: dict[str, tuple[Any, str]] = {
    "Service": (k8s.core.v1.Service, "kubernetes:core/v1:Service"),
    "Secret": (k8s.core.v1.Secret, "kubernetes:core/v1:Secret"),
    "Deployment": (k8s.apps.v1.Deployment, "kubernetes:apps/v1:Deployment"),
    "StatefulSet": (k8s.apps.v1.StatefulSet, "kubernetes:apps/v1:StatefulSet"),
    "NetworkPolicy": (k8s.networking.v1.NetworkPolicy, "kubernetes:networking.k8s.io/v1:NetworkPolicy"),
    "PodDisruptionBudget": (k8s.policy.v1.PodDisruptionBudget, "kubernetes:policy/v1:PodDisruptionBudget"),
    "HorizontalPodAutoscaler": (k8s.autoscaling.v2.HorizontalPodAutoscaler, "kubernetes:autoscaling/v2:HorizontalPodAutoscaler"),
    # prometheus-operator's custom resource: the cluster must have its CRD (monitoring=True).
    "ServiceMonitor": (k8s.apiextensions.CustomResource, "kubernetes:monitoring.coreos.com/v1:ServiceMonitor"),
}
#: Manifest fields under the names pulumi_kubernetes takes them.
_ARGUMENTS = {"metadata": "metadata", "spec": "spec", "type": "type", "stringData": "string_data"}


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
    check_env(topology, args.env, where, source_dir=APP_DIR, drain_seconds=DRAIN_SECONDS, **tls_settings(args.tls_secret))
    domain = config().get("clusterDomain") or "cluster.local"
    image = container_image(component, topology, args, by_name=bool(config_bool(RENDER_KEY)))
    server_image = component.function_image = function_image(component, topology, args, by_name=bool(config_bool(RENDER_KEY)))
    settings = KubernetesSettings(
        image=image.ref,
        function_image=server_image.ref if server_image is not None else None,
        namespace=namespace,
        cluster_domain=domain,
        labels=dict(args.labels),
        annotations=dict(args.annotations),
        resources=container_resources,
        env=dict(args.env),
        public=args.public,
        egress=args.egress,
        autoscale=autoscale,
        tls_secret=args.tls_secret,
        grace_seconds=grace_seconds(topology, DRAIN_SECONDS),
        monitoring=args.monitoring,
        uses=_uses(component, where),
        router=image.router,
    )
    known = isinstance(namespace, str)
    # A namespace known only once applied (the provider's default, or an Output) changes nothing but
    # the env of Deployments that call upstreams (the Services' addresses): those follow it below.
    spec = kubernetes_spec(topology, settings, service_namespace=None if known else UNKNOWN_NAMESPACE)
    base = dns_name(topology.name)
    created: dict[tuple[str, str], Any] = {}
    for obj in spec.objects:
        body = dict(obj.manifest)
        depends_on: list[pulumi.Resource] = []
        if obj.kind in WORKLOADS:
            # After the Services they call and the env Secret (routers are told the Services' addresses).
            upstreams = [created[("Service", u)] for u in topology.role(obj.name).upstreams]
            depends_on = upstreams + [created[k] for k in created if k[0] == "Secret"]
            if upstreams and not known:
                env = _namespace(namespace, upstreams[0]).apply(
                    lambda ns, name=obj.name, kind=obj.kind: _env(topology, settings, ns, kind, name)
                )
                body["spec"] = _with_env(body["spec"], env)
        created[(obj.kind, obj.name)] = _create(component, base, obj, body, depends_on)
    entry = created[("Service", topology.entry.name)]
    component.kubernetes_spec = (
        spec if known else _namespace(namespace, entry).apply(lambda ns: kubernetes_spec(topology, settings, service_namespace=ns))
    )
    url, grpc_url = _entry_urls(entry, args.public, domain)
    return TargetOutputs(url=url, grpc_url=grpc_url, extra={"image": image.ref})


def _uses(component: "_Pattern", where: str) -> dict[str, UsedPattern]:
    """The patterns `component` uses, as its spec needs them."""
    out = {}
    for name, used in component.uses.items():
        if bool(used.args.tls_secret) != bool(component.args.tls_secret):
            raise PatternError(f"{where}: uses[{name!r}]: both patterns need tls_secret= or neither (calls go over the same mutual TLS)")
        namespace = used.args.namespace if used.args.namespace is not None else config().get("namespace")
        entry = used.topology.entry.name
        out[name] = UsedPattern(entry, namespace if isinstance(namespace, str) else None, selector_labels(used.topology, entry))
    return out


def _namespace(namespace: Any, service: Any) -> pulumi.Output[str]:
    """The namespace given as an Output, else the one the provider put `service` in."""
    if namespace is not None:
        return pulumi.Output.from_input(namespace)
    return service.metadata.apply(lambda m: m.namespace)


def _env(topology: Topology, settings: KubernetesSettings, namespace: str, kind: str, name: str) -> Any:
    """The container env of workload `name` once the Services' namespace is known."""
    spec = kubernetes_spec(topology, settings, service_namespace=namespace)
    return _container(spec.find(kind, name).manifest["spec"])["env"]


def _container(deployment_spec: Any) -> Any:
    """The runtime's container (a pod may also run the user's server: mp.Container)."""
    return next(c for c in deployment_spec["template"]["spec"]["containers"] if c["name"] == CONTAINER)


def _with_env(deployment_spec: Any, env: Any) -> dict[str, Any]:
    """`deployment_spec` with its runtime container's env replaced (copies, the spec stays as it was)."""
    template = deployment_spec["template"]
    containers = [{**c, "env": env} if c["name"] == CONTAINER else c for c in template["spec"]["containers"]]
    return {**deployment_spec, "template": {**template, "spec": {**template["spec"], "containers": containers}}}


def _create(component: "_Pattern", base: str, obj: KubernetesObject, body: dict[str, Any], depends_on: list[pulumi.Resource]) -> Any:
    """One pulumi_kubernetes resource for one manifest, named as the object."""
    resource, type_token = RESOURCES[obj.kind]
    fields = {"base": base, "role": obj.role or base}
    opts = child_opts(component, type_token, obj.template, fields, delete_before_replace=True, depends_on=depends_on or None)
    arguments = {_ARGUMENTS[k]: v for k, v in body.items() if k not in ("apiVersion", "kind")}
    if resource is k8s.apiextensions.CustomResource:
        arguments.update(api_version=body["apiVersion"], kind=body["kind"])
    return resource(obj.template.format(**fields), opts=opts, **arguments)


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
