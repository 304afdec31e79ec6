"""`python -m metaparticle_runtime.probe`: exit 0 when the local runtime answers SERVING to a gRPC
health check, 1 otherwise. The health-check command of containers (Docker's HEALTHCHECK) and a
stand-in for Kubernetes' native gRPC probe where that is not available."""

from __future__ import annotations

import argparse
import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m metaparticle_runtime.probe", description=__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("MP_GRPC_PORT", "50051")))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--service", default="")
    parser.add_argument("--timeout", type=float, default=1.0)
    args = parser.parse_args(argv)
    try:
        with grpc.insecure_channel(f"{args.host}:{args.port}") as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout
            )
    except grpc.RpcError as err:
        print(f"not serving: {err.code().name}: {err.details()}", file=sys.stderr)
        return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(status)
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main())
