"""A group of replicas behind one gRPC target, balanced per call, with bounded retries.

The target names every replica: `ipv4:127.0.0.1:5001,127.0.0.1:5002` for local processes,
`dns:///name:50051` for a headless Kubernetes Service or a Docker network alias. gRPC's
`round_robin` policy spreads calls (not connections) over the replicas, and its retry policy
sends a call that found a replica unavailable to another one, within a retry budget.
"""

from __future__ import annotations

import json
import time
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from . import CALL_METHOD, SERVICE_NAME
from .errors import RoleError
from .tls import channel_credentials


def service_config(retries: int) -> dict[str, Any]:
    """Round robin per call; UNAVAILABLE retried on another replica, throttled to a 10% budget."""
    config: dict[str, Any] = {"loadBalancingConfig": [{"round_robin": {}}]}
    if retries > 0:
        config["methodConfig"] = [
            {
                "name": [{"service": SERVICE_NAME}],
                "retryPolicy": {
                    "maxAttempts": min(retries + 1, 5),
                    "initialBackoff": "0.01s",
                    "maxBackoff": "0.2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
        config["retryThrottling"] = {"maxTokens": 20, "tokenRatio": 0.1}
    return config


def channel_options(retries: int, max_message_bytes: int) -> list[tuple[str, Any]]:
    return [
        ("grpc.service_config", json.dumps(service_config(retries))),
        ("grpc.enable_retries", 1 if retries > 0 else 0),
        ("grpc.max_send_message_length", max_message_bytes + 1024),
        ("grpc.max_receive_message_length", max_message_bytes + 1024),
        # A restarted replica must take traffic again within seconds, not after gRPC's 2-minute backoff.
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1000),
        ("grpc.dns_min_time_between_resolutions_ms", 1000),
        ("grpc.keepalive_time_ms", 20000),
    ]


class Upstream:
    """One downstream group (a replica set, a shard, a leaf) that a router calls."""

    def __init__(
        self,
        target: str,
        *,
        label: str,
        role_name: str,
        retries: int,
        max_message_bytes: int,
        details: dict[str, Any] | None = None,
        tls: tuple[str | None, str | None, str | None] = (None, None, None),
    ) -> None:
        self.target = target
        self.label = label
        self.role_name = role_name
        self.details = dict(details or {})
        self.details.setdefault("role", role_name)
        options = channel_options(retries, max_message_bytes)
        creds = channel_credentials(*tls)
        if creds is None:
            self.channel = grpc.aio.insecure_channel(target, options=options)
        else:
            self.channel = grpc.aio.secure_channel(target, creds, options=options)
        self._call = self.channel.unary_unary(CALL_METHOD, _registered_method=True)
        self._health = health_pb2_grpc.HealthStub(self.channel)
        self.serving = False

    async def call(self, message: bytes, deadline: float) -> bytes:
        """Forwards the raw request bytes and answers the raw reply bytes."""
        timeout = deadline - time.monotonic()
        if timeout <= 0:
            raise RoleError(grpc.StatusCode.DEADLINE_EXCEEDED, f"{self.label}: deadline exceeded", **self.details)
        try:
            return await self._call(message, timeout=timeout)
        except grpc.aio.AioRpcError as err:
            raise RoleError.from_rpc_error(err, context=self.label, **self.details) from None

    async def check(self, timeout: float = 1.0) -> bool:
        """Whether a replica of this group answers SERVING to a health check."""
        try:
            reply = await self._health.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.aio.AioRpcError:
            self.serving = False
        else:
            self.serving = reply.status == health_pb2.HealthCheckResponse.SERVING
        return self.serving

    async def close(self) -> None:
        await self.channel.close()
