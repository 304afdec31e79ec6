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

from . import CALL_METHOD, SERVICE_NAME, tracing
from .errors import RoleError
from .tls import channel_credentials


def service_config(retries: int, burst: int = 256) -> dict[str, Any]:
    """Round robin per call over the replicas that report SERVING; UNAVAILABLE retried elsewhere.

    gRPC watches every replica's health (`healthCheckConfig`), so a replica that turns NOT_SERVING
    (it was told to stop, and drains) gets no new calls. A call that failed UNAVAILABLE (its replica
    died or refused it) is sent to another replica, up to `retries` more times; such a call may have
    started on the replica that died, which is why `retries` > 0 requires idempotent functions (a
    pattern declared `idempotent=False` runs with retries 0). Calls that provably never reached a
    replica are retried transparently by gRPC in any case. Retries are throttled: a burst of up to
    `burst` failed calls (every call in flight on a replica that died) is retried, after that
    only while fewer than about 1 call in 10 fails, so a dead group is not hammered with retries.
    """
    config: dict[str, Any] = {
        "loadBalancingConfig": [{"round_robin": {}}],
        "healthCheckConfig": {"serviceName": ""},
    }
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
        # Retries stop while tokens <= maxTokens / 2; each failure costs 1, each success gives 0.1.
        config["retryThrottling"] = {"maxTokens": min(1000, 2 * max(burst, 10) + 20), "tokenRatio": 0.1}
    return config


def channel_options(retries: int, max_message_bytes: int, burst: int = 256, max_response_bytes: int | None = None) -> list[tuple[str, Any]]:
    """Channel options of a router's or root's calls: requests up to `max_message_bytes`, replies up
    to `max_response_bytes` (each plus 1 KiB for the Payload envelope)."""
    return [
        ("grpc.service_config", json.dumps(service_config(retries, burst))),
        # On even with retries 0: gRPC's transparent retries only resend calls no replica received.
        ("grpc.enable_retries", 1),
        ("grpc.max_send_message_length", max_message_bytes + 1024),
        ("grpc.max_receive_message_length", (max_response_bytes or max_message_bytes) + 1024),
        # A restarted replica must take traffic again within seconds, not after gRPC's 2-minute backoff.
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1000),
        ("grpc.dns_min_time_between_resolutions_ms", 1000),
        ("grpc.keepalive_time_ms", 20000),
    ]


def tls_server_name(target: str) -> str | None:
    """The name a peer's certificate must carry, for targets that list addresses.

    gRPC would verify `ipv4:127.0.0.1:5001,127.0.0.1:5002` as one host name; every replica of a
    local group listens on the same host, so its certificate needs that host (an IP SAN) instead.
    """
    for scheme in ("ipv4:", "ipv6:"):
        if target.startswith(scheme):
            first = target[len(scheme) :].split(",")[0]
            host = first.rsplit(":", 1)[0] if first.count(":") == 1 or first.startswith("[") else first
            return host.strip("[]") or None
    return None


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
        max_response_bytes: int | None = None,
        burst: int = 256,
        details: dict[str, Any] | None = None,
        tls: tuple[str | None, str | None, str | None] = (None, None, None),
    ) -> None:
        self.target = target
        self.label = label
        self.role_name = role_name
        self.details = dict(details or {})
        self.details.setdefault("role", role_name)
        self.max_response_bytes = max_response_bytes
        options = channel_options(retries, max_message_bytes, burst, max_response_bytes)
        creds = channel_credentials(*tls)
        name = tls_server_name(target) if creds is not None else None
        if name is not None:
            options.append(("grpc.ssl_target_name_override", name))
        if creds is None:
            self.channel = grpc.aio.insecure_channel(target, options=options)
        else:
            self.channel = grpc.aio.secure_channel(target, creds, options=options)
        self._call = self.channel.unary_unary(CALL_METHOD)
        #: Where calls are counted by outcome (the role's Metrics, set by the server).
        self.metrics: Any = None
        self._health = health_pb2_grpc.HealthStub(self.channel)
        self.serving = False

    async def call(self, message: bytes, deadline: float, metadata: tuple[tuple[str, str], ...] | None = None) -> bytes:
        """Forwards the raw request bytes and answers the raw reply bytes."""
        timeout = deadline - time.monotonic()
        if timeout <= 0:
            raise RoleError(grpc.StatusCode.DEADLINE_EXCEEDED, f"{self.label}: deadline exceeded", **self.details)
        try:
            reply = await self._call(message, timeout=timeout, metadata=tracing.with_trace(metadata))
        except grpc.aio.AioRpcError as err:
            if self.metrics is not None:
                self.metrics.upstream_call(self.role_name, err.code().name)
            if err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and self.max_response_bytes and "larger than max" in (err.details() or ""):
                # gRPC's own refusal of a reply over this channel's limit (a hop configured with a
                # larger max_response_bytes than this one): name the limit and the group.
                raise RoleError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"{self.label}: its result is larger than max_response_bytes ({self.max_response_bytes})",
                    response_too_large=True,
                    limit=self.max_response_bytes,
                    **self.details,
                ) from None
            raise RoleError.from_rpc_error(err, context=self.label, **self.details) from None
        if self.metrics is not None:
            self.metrics.upstream_call(self.role_name, "OK")
        return reply

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
