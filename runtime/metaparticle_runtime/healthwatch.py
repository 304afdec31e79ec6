"""The gRPC health service, with a `Watch` that routers can rely on while a replica drains.

Routers balance only over replicas whose health `Watch` stream says SERVING (gRPC client-side health
checking), so a replica told to stop turns NOT_SERVING and gets no new calls while it drains.
grpc's asyncio servicer forgets every other watcher of a service when one watch ends (a router
reconnecting is enough), after which NOT_SERVING reaches no one; and its watches never end, so a
stopping server either waits its whole grace period for them or has them cancelled under it.
This one, written on the generated base class (no private state of grpc's), notifies every
watcher of every change and ends all watches on `close_watches()`.
"""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


class HealthServicer(health_pb2_grpc.HealthServicer):
    """grpc.health.v1 on the public generated base class: Check, and a Watch that notifies every
    watcher of every change and ends on `close_watches()`."""

    def __init__(self) -> None:
        self._statuses: dict[str, "health_pb2.HealthCheckResponse.ServingStatus"] = {}
        self._changed = asyncio.Condition()
        self._closing = False
        self._shutting_down = False

    async def set(self, service: str, status: "health_pb2.HealthCheckResponse.ServingStatus") -> None:
        """Sets the status of `service` ("" for the whole server); ignored once shutting down."""
        async with self._changed:
            if self._shutting_down:
                return
            self._statuses[service] = status
            self._changed.notify_all()

    async def enter_graceful_shutdown(self) -> None:
        """Every service NOT_SERVING from now on, whatever is set later."""
        async with self._changed:
            self._shutting_down = True
            for service in self._statuses:
                self._statuses[service] = health_pb2.HealthCheckResponse.NOT_SERVING
            self._changed.notify_all()

    def _status(self, service: str) -> "health_pb2.HealthCheckResponse.ServingStatus":
        return self._statuses.get(service, SERVICE_UNKNOWN)

    def serving(self, service: str = "") -> bool:
        """Whether `service` (default: the whole server) is SERVING now."""
        return self._status(service) == health_pb2.HealthCheckResponse.SERVING

    async def Check(self, request: health_pb2.HealthCheckRequest, context) -> health_pb2.HealthCheckResponse:  # noqa: N802 - gRPC's name
        status = self._statuses.get(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(self, request: health_pb2.HealthCheckRequest, context) -> None:  # noqa: N802 - gRPC's name
        last = None
        while True:
            status = self._status(request.service)
            if status != last:
                await context.write(health_pb2.HealthCheckResponse(status=status))
                last = status
            async with self._changed:
                if self._closing:
                    return
                if self._status(request.service) == last:
                    await self._changed.wait()

    async def close_watches(self) -> None:
        """Ends every Watch stream (after the last status was sent): for a graceful stop."""
        async with self._changed:
            self._closing = True
            self._changed.notify_all()
