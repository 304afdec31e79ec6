"""The four patterns as Pulumi components: Service, Spread, Shard, ScatterGather.

Each validates its arguments, expands into a `Topology` (pure data) and hands it to the renderer of
its target: Kubernetes and Docker resources for `pulumi up`, or local processes for
`metaparticle run`. The pattern logic lives here once; renderers only translate.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping, Optional, Union

import pulumi
from metaparticle_runtime.config import RuntimeConfig

from . import _registry
from ._container import Container
from ._errors import PatternError
from ._functions import FunctionShippingError, FunctionSpec, ship
from ._targets import check_options, render
from ._topology import Role, Settings, Topology, dns_name

if TYPE_CHECKING:
    from ._image import ContainerImage
    from ._targets.local import LocalPlan
    from ._specs.docker import DockerSpec
    from ._specs.kubernetes import KubernetesSpec

Target = Literal["kubernetes", "docker", "local"]
TARGETS = ("kubernetes", "docker", "local")


@dataclass(kw_only=True)
class PatternArgs:
    """Settings every pattern accepts: runtime behaviour and where/how it is deployed."""

    #: Deadline of one request, in seconds.
    timeout: float = RuntimeConfig.timeout
    #: Largest request body accepted, in bytes.
    max_request_bytes: int = RuntimeConfig.max_request_bytes
    #: Largest result, in bytes, a function may answer and every router passes on (default 16 MiB).
    max_response_bytes: int = RuntimeConfig.max_response_bytes
    #: Requests one replica serves at once before refusing more (429 / RESOURCE_EXHAUSTED).
    max_in_flight: int = RuntimeConfig.max_in_flight
    #: Extra attempts on another replica when one is unavailable.
    retries: int = RuntimeConfig.retries
    #: Whether running the function twice for one request does no harm. When a replica dies with a
    #: request in flight, the router re-sends it to another replica (up to `retries` times) and the
    #: function may have started on the one that died. With False only requests that provably reached
    #: no replica are re-sent (as with retries=0).
    idempotent: bool = True
    #: Replicas of the router (Spread, Shard) or root (ScatterGather): no single point of failure.
    #: Default 2 on kubernetes and docker, 1 locally (local routers share the entry port).
    routers: Optional[int] = None
    #: "kubernetes", "docker" or "local"; default: Pulumi config `metaparticle:target`, else kubernetes.
    target: Optional[Target] = None
    #: A prebuilt image (skips the build); else the program's directory is built on the runtime image.
    image: Optional[pulumi.Input[str]] = None
    #: Registry to push the built image to (e.g. "ghcr.io/me"); config `metaparticle:registry`.
    registry: Optional[str] = None
    #: Build without pushing (a local cluster that sees the local image store).
    skip_push: Optional[bool] = None
    #: Kubernetes namespace of every object.
    namespace: Optional[pulumi.Input[str]] = None
    #: Extra labels and annotations on every object.
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    #: Container resources {"requests": {...}, "limits": {...}} (sane defaults otherwise).
    resources: Optional[Mapping[str, Mapping[str, str]]] = None
    #: Extra environment variables for every container (use Secrets for secrets).
    env: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    #: Expose the entry outside the cluster (a LoadBalancer Service).
    public: bool = False
    #: "open" (default), or "restricted": each role may only resolve names (DNS) and call the roles
    #: it routes to (a NetworkPolicy egress rule); a function that calls out needs "open".
    egress: Literal["open", "restricted"] = "open"
    #: A prometheus-operator ServiceMonitor scraping every role's `metrics` port (Kubernetes; the
    #: cluster needs the operator's CRDs). Pods carry prometheus.io/* scrape annotations regardless.
    monitoring: bool = False
    #: Patterns this pattern's functions call, by the name they call them with:
    #: `uses={"users": users}` lets a function do `ctx.call("users", request)`. Each must be a pattern
    #: declared before this one, on the same target (so `uses` can never form a cycle).
    uses: Mapping[str, Any] = field(default_factory=dict)
    #: Horizontal autoscaling of function replicas: (min, max, target CPU %).
    autoscale: Optional[tuple[int, int, int]] = None
    #: Mutual TLS between roles: name of a Kubernetes Secret with tls.crt, tls.key and ca.crt.
    tls_secret: Optional[str] = None
    #: Mutual TLS between roles on the local target: (cert, key, ca) PEM file paths. Every role serves
    #: and calls with this certificate (it needs the IP SAN 127.0.0.1) and accepts only peers whose
    #: certificate the CA signed. The HTTP entry stays plain HTTP on 127.0.0.1.
    tls: Optional[tuple[str, str, str]] = None

    def settings(self, **extra: Any) -> Settings:
        return Settings(
            timeout=self.timeout,
            max_request_bytes=self.max_request_bytes,
            max_response_bytes=self.max_response_bytes,
            max_in_flight=self.max_in_flight,
            retries=self.retries if self.idempotent else 0,
            idempotent=self.idempotent,
            **extra,
        )


@dataclass(kw_only=True)
class ServiceArgs(PatternArgs):
    #: The function: handler(request) or handler(request, ctx), JSON in, JSON out; or an HTTP
    #: server in any language, `mp.Container(...)` (see the README's "Functions in any language").
    function: Union[Callable[..., Any], Container]
    #: A persistent directory for the function, kept across restarts and runs: `ctx.storage`. True,
    #: or the volume's size on Kubernetes ("1Gi"; True is 1Gi). One replica only (replicas do not
    #: share data). See the README's "Storage" section.
    storage: Union[bool, str, None] = None
    #: The Kubernetes StorageClass of the volumes (default: the cluster's default class).
    storage_class: Optional[str] = None


@dataclass(kw_only=True)
class SpreadArgs(PatternArgs):
    function: Union[Callable[..., Any], Container]
    #: How many identical replicas share the load (each request goes to the next one).
    replicas: int = 3


@dataclass(kw_only=True)
class ShardArgs(PatternArgs):
    function: Union[Callable[..., Any], Container]
    #: How many shards; each owns the keys that consistent hashing gives it.
    shards: int = 3
    #: The shard key: a function of the request, or a JSON field path ("user.id").
    key: Union[Callable[[Any], Any], str]
    #: Replicas of each shard.
    replicas: int = 1
    #: A persistent directory for the function, kept across restarts and runs: `ctx.storage`. True,
    #: or the volume's size on Kubernetes ("1Gi"; True is 1Gi). One replica only (replicas do not
    #: share data). See the README's "Storage" section.
    storage: Union[bool, str, None] = None
    #: The Kubernetes StorageClass of the volumes (default: the cluster's default class).
    storage_class: Optional[str] = None
    #: Accept a change of `shards=` although the shards keep data: about 1/(N+1) of the keys then
    #: belong to another shard than the one holding their data (storage only).
    reshard: bool = False


@dataclass(kw_only=True)
class ScatterGatherArgs(PatternArgs):
    #: The function every leaf runs on the request (knows its leaf via ctx.index).
    leaf: Union[Callable[..., Any], Container]
    #: Merges the leaves' results (a list, in leaf order): gather(results) or gather(results, ctx).
    gather: Callable[..., Any]
    #: How many leaves the request fans out to.
    leaves: int = 4
    #: Replicas of each leaf (enables hedging of slow leaves).
    replicas: int = 1
    #: "fail" the request when a leaf fails, or return a "partial" result with "missing".
    on_missing: Literal["fail", "partial"] = RuntimeConfig.on_missing  # type: ignore[assignment]
    #: Seconds before a slow leaf call is hedged to another replica (None: adaptive p95, 0: never).
    hedge_after: Optional[float] = RuntimeConfig.hedge_after
    #: A persistent directory for the function, kept across restarts and runs: `ctx.storage`. True,
    #: or the volume's size on Kubernetes ("1Gi"; True is 1Gi). One replica only (replicas do not
    #: share data). See the README's "Storage" section.
    storage: Union[bool, str, None] = None
    #: The Kubernetes StorageClass of the volumes (default: the cluster's default class).
    storage_class: Optional[str] = None


_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$")
_STORAGE_CLASS = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
#: The volume size of `storage=True`.
DEFAULT_STORAGE = "1Gi"


def _storage(args: Any, replicas: int, where: str) -> tuple[Optional[str], Optional[str]]:
    """`storage=` and `storage_class=` as (size, class); refuses what cannot keep data safely."""
    storage, storage_class = args.storage, args.storage_class
    if storage is None or storage is False:
        if storage_class is not None:
            raise PatternError(f"{where}: storage_class= needs storage= (the pattern keeps no data)")
        return None, None
    if storage is True:
        size = DEFAULT_STORAGE
    elif isinstance(storage, str) and _QUANTITY.match(storage) and float(re.sub(r"[A-Za-z]+$", "", storage)) > 0:
        size = storage
    else:
        raise PatternError(f"{where}: storage must be True or a volume size like '1Gi' or '500Mi', got {storage!r}")
    if storage_class is not None and (not isinstance(storage_class, str) or not _STORAGE_CLASS.match(storage_class)):
        raise PatternError(f"{where}: storage_class must be the name of a Kubernetes StorageClass, got {storage_class!r}")
    if replicas != 1:
        raise PatternError(
            f"{where}: storage= needs replicas=1: each replica would get a directory of its own and "
            "replicas do not share or replicate data (use more shards instead)"
        )
    if args.autoscale is not None:
        raise PatternError(f"{where}: storage= and autoscale= do not go together (autoscaled replicas would not share data)")
    return size, storage_class


def _positive_int(value: Any, what: str, pattern: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PatternError(f"{pattern}: {what} must be a positive integer, got {value!r}")
    return value


class _Pattern(pulumi.ComponentResource):
    """Shared machinery: validation, topology, rendering, outputs."""

    #: The address of the pattern's entry (HTTP JSON): the best address the target gives.
    url: pulumi.Output[str]
    #: The gRPC address of the entry.
    grpc_url: pulumi.Output[str]
    #: The topology this component expands into (pure data).
    topology: Topology
    #: The image its containers run, when the target builds one from the program (name and context).
    image: Optional["ContainerImage"] = None
    #: The image of its `mp.Container` function on the container targets (given, or built from `build=`).
    function_image: Optional["ContainerImage"] = None
    #: What the docker target runs (the network and containers), as plain data.
    docker_spec: Optional["DockerSpec"] = None
    #: The docker target's network resource (a pattern that uses this one joins it).
    docker_network: Any = None
    #: The local target's processes and ports (set by its renderer).
    local_plan: Optional["LocalPlan"] = None
    #: What the kubernetes target applies (the manifests), or an Output of it when the namespace
    #: is known only once applied; `metaparticle render` writes it.
    kubernetes_spec: Optional[Union["KubernetesSpec", "pulumi.Output[KubernetesSpec]"]] = None

    _args_type: type[PatternArgs] = PatternArgs

    def __init__(
        self,
        resource_name: str,
        args: Optional[PatternArgs],
        opts: Optional[pulumi.ResourceOptions],
        kwargs: dict[str, Any],
    ) -> None:
        kind = type(self).__name__
        args = _make_args(self._args_type, kind, resource_name, args, kwargs)
        super().__init__(f"metaparticle:index:{kind}", resource_name, None, opts)
        #: (type, name) of every child resource, in the order they were declared.
        self.children: list[tuple[str, str]] = []
        self.args = args
        self.source_dir = _registry.source_dir()
        try:
            self.topology = self._expand(resource_name, args)
            self.topology.validate()
        except (FunctionShippingError, ValueError) as exc:
            if isinstance(exc, PatternError):
                raise
            raise PatternError(f"{kind} {resource_name!r}: {exc}") from None
        where = f"{kind} {resource_name!r}"
        if args.egress not in ("open", "restricted"):
            raise PatternError(f"{where}: egress must be 'open' or 'restricted', got {args.egress!r}")
        self.target = _resolve_target(args.target, where)
        self.topology = _with_routers(self.topology, args.routers, self.target, where)
        #: The patterns this one uses, by name (`uses=`).
        self.uses: dict[str, _Pattern] = _check_uses(args.uses, self.target, where)
        if self.uses:
            self.topology = replace(self.topology, uses=tuple((n, p.topology) for n, p in sorted(self.uses.items())))
        ignored = check_options(self.target, args, where)
        if getattr(args, "storage_class", None) is not None and self.target != "kubernetes":
            ignored.append("storage_class")  # only patterns that keep data have it, so not in the table
        for option in ignored:
            pulumi.log.warn(f"{where}: {option}= does not apply to the {self.target} target, which ignores it", resource=self)

        outputs = render(self.target, self, self.topology, args)
        self.url = outputs.url
        self.grpc_url = outputs.grpc_url
        _registry.record(self)
        self.register_outputs({"url": self.url, "grpc_url": self.grpc_url, **outputs.extra})

    # Subclasses build their roles.
    def _expand(self, name: str, args: Any) -> Topology:  # pragma: no cover - abstract
        raise NotImplementedError

    def _ship(self, fn: Any, purpose: str) -> FunctionSpec:
        if fn is None:
            raise PatternError(f"{type(self).__name__}: {purpose} is required")
        if isinstance(fn, Container):
            raise PatternError(
                f"{type(self).__name__}: {purpose} must be a Python function; mp.Container serves as the "
                "function of a Service, Spread or Shard, or a ScatterGather's leaf"
            )
        return ship(fn, purpose, self.source_dir)

    def _function(self, fn: Any, purpose: str, args: Any) -> dict[str, Any]:
        """The Role fields of a role's function: a Python function, or a server of the user's."""
        if not isinstance(fn, Container):
            return {"function": self._ship(fn, purpose)}
        where = f"{type(self).__name__}"
        if getattr(args, "storage", None) not in (None, False):
            raise PatternError(f"{where}: storage= is a Python function's ctx.storage; a function that is an mp.Container keeps its own data")
        if args.uses and purpose != "leaf":  # a ScatterGather's gather function may still use them
            raise PatternError(f"{where}: uses= gives a Python function ctx.call; a function that is an mp.Container cannot use it")
        return {"container": fn.resolved(self.source_dir)}


def _make_args(
    args_type: type[PatternArgs], kind: str, name: str, args: Optional[PatternArgs], kwargs: dict[str, Any]
) -> Any:
    if not isinstance(name, str) or not name:
        raise PatternError(f"{kind}: resource_name must be a non-empty string, got {name!r}")
    known = {f.name for f in fields(args_type)}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise PatternError(f"{kind} {name!r}: unknown argument(s) {', '.join(unknown)}; accepted: {', '.join(sorted(known))}")
    if args is not None and not isinstance(args, args_type):
        raise PatternError(f"{kind} {name!r}: args must be a {args_type.__name__}, got {type(args).__name__}")
    try:
        return replace(args, **kwargs) if args is not None else args_type(**kwargs)
    except TypeError as exc:
        missing = str(exc).split("argument", 1)[-1].strip(": ")
        raise PatternError(f"{kind} {name!r}: missing required argument {missing}") from None


#: Router (or root) replicas when `routers=` is not given.
DEFAULT_ROUTERS = {"kubernetes": 2, "docker": 2, "local": 1}


def _with_routers(topology: Topology, routers: Optional[int], target: str, where: str) -> Topology:
    """`topology` with its router or root role scaled to `routers` (the target's default if None)."""
    entry = topology.entry
    if entry.kind == "function":
        if routers not in (None, 1):
            raise PatternError(f"{where}: routers= applies to patterns with a router (Spread, Shard, ScatterGather); a Service has none")
        return topology
    count = DEFAULT_ROUTERS[target] if routers is None else _positive_int(routers, "routers", where)
    roles = tuple(replace(r, replicas=count) if r is entry else r for r in topology.roles)
    return replace(topology, roles=roles)


_USES_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")


def _check_uses(uses: Any, target: str, where: str) -> dict[str, "_Pattern"]:
    """`uses=` as {name: pattern}: names a function can call, patterns already declared on `target`."""
    if not isinstance(uses, Mapping):
        raise PatternError(f"{where}: uses must be a mapping of names to patterns, e.g. uses={{'users': users}}")
    out: dict[str, _Pattern] = {}
    for name, pattern in uses.items():
        if not isinstance(name, str) or not _USES_NAME.fullmatch(name):
            raise PatternError(f"{where}: uses name {name!r} must be a word (letters, digits, _ . -)")
        if not isinstance(pattern, _Pattern):
            raise PatternError(
                f"{where}: uses[{name!r}] must be a pattern declared before this one (mp.Service, mp.Spread, ...), "
                f"got {type(pattern).__name__}"
            )
        if pattern.target != target:
            raise PatternError(
                f"{where}: uses[{name!r}] is {type(pattern).__name__} {pattern.topology.name!r} on the {pattern.target} "
                f"target; a pattern can only call patterns on its own target ({target})"
            )
        out[name] = pattern
    return out


def _resolve_target(target: Optional[str], where: str) -> str:
    chosen = target or pulumi.Config("metaparticle").get("target") or "kubernetes"
    if chosen not in TARGETS:
        raise PatternError(f"{where}: target must be one of {', '.join(TARGETS)}, got {chosen!r}")
    return chosen


class Service(_Pattern):
    """One function behind one address: the simplest pattern."""

    _args_type = ServiceArgs

    def __init__(
        self,
        resource_name: str,
        args: Optional[ServiceArgs] = None,
        opts: Optional[pulumi.ResourceOptions] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(resource_name, args, opts, kwargs)

    def _expand(self, name: str, args: ServiceArgs) -> Topology:
        base = dns_name(name)
        size, storage_class = _storage(args, 1, f"Service {name!r}")
        role = Role(
            name=base, kind="function", replicas=1, **self._function(args.function, "function", args), entry=True,
            component="service", storage=size, storage_class=storage_class,
        )
        return Topology(name=name, pattern="Service", roles=(role,), settings=args.settings(), source_dir=self.source_dir)


class Spread(_Pattern):
    """Replicas of one function behind a router that spreads every request to the next replica."""

    _args_type = SpreadArgs

    def __init__(
        self,
        resource_name: str,
        args: Optional[SpreadArgs] = None,
        opts: Optional[pulumi.ResourceOptions] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(resource_name, args, opts, kwargs)

    def _expand(self, name: str, args: SpreadArgs) -> Topology:
        replicas = _positive_int(args.replicas, "replicas", f"Spread {name!r}")
        base = dns_name(name)
        fn = self._function(args.function, "function", args)
        roles = (
            Role(name=f"{base}-router", kind="spread", replicas=1, upstreams=(f"{base}-replica",), entry=True, component="router"),
            Role(name=f"{base}-replica", kind="function", replicas=replicas, **fn, component="replica"),
        )
        return Topology(name=name, pattern="Spread", roles=roles, settings=args.settings(), source_dir=self.source_dir)


class Shard(_Pattern):
    """Shards of one function: a router sends each request to the shard that owns its key."""

    _args_type = ShardArgs

    def __init__(
        self,
        resource_name: str,
        args: Optional[ShardArgs] = None,
        opts: Optional[pulumi.ResourceOptions] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(resource_name, args, opts, kwargs)

    def _expand(self, name: str, args: ShardArgs) -> Topology:
        where = f"Shard {name!r}"
        shards = _positive_int(args.shards, "shards", where)
        replicas = _positive_int(args.replicas, "replicas", where)
        size, storage_class = _storage(args, replicas, where)
        if args.reshard not in (True, False):
            raise PatternError(f"{where}: reshard must be True or False, got {args.reshard!r}")
        base = dns_name(name)
        fn = self._function(args.function, "function", args)
        key_path: Optional[str] = None
        key_fn: Optional[FunctionSpec] = None
        if isinstance(args.key, str):
            if not args.key or any(not part for part in args.key.split(".")):
                raise PatternError(f"{where}: key must be a field path like 'user' or 'user.id', got {args.key!r}")
            key_path = args.key
        elif callable(args.key) or isinstance(args.key, Container):
            key_fn = self._ship(args.key, "key")
        else:
            raise PatternError(f"{where}: key must be a function of the request or a JSON field path, got {args.key!r}")
        shard_names = tuple(f"{base}-shard-{i}" for i in range(shards))
        roles = [
            Role(
                name=f"{base}-router",
                kind="shard",
                replicas=1,
                function=key_fn,
                upstreams=shard_names,
                entry=True,
                key_path=key_path,
                component="router",
            )
        ]
        roles += [
            Role(
                name=n, kind="function", replicas=replicas, **fn, index=i, count=shards, component="shard",
                storage=size, storage_class=storage_class,
            )
            for i, n in enumerate(shard_names)
        ]
        return Topology(name=name, pattern="Shard", roles=tuple(roles), settings=args.settings(), source_dir=self.source_dir)


class ScatterGather(_Pattern):
    """A root fans each request out to every leaf at once and merges their results."""

    _args_type = ScatterGatherArgs

    def __init__(
        self,
        resource_name: str,
        args: Optional[ScatterGatherArgs] = None,
        opts: Optional[pulumi.ResourceOptions] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(resource_name, args, opts, kwargs)

    def _expand(self, name: str, args: ScatterGatherArgs) -> Topology:
        where = f"ScatterGather {name!r}"
        leaves = _positive_int(args.leaves, "leaves", where)
        replicas = _positive_int(args.replicas, "replicas", where)
        size, storage_class = _storage(args, replicas, where)
        if args.on_missing not in ("fail", "partial"):
            raise PatternError(f"{where}: on_missing must be 'fail' or 'partial', got {args.on_missing!r}")
        base = dns_name(name)
        leaf = self._function(args.leaf, "leaf", args)
        gather = self._ship(args.gather, "gather")
        leaf_names = tuple(f"{base}-leaf-{i}" for i in range(leaves))
        roles = [Role(name=f"{base}-root", kind="gather", replicas=1, function=gather, upstreams=leaf_names, entry=True, component="root")]
        roles += [
            Role(
                name=n, kind="function", replicas=replicas, **leaf, index=i, count=leaves, component="leaf",
                storage=size, storage_class=storage_class,
            )
            for i, n in enumerate(leaf_names)
        ]
        settings = args.settings(on_missing=args.on_missing, hedge_after=args.hedge_after)
        return Topology(name=name, pattern="ScatterGather", roles=tuple(roles), settings=settings, source_dir=self.source_dir)


__all__ = [
    "PatternArgs",
    "PatternError",
    "ScatterGather",
    "ScatterGatherArgs",
    "Service",
    "ServiceArgs",
    "Shard",
    "ShardArgs",
    "Spread",
    "SpreadArgs",
]
