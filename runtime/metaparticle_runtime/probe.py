"""`python -m metaparticle_runtime.probe`: exit 0 when the local runtime answers SERVING to a gRPC
health check, 1 otherwise. The health-check command of containers (Docker's HEALTHCHECK) and a
stand-in for Kubernetes' native gRPC probe where that is not available."""

from __future__ import annotations

import argparse
import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check(
    address: str,
    *,
    service: str = "",
    timeout: float = 1.0,
    tls: tuple[str | None, str | None, str | None] = (None, None, None),
) -> int:
    """The health status `address` reports for `service` (raises grpc.RpcError when it cannot answer).

    With `tls` (cert, key, ca files) the check presents that certificate, as peers under mutual TLS do.
    """
    from .tls import channel_credentials

    creds = channel_credentials(*tls)
    channel = grpc.secure_channel(address, creds) if creds is not None else grpc.insecure_channel(address)
    with channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    return reply.status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m metaparticle_runtime.probe", description=__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("MP_GRPC_PORT", "50051")))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--service", default="")
    parser.add_argument("--timeout", type=float, default=1.0)
    args = parser.parse_args(argv)
    try:
        status = check(f"{args.host}:{args.port}", service=args.service, timeout=args.timeout)
    except grpc.RpcError as err:
        print(f"not serving: {err.code().name}: {err.details()}", file=sys.stderr)
        return 1
    print(health_pb2.HealthCheckResponse.ServingStatus.Name(status))
    return 0 if status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main())
