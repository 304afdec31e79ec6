"""`python -m metaparticle_runtime.probe`: exit 0 when the local runtime answers SERVING to a gRPC
health check, 1 otherwise (2: the probe itself is misconfigured). The health-check command of
containers (Docker's HEALTHCHECK) and Kubernetes' exec probe, which, unlike the kubelet's own gRPC
probe, speaks mutual TLS: run inside the role's container it reads the role's own settings (port,
certificate, key, CA) from its environment, and checks the server's certificate for the role's own
name (MP_ROLE_NAME), which its certificate carries, though it connects to 127.0.0.1.

`--ops-port N` asks the operations port's GET /healthz instead (plain HTTP; 200 while the replica
serves): the one check that reaches this replica alone where several replicas share one network
namespace and their gRPC port (SO_REUSEPORT: the Docker target's entry routers)."""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .config import ENV


def check(
    address: str,
    *,
    service: str = "",
    timeout: float = 1.0,
    tls: tuple[str | None, str | None, str | None] = (None, None, None),
    server_name: str | None = None,
) -> int:
    """The health status `address` reports for `service` (raises grpc.RpcError when it cannot answer).

    With `tls` (cert, key, ca files) the check presents that certificate, as peers under mutual TLS
    do; `server_name` is the name the server's certificate must carry (default: the host dialled).
    """
    from .tls import channel_credentials

    creds = channel_credentials(*tls)
    if creds is None:
        channel = grpc.insecure_channel(address)
    else:
        options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
        channel = grpc.secure_channel(address, creds, options=options)
    with channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    return reply.status


def check_ops(port: int, host: str = "127.0.0.1", timeout: float = 1.0) -> bool:
    """Whether the operations port at `host:port` answers GET /healthz with 200 (the replica serves)."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=timeout) as reply:
            return reply.status == 200
    except (OSError, urllib.error.URLError):  # 503 (starting, draining) arrives as an HTTPError
        return False


def _parser() -> argparse.ArgumentParser:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="python -m metaparticle_runtime.probe", description=__doc__)
    parser.add_argument("--port", type=int, default=int(env(ENV["grpc_port"]) or "50051"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--service", default="")
    parser.add_argument("--timeout", type=float, default=1.0, help="seconds (default 1)")
    parser.add_argument("--tls-cert", default=env(ENV["tls_cert"]) or None, help=f"client certificate (default ${ENV['tls_cert']})")
    parser.add_argument("--tls-key", default=env(ENV["tls_key"]) or None, help=f"its key (default ${ENV['tls_key']})")
    parser.add_argument("--tls-ca", default=env(ENV["tls_ca"]) or None, help=f"CA the server's certificate is checked against (default ${ENV['tls_ca']})")
    parser.add_argument(
        "--server-name",
        default=env(ENV["role_name"]) or None,
        help=f"name the server's certificate must carry (default ${ENV['role_name']}, the role's own name)",
    )
    parser.add_argument("--plaintext", action="store_true", help="no TLS, even when the environment configures it")
    parser.add_argument("--ops-port", type=int, default=None, help="check GET /healthz on this operations port instead of gRPC health")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.ops_port is not None:
        serving = check_ops(args.ops_port, args.host, args.timeout)
        print("SERVING" if serving else "not serving: GET /healthz did not answer 200", file=sys.stdout if serving else sys.stderr)
        return 0 if serving else 1
    tls: tuple[str | None, str | None, str | None] = (None, None, None)
    if not args.plaintext and (args.tls_cert or args.tls_key or args.tls_ca):
        if bool(args.tls_cert) != bool(args.tls_key) or not args.tls_ca:
            parser.error("TLS needs --tls-cert, --tls-key and --tls-ca together (roles speak mutual TLS only)")
        tls = (args.tls_cert, args.tls_key, args.tls_ca)
    try:
        status = check(f"{args.host}:{args.port}", service=args.service, timeout=args.timeout, tls=tls, server_name=args.server_name)
    except OSError as err:  # a certificate file that cannot be read
        print(f"probe misconfigured: {err}", file=sys.stderr)
        return 2
    except grpc.RpcError as err:
        print(f"not serving: {err.code().name}: {err.details()}", file=sys.stderr)
        return 1
    print(health_pb2.HealthCheckResponse.ServingStatus.Name(status))
    return 0 if status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main())
