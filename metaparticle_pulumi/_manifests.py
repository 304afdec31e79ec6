"""A program's Kubernetes objects as YAML files, and its resource tree, without a cluster or the CLI.

`render_manifests` evaluates the program offline (Pulumi's mocks) for the kubernetes target and
writes one kubectl-ready file per object of each pattern's Kubernetes spec (`_specs/kubernetes.py`,
recorded on the pattern when it was declared); images are referenced by their content-tagged name
(nothing is pushed when rendering: build the context under `.metaparticle/build/` with that tag).
`preview_tree` shows what `pulumi preview` would create: each pattern and its children.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

import pulumi
import yaml

from ._outputs import resolved
from ._program import evaluate

#: First line of every rendered file: stale ones (and only those) are removed on the next render.
HEADER = "# Rendered by metaparticle from a Pulumi program; apply with kubectl apply -f <dir>.\n"
#: Where objects go when neither the pattern nor the config names a namespace.
DEFAULT_NAMESPACE = "default"
#: Files sort in the order kubectl should apply them.
KIND_ORDER = {
    "Secret": 1,
    "Service": 4,
    "Deployment": 5,
    "StatefulSet": 5,
    "PodDisruptionBudget": 6,
    "HorizontalPodAutoscaler": 7,
    "NetworkPolicy": 8,
    "ServiceMonitor": 9,
}


def _manifest(manifest: Mapping[str, Any], namespace: str) -> dict[str, Any]:
    """A recorded manifest with its Outputs resolved: apiVersion, kind and metadata first, then
    every mapping's keys sorted (stable files, whatever order the spec built them in)."""
    body = _sorted(resolved(pulumi.Output.from_input(manifest)))
    meta = body.pop("metadata")
    meta.setdefault("namespace", namespace)
    return {"apiVersion": body.pop("apiVersion"), "kind": body.pop("kind"), "metadata": meta, **body}


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted(v) for k, v in sorted(value.items()) if v is not None}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


def kubernetes_manifests(patterns: Iterable[Any], namespace: str = DEFAULT_NAMESPACE) -> list[dict[str, Any]]:
    """The manifests the patterns' Kubernetes specs hold, resolved (objects without a namespace get
    `namespace`, the one their addresses were computed for)."""
    objects = []
    for pattern in patterns:
        spec = resolved(getattr(pattern, "kubernetes_spec", None))
        for obj in spec.objects if spec is not None else ():
            objects.append(_manifest(obj.manifest, namespace))
    return objects


def _file_name(obj: Mapping[str, Any], taken: set[str]) -> str:
    kind = obj["kind"]
    meta = obj["metadata"]
    order = KIND_ORDER.get(kind, 9)
    name = f"{order:02d}-{kind.lower()}-{meta['name']}.yaml"
    if name in taken:
        name = f"{order:02d}-{kind.lower()}-{meta.get('namespace', '')}-{meta['name']}.yaml"
    taken.add(name)
    return name


class Rendered(list):  # type: ignore[type-arg]
    """The paths `render_manifests` wrote, the Secrets it left out (`left_out`, their names), and the
    program's own Kubernetes resources outside patterns, which it does not write (`outside`,
    "type name")."""

    left_out: list[str]
    outside: list[str]


def render_manifests(
    program_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    config: Optional[Mapping[str, str]] = None,
    *,
    include_secrets: bool = False,
) -> Rendered:
    """Writes one YAML file per Kubernetes object of the program's patterns into `out_dir`; returns
    their paths.

    `config` is Pulumi config of the program (`{"metaparticle:namespace": "prod"}` ...). Secrets hold
    the values of the program's Output env: they are left out unless `include_secrets`, and then
    written readable by their owner only (mode 0600).
    """
    settings = dict(config or {})
    settings["metaparticle:render"] = "true"
    # Objects go to a namespace the manifests name (that their addresses point into).
    settings["metaparticle:namespace"] = settings.get("metaparticle:namespace") or DEFAULT_NAMESPACE
    evaluation = evaluate(program_dir, target="kubernetes", config=settings)
    objects = kubernetes_manifests(evaluation.patterns, settings["metaparticle:namespace"])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.yaml"):
        try:
            if old.read_text().startswith(HEADER):
                old.unlink()
        except OSError:
            continue
    written = Rendered()
    written.left_out = []
    children = {child for pattern in evaluation.patterns for child in pattern.children}
    written.outside = [
        f"{r.type} {r.name}" for r in evaluation.resources if r.type.startswith("kubernetes:") and (r.type, r.name) not in children
    ]
    taken: set[str] = set()
    for obj in sorted(objects, key=lambda o: (KIND_ORDER.get(o["kind"], 9), o["metadata"].get("namespace", ""), o["metadata"]["name"])):
        secret = obj["kind"] == "Secret"
        if secret and not include_secrets:
            written.left_out.append(obj["metadata"]["name"])
            continue
        path = out / _file_name(obj, taken)
        text = HEADER + yaml.safe_dump(obj, sort_keys=False, default_flow_style=False)
        if secret:
            path.unlink(missing_ok=True)
            with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as fh:
                fh.write(text)
        else:
            path.write_text(text)
        written.append(path)
    return written


def _pattern_type(pattern: Any) -> str:
    return f"metaparticle:index:{type(pattern).__name__}"


def preview_tree(
    program_dir: str | os.PathLike[str],
    target: str = "kubernetes",
    config: Optional[Mapping[str, str]] = None,
) -> str:
    """The resources `pulumi preview` would create for `target`: each pattern, then its children."""
    evaluation = evaluate(program_dir, target=target, config=config, preview=True)
    lines: list[str] = []
    under_patterns = {(_pattern_type(p), p.topology.name) for p in evaluation.patterns}
    for pattern in evaluation.patterns:
        under_patterns.update(pattern.children)
    others = [r for r in evaluation.resources if (r.type, r.name) not in under_patterns]
    for r in others:
        lines.append(f"{r.type}  {r.name}")
    for pattern in evaluation.patterns:
        lines.append(f"{_pattern_type(pattern)}  {pattern.topology.name}")
        children = sorted(pattern.children)
        for i, (kind, name) in enumerate(children):
            lines.append(f"{'└─ ' if i == len(children) - 1 else '├─ '}{kind}  {name}")
    images = [p.image for p in evaluation.patterns if p.image is not None and p.image.context is not None]
    if images:
        lines.append("")
        lines += [f"image {image.name}: {image.context.summary()}" for image in images]
    return "\n".join(lines) + "\n"
