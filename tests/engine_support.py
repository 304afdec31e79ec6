"""Helpers for the real-engine tests: the local cluster of `scripts/cluster`, kubectl, the CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from target_support import EXAMPLES, REPO

CLUSTER = REPO / "scripts" / "cluster"
#: Seconds one engine operation may take; Deployments under kwok become Available within seconds.
OPERATION_TIMEOUT = 300
#: Every object of ours carries this label (the renderers' part-of label).
OURS = "app.kubernetes.io/part-of=metaparticle"
#: The kinds a pattern creates in its namespace.
KINDS = "deployments,replicasets,pods,services,networkpolicies,poddisruptionbudgets,horizontalpodautoscalers,secrets"


def required() -> bool:
    return os.environ.get("MP_REQUIRE_CLUSTER") == "1"


def cluster_environment(backend: Path) -> dict[str, str]:
    """The environment `scripts/cluster env` prints, applied to this process's; skips (or fails,
    under MP_REQUIRE_CLUSTER=1) when the cluster is not up.

    Pulumi's state goes to `backend`, a directory of this test session's own: the cluster's shared
    backend keeps whatever an earlier run left, such as the lock of a `pulumi up` killed midway,
    which would fail the next run's operation on the same project and stack."""
    env = dict(os.environ)
    try:
        out = subprocess.run(["bash", str(CLUSTER), "status"], capture_output=True, text=True, timeout=30)
        running = out.returncode == 0 and "stopped" not in out.stdout
        exports = subprocess.run(["bash", str(CLUSTER), "env"], capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        running, exports = False, ""
        reason = str(exc)
    else:
        reason = "scripts/cluster status: " + " ".join(out.stdout.split())
    if not running:
        message = f"the local cluster is not up ({reason}); run `scripts/cluster up`"
        if required():
            pytest.fail(f"MP_REQUIRE_CLUSTER=1, but {message}")
        pytest.skip(message)
    for line in exports.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value.replace("$PATH", env.get("PATH", ""))
    # The CLI of this checkout's virtualenv, whatever python runs the tests.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["PULUMI_BACKEND_URL"] = backend.resolve().as_uri()
    return env


@dataclass
class Cluster:
    env: dict[str, str]

    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> str:
        done = subprocess.run(
            ["kubectl", *args], env=self.env, capture_output=True, text=True, timeout=60, input=input
        )
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def objects(self, namespace: str, kinds: str = KINDS, selector: str | None = OURS) -> list[dict[str, Any]]:
        args = ["get", kinds, "-n", namespace, "-o", "json"]
        if selector:
            args += ["-l", selector]
        return json.loads(self.kubectl(*args))["items"]

    def namespace(self, prefix: str) -> str:
        """A fresh namespace that enforces the `restricted` Pod Security Standard."""
        name = f"{prefix}-{uuid.uuid4().hex[:6]}"
        manifest = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": name,
                "labels": {
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/enforce-version": "latest",
                },
            },
        }
        self.kubectl("apply", "-f", "-", input=json.dumps(manifest))
        return name

    def delete_namespace(self, name: str) -> None:
        self.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)

    def metaparticle(self, *args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "metaparticle_pulumi", *args],
            env=self.env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=OPERATION_TIMEOUT,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"metaparticle {' '.join(args)} exited {done.returncode}:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
        return done

    def engine(self, operation: str, project: Path, stack: str, *extra: str, tmp: Path) -> dict[str, Any]:
        """One engine operation through the `metaparticle` CLI; its JSON result."""
        out = tmp / f"{operation}-{uuid.uuid4().hex[:6]}.json"
        args = ["destroy" if operation == "destroy" else "up", str(project), "--stack", stack, "--json", str(out), *extra]
        if operation == "preview":
            args.append("--preview")
        self.metaparticle(*args)
        return json.loads(out.read_text())

    def pulumi(self, *args: str, cwd: Path) -> str:
        done = subprocess.run(["pulumi", *args], env=self.env, cwd=cwd, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise AssertionError(f"pulumi {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout


def copy_project(name: str, destination: Path) -> Path:
    """A copy of an example, or of the repository's root project (Pulumi.yaml with `main:`)."""
    if name == "root":
        target = destination / "root"
        target.mkdir()
        shutil.copy(REPO / "Pulumi.yaml", target / "Pulumi.yaml")
        shutil.copytree(
            EXAMPLES / "scatter_gather",
            target / "examples" / "scatter_gather",
            ignore=shutil.ignore_patterns("__pycache__", ".metaparticle"),
        )
        return target
    target = destination / name
    shutil.copytree(EXAMPLES / name, target, ignore=shutil.ignore_patterns("__pycache__", ".metaparticle"))
    return target
