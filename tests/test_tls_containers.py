"""Mutual TLS between roles in containers, under the names each target dials (README, "Security"):
a Spread's image from the program, its replicas started with the Docker SDK on a user network whose
aliases play the cluster DNS (`<role>.<namespace>.svc.cluster.local` and the short forms) or the
docker target's network (`<role>`), each with the role's RuntimeConfig environment plus a CA and a
certificate made here with openssl. Calls through the entry work when the certificate names every
role as it is dialled, are refused when it does not, and the TLS-aware probe sees each replica serve.

The docker target refuses tls= today, so the roles are started here from the docker target's plan.
Without an engine these tests skip, unless MP_REQUIRE_CONTAINERS=1 (CI), where they fail.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from metaparticle_pulumi import _containers as containers
from metaparticle_pulumi._containers import ContainerSpec, Deployment, EngineError, NetworkSpec, Plan
from metaparticle_pulumi._program import evaluate
from metaparticle_pulumi._topology import GRPC_PORT, HTTP_PORT

from conftest import post_json, wait_until
from target_support import copy_program
from tls_support import CA, Issued, need_openssl

pytestmark = [pytest.mark.containers, pytest.mark.timeout(600)]

SESSION = uuid.uuid4().hex[:6]
NAMESPACE = "shop"
DOMAIN = "cluster.local"
#: Where the certificates are mounted in each container (as the Kubernetes target mounts its Secret).
TLS_DIR = "/etc/metaparticle/tls"
ROLES = ("api-router", "api-replica")


def kubernetes_names(role: str) -> list[str]:
    """What a role's certificate must name on Kubernetes: its Service's DNS name, which routers dial,
    and the short forms (the role's own name is also what its probe checks)."""
    return [role, f"{role}.{NAMESPACE}", f"{role}.{NAMESPACE}.svc", f"{role}.{NAMESPACE}.svc.{DOMAIN}"]


@pytest.fixture(scope="module")
def spread(engine: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Plan, str]]:
    """The spread example under a session-unique project: the docker target's plan and its image."""
    program = copy_program("spread", tmp_path_factory.mktemp("tls-program"))
    project = f"tls-spread-{SESSION}"
    doc = yaml.safe_load((program / "Pulumi.yaml").read_text())
    doc["name"] = project
    (program / "Pulumi.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    plan = containers.plan(evaluate(program, target="docker"))
    (image,) = plan.images
    built = containers.build(engine, image, project=project)
    try:
        yield plan, built.id
    finally:
        containers.delete(engine, project, images=True, grace=2)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One directory per certificate set, each with tls.crt, tls.key and ca.crt (as a Secret holds)."""
    need_openssl()
    root = tmp_path_factory.mktemp("tls-pki")
    ca = CA(root / "ca")
    every_name = [n for role in ROLES for n in kubernetes_names(role)]
    sets = {
        # One certificate for every role, naming each role as Kubernetes and Docker callers dial it.
        "all names": ca.issue("roles", dns=every_name),
        # The short names only: what the docker target dials and the probe checks, not the Services.
        "short names": ca.issue("short", dns=list(ROLES)),
    }
    out = {}
    for label, issued in sets.items():
        directory = root / label.replace(" ", "-")
        directory.mkdir()
        for name, source in (("tls.crt", issued.cert), ("tls.key", issued.key), ("ca.crt", issued.ca)):
            (directory / name).write_bytes(Path(source).read_bytes())
            (directory / name).chmod(0o444)  # the runtime's user (10001) reads them; throwaway keys
        directory.chmod(0o755)
        out[label] = directory
    return out


def tls_plan(plan: Plan, image: str, certs: Path, *, kubernetes: bool, name: str) -> Plan:
    """The plan's containers with mutual TLS from `certs`, on a network of their own; with
    `kubernetes`, routers dial `dns:///<role>.<ns>.svc.<domain>:50051` and every replica answers to
    the names a Service gives it, else the docker target's `dns:///<role>:50051`."""
    project = f"{plan.project}-{name}"
    network = f"mptls-{SESSION}-{name}"
    labels = {containers.PROJECT_LABEL: project}
    out = Plan(project, networks=[NetworkSpec(network, project, labels)], topologies=list(plan.topologies))
    renamed = {spec.name: f"mptls-{SESSION}-{name}-{spec.replica}" for spec in plan.containers}
    for spec in plan.containers:
        if spec.holder:  # the entry routers' network namespace: joins, publishes, runs nothing
            out.containers.append(
                replace(
                    spec,
                    name=renamed[spec.name],
                    image=image,
                    network=network,
                    aliases=tuple(kubernetes_names(spec.role)) if kubernetes else (spec.role,),
                    labels={**spec.labels, **labels},
                    options={**spec.options, "restart_policy": {"Name": "no"}},
                )
            )
            continue
        env = dict(item.split("=", 1) for item in spec.options["environment"])
        if kubernetes and "MP_UPSTREAMS" in env:
            upstreams = json.loads(env["MP_UPSTREAMS"])
            env["MP_UPSTREAMS"] = json.dumps([
                u.replace(f"dns:///{role}:{GRPC_PORT}", f"dns:///{role}.{NAMESPACE}.svc.{DOMAIN}:{GRPC_PORT}")
                for u in upstreams for role in [u.split("///", 1)[1].split(":", 1)[0]]
            ])
            assert env["MP_UPSTREAMS"] != json.dumps(upstreams)
        env.update(MP_TLS_CERT=f"{TLS_DIR}/tls.crt", MP_TLS_KEY=f"{TLS_DIR}/tls.key", MP_TLS_CA=f"{TLS_DIR}/ca.crt")
        options = dict(spec.options)
        options["environment"] = [f"{k}={v}" for k, v in env.items()]
        options["volumes"] = {str(certs): {"bind": TLS_DIR, "mode": "ro"}}
        options["restart_policy"] = {"Name": "no"}
        network_of = renamed[spec.network_of] if spec.network_of else None
        if network_of is not None:
            options["network_mode"] = f"container:{network_of}"
        out.containers.append(
            replace(
                spec,
                name=renamed[spec.name],
                image=image,
                network=network,
                aliases=() if network_of else tuple(kubernetes_names(spec.role)) if kubernetes else (spec.role,),
                labels={**spec.labels, **labels},
                options=options,
                network_of=network_of,
            )
        )
    return out


def run(engine: Any, plan: Plan, requests: int = 12) -> tuple[list[Any], dict[str, bool]]:
    """Starts `plan`, sends `requests` through its entry; the replies (status, body) and whether
    each container's own probe (TLS-aware, run inside it) passed."""
    deployment = Deployment(engine, plan)
    try:
        deployment.start()
        routers = next(c for c in plan.containers if c.entry).role
        replicas = [c for c in plan.containers if c.role != routers]
        for spec in replicas:
            served = wait_until(lambda: deployment.probe(spec), 90, 0.5)
            assert served, f"{spec.name} does not serve:\n" + "\n".join(deployment.logs(spec, 20))
        entry = next(c for c in plan.containers if c.entry)  # the routers' namespace holder, when they share one
        for spec in [c for c in plan.containers if c.role == routers and not c.holder]:
            wait_until(lambda: deployment.probe(spec), 30, 0.5)  # serves once it found its upstreams, if it can
        url = f"http://{deployment.published(entry, HTTP_PORT)}"
        replies = []
        for i in range(requests):
            reply = post_json(url, {"i": i}, timeout=15)
            replies.append((reply.status, reply.body))
        start = time.monotonic()
        probes = {c.name: deployment.probe(c) for c in plan.containers}
        print(f"\n{plan.project}: {len(probes)} TLS probes in {time.monotonic() - start:.2f}s")
        return replies, probes
    finally:
        deployment.stop(grace=1)
        assert not containers.leftovers(engine, plan.project), "containers or networks left behind"


@pytest.mark.parametrize(
    "certs, kubernetes",
    [("all names", True), ("all names", False), ("short names", False)],
    ids=["kubernetes-names", "docker-names", "docker-short-names-only"],
)
def test_roles_call_each_other_over_mutual_tls_under_the_names_they_dial(engine, spread, pki, certs, kubernetes) -> None:
    plan, image = spread
    name = ("k8s" if kubernetes else "docker") + ("-short" if certs == "short names" else "")
    replies, probes = run(engine, tls_plan(plan, image, pki[certs], kubernetes=kubernetes, name=name))
    assert all(status == 200 for status, _ in replies), replies
    assert [body["echo"] for _, body in replies] == [{"i": i} for i in range(len(replies))]
    assert len({body["replica"] for _, body in replies}) >= 2, "every call went to one replica"
    assert all(probes.values()), probes


def test_a_certificate_without_the_service_names_is_refused(engine, spread, pki) -> None:
    """The short names suffice on the docker target, not on Kubernetes: the router dials each
    Service's DNS name, which that certificate does not carry, so its calls fail the handshake."""
    plan, image = spread
    replies, probes = run(engine, tls_plan(plan, image, pki["short names"], kubernetes=True, name="short"))
    assert all(status != 200 for status, _ in replies), replies
    errors = {body.get("error", "") for _, body in replies}
    # Refused for its names, not otherwise: as gRPC's C core says it (the Python router) or Go's
    # crypto/x509 (the compiled router, which images carry when it is built).
    names = ("hostname verification", "certificate is valid for")
    assert all(any(n in e.lower() for n in names) for e in errors), errors
    assert {status for status, _ in replies} <= {502, 503, 504}, replies
    replicas = {n: ok for n, ok in probes.items() if "replica" in n}
    assert replicas and all(replicas.values()), f"the replicas serve (their probe checks the short name): {probes}"
