"""The runtime's probe command (`python -m metaparticle_runtime.probe`, a container's health check
and the Kubernetes exec probe) against a health server with mutual TLS: run as the probe runs in a
role's container, with only the role's environment, it tells SERVING from NOT_SERVING and refuses
a server it cannot verify. Certificates are made here with the openssl CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent import futures
from pathlib import Path
from typing import Iterator

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from metaparticle_runtime.tls import server_credentials

from target_support import REPO
from tls_support import CA, Issued, need_openssl

#: The role whose certificate the server presents: it names the role's Service, not 127.0.0.1.
ROLE = "api-replica"
SERVICE_NAME = f"{ROLE}.shop.svc.cluster.local"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Issued]:
    need_openssl()
    root = tmp_path_factory.mktemp("pki")
    ca, other = CA(root / "ca"), CA(root / "other", "other-ca")
    return {
        "role": ca.issue(ROLE, dns=[ROLE, SERVICE_NAME]),
        "stranger": other.issue("stranger", dns=[ROLE]),  # the right name, the wrong CA
    }


@pytest.fixture(scope="module")
def server(pki: dict[str, Issued]) -> Iterator[tuple[int, health.HealthServicer]]:
    """A gRPC health service on 127.0.0.1 that asks every client for a certificate of the CA."""
    role = pki["role"]
    srv = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, srv)
    port = srv.add_secure_port("127.0.0.1:0", server_credentials(role.cert, role.key, role.ca))
    srv.start()
    try:
        yield port, servicer
    finally:
        srv.stop(grace=None)


def probe(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The probe command as an exec probe runs it: the role's environment, nothing else."""
    base = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": f"{REPO / 'runtime'}"}
    return subprocess.run(
        [sys.executable, "-m", "metaparticle_runtime.probe", "--timeout", "3", *args],
        env={**base, **env}, capture_output=True, text=True, timeout=60, cwd=Path("/"),
    )


def role_env(port: int, issued: Issued, **extra: str) -> dict[str, str]:
    env = {"MP_GRPC_PORT": str(port), "MP_ROLE_NAME": ROLE, "MP_TLS_CERT": issued.cert, "MP_TLS_KEY": issued.key, "MP_TLS_CA": issued.ca}
    env.update(extra)
    return env


def test_the_probe_reads_the_roles_tls_settings_and_tells_serving_from_not_serving(server, pki) -> None:
    port, servicer = server
    env = role_env(port, pki["role"])
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    ok = probe(env)
    assert (ok.returncode, ok.stdout.strip()) == (0, "SERVING"), ok.stderr
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)  # a draining replica
    try:
        draining = probe(env)
    finally:
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    assert (draining.returncode, draining.stdout.strip()) == (1, "NOT_SERVING"), draining.stderr
    # The same with flags instead of the environment (a probe spelled out in a manifest).
    role = pki["role"]
    flags = probe({}, "--port", str(port), "--tls-cert", role.cert, "--tls-key", role.key, "--tls-ca", role.ca, "--server-name", SERVICE_NAME)
    assert (flags.returncode, flags.stdout.strip()) == (0, "SERVING"), flags.stderr


def test_the_probe_refuses_a_server_it_cannot_verify_and_the_server_refuses_strangers(server, pki) -> None:
    port, servicer = server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    role, stranger = pki["role"], pki["stranger"]
    failures = {
        # The probe trusts another CA than the one that signed the server's certificate.
        "wrong CA": probe(role_env(port, role, MP_TLS_CA=stranger.ca)),
        # The server's certificate names the role, not the address dialled (127.0.0.1).
        "no server name": probe({k: v for k, v in role_env(port, role).items() if k != "MP_ROLE_NAME"}),
        "another name": probe(role_env(port, role), "--server-name", "api-router"),
        # The server asks for a certificate of its CA.
        "client of another CA": probe(role_env(port, Issued(stranger.cert, stranger.key, role.ca))),
        "plaintext": probe(role_env(port, role), "--plaintext"),
    }
    for case, result in failures.items():
        assert result.returncode == 1, f"{case}: {result.returncode} {result.stdout} {result.stderr}"
        assert "not serving: UNAVAILABLE" in result.stderr, f"{case}: {result.stderr}"


def test_a_probe_with_half_its_tls_settings_says_so(pki) -> None:
    role = pki["role"]
    result = probe({"MP_TLS_CERT": role.cert, "MP_TLS_KEY": role.key})
    assert result.returncode == 2
    assert "TLS needs --tls-cert, --tls-key and --tls-ca together" in result.stderr
    missing = probe({"MP_TLS_CERT": "/nonexistent.crt", "MP_TLS_KEY": role.key, "MP_TLS_CA": role.ca})
    assert missing.returncode == 2 and "probe misconfigured" in missing.stderr and "/nonexistent.crt" in missing.stderr


def test_the_ops_port_probe_follows_the_replicas_healthz() -> None:
    """--ops-port checks GET /healthz of the operations port: 0 on 200, 1 on 503 or nothing listening."""
    import http.server
    import threading

    status = {"code": 200}

    class Healthz(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            self.send_response(status["code"] if self.path == "/healthz" else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Healthz)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    port = str(httpd.server_address[1])
    try:
        assert probe({}, "--ops-port", port).returncode == 0
        status["code"] = 503
        assert probe({}, "--ops-port", port).returncode == 1
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert probe({}, "--ops-port", port, "--timeout", "0.5").returncode == 1
