"""The runtime server: one gRPC service for every role, health, reflection, the HTTP entry, shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import time
from typing import Any, Mapping, Optional

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from . import CALL_ID_METADATA_KEY, HEDGE_METADATA_KEY, SERVICE_NAME
from . import http_entry, ops
from .config import RuntimeConfig
from .errors import RoleError
from .healthwatch import HealthServicer
from .metrics import Metrics
from . import tracing
from .roles import Role, build_role
from .tls import server_credentials
from .workers import Workers

log = logging.getLogger("metaparticle.server")

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
#: Exit code of a replica that stopped because calls past their deadline held every thread.
EXIT_WEDGED = 3
#: Bounds of how much earlier than a gRPC caller's deadline a call gives up (a twentieth of the
#: time left), so that its DEADLINE_EXCEEDED document reaches the caller before the caller's own
#: timer fires; the Go router uses the same.
MIN_DEADLINE_MARGIN = 0.005
MAX_DEADLINE_MARGIN = 0.05


def answer_within(remaining: float) -> float:
    """The time a call may take when its caller's deadline is `remaining` seconds away."""
    return remaining - min(max(remaining / 20, MIN_DEADLINE_MARGIN), MAX_DEADLINE_MARGIN)


class Runtime:
    """Serves one role: admission (in-flight bound), deadlines and error mapping around `Role.call`."""

    def __init__(self, cfg: RuntimeConfig) -> None:
        self.cfg = cfg
        self.workers = Workers(cfg.worker_threads, on_change=self._capacity_changed)
        self.role: Role = build_role(cfg, self.workers)
        self.in_flight = 0
        self.metrics = Metrics(cfg.pattern, cfg.role_name)
        self.metrics.track_in_flight(lambda: self.in_flight)
        for upstream in self.role.upstreams:
            upstream.metrics = self.metrics
        if getattr(self.role, "hedger", None) is not None:
            self.role.hedger.metrics = self.metrics  # type: ignore[attr-defined]
            if self.role.hedging():  # type: ignore[attr-defined]
                self.metrics.track_hedge_delay(self.role.hedger.delay)  # type: ignore[attr-defined]
        self.tracing = tracing.configure(cfg)
        if self.tracing is None:
            self.dispatch = self._dispatch  # type: ignore[method-assign] # no span: no wrapper either
        self._metrics_server: Any = None
        self.health = HealthServicer()
        self.ready = asyncio.Event()
        self.stopping = False
        #: Set when lost threads have left no capacity for WEDGED_GRACE seconds: stop and exit.
        self.wedged = asyncio.Event()
        self._wedge_timer: asyncio.TimerHandle | None = None
        #: Ids of the calls running here that a root may hedge (see `hedging`).
        self._call_ids: set[str] = set()
        self._server: grpc.aio.Server | None = None
        self._http: Any = None
        self._http_sock: socket.socket | None = None
        self._watch: asyncio.Task[None] | None = None

    async def dispatch(self, message: bytes, deadline: float, carrier: Optional[Mapping[str, str]] = None) -> bytes:
        """Runs one request through the role (in a span of its own when tracing is on, parented by
        the caller's `traceparent` in `carrier`)."""
        if self.tracing is None:
            return await self._dispatch(message, deadline)
        with self.tracing.span(carrier) as span:
            try:
                reply = await self._dispatch(message, deadline)
            except RoleError as err:
                self.tracing.finish(span, err.code, err.message)
                raise
            self.tracing.finish(span, grpc.StatusCode.OK)
            return reply

    async def _dispatch(self, message: bytes, deadline: float, carrier: Optional[Mapping[str, str]] = None) -> bytes:
        """Runs one request through the role, refusing it fast when this replica is saturated: at
        `max_in_flight`, or (roles that run user code on threads) with no thread free for it.
        (`carrier` is dispatch's, unused: with tracing off this is `dispatch` itself.)"""
        limit = self.cfg.max_in_flight
        if self.role.uses_threads and self.workers.capacity < limit:
            limit = self.workers.capacity
        if self.in_flight >= limit:
            self.metrics.refused()
            self.metrics.answered("RESOURCE_EXHAUSTED", 0.0)
            lost = self.workers.lost
            why = (
                f"; {lost} of its {self.workers.threads} threads still run calls their callers gave up on"
                if lost and self.role.uses_threads
                else ""
            )
            raise RoleError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{self.cfg.role_name} is at its limit of {limit} requests in flight{why}; retry later",
                role=self.cfg.role_name,
                replica=self.cfg.replica,
            )
        self.in_flight += 1
        started = time.monotonic()
        code = "OK"
        try:
            return await self.role.call(message, deadline)
        except RoleError as err:
            code = err.code.name
            raise
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        except Exception as exc:  # noqa: BLE001 - a bug must still answer a JSON error, not crash
            code = "INTERNAL"
            log.exception("%s failed: %s: %s", self.cfg.role_name, type(exc).__name__, exc)
            raise RoleError(
                grpc.StatusCode.INTERNAL,
                f"{self.cfg.role_name} failed: {type(exc).__name__}",
                role=self.cfg.role_name,
                replica=self.cfg.replica,
            ) from None
        finally:
            self.in_flight -= 1
            self.metrics.answered(code, time.monotonic() - started)

    def _capacity_changed(self) -> None:
        """Lost threads that leave no capacity turn the replica NOT_SERVING (routers stop sending,
        probes fail); if no thread comes back within the grace period, the replica exits so that its
        supervisor (local, Docker, Kubernetes) replaces it."""
        if not self.role.uses_threads or self.stopping or not self.ready.is_set():
            return
        status = SERVING if self.workers.capacity > 0 else NOT_SERVING
        asyncio.ensure_future(self._set_status(status))
        if status == NOT_SERVING and self._wedge_timer is None:
            log.error(
                "every thread runs a call its caller gave up on: not serving",
                extra={"fields": {"lost": self.workers.lost, "grace_s": self.wedged_grace}},
            )
            self._wedge_timer = asyncio.get_running_loop().call_later(self.wedged_grace, self.wedged.set)
        elif status == SERVING and self._wedge_timer is not None:
            self._wedge_timer.cancel()
            self._wedge_timer = None
            log.info("a thread is free again: serving", extra={"fields": {"lost": self.workers.lost}})

    @property
    def wedged_grace(self) -> float:
        """How long a replica with no free thread waits for one before it exits to be replaced."""
        return max(5.0, self.cfg.timeout)

    async def _set_status(self, status: "health_pb2.HealthCheckResponse.ServingStatus") -> None:
        await self.health.set("", status)
        await self.health.set(SERVICE_NAME, status)

    async def _grpc_call(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        remaining = context.time_remaining()
        timeout = self.cfg.timeout if remaining is None else min(answer_within(remaining), self.cfg.timeout)
        call_id = None
        try:
            metadata = tuple(context.invocation_metadata() or ())  # read once per call
            call_id = self._claim_call_id(metadata)
            carrier = tracing.metadata_carrier(metadata) if self.tracing else None
            return await self.dispatch(request, time.monotonic() + timeout, carrier)
        except RoleError as err:
            await context.abort(err.code, err.message, trailing_metadata=err.metadata())
            raise AssertionError("unreachable")  # abort raises
        finally:
            if call_id is not None:
                self._call_ids.discard(call_id)

    def _claim_call_id(self, metadata: tuple[tuple[str, Any], ...]) -> str | None:
        """Records a hedgeable call's id; refuses (before running anything) a hedge of a call that
        runs here already, so that the root sends it to another replica; counts a call received as
        a retry (grpc-previous-rpc-attempts), in the same one pass over the metadata."""
        call_id, hedge, retry = None, False, False
        for key, value in metadata:
            if key == CALL_ID_METADATA_KEY:
                call_id = value
            elif key == HEDGE_METADATA_KEY:
                hedge = True
            elif key == "grpc-previous-rpc-attempts":
                retry = True
        if call_id is None:
            if retry:
                self.metrics.retried()
            return None
        if hedge and call_id in self._call_ids:
            raise RoleError(
                grpc.StatusCode.ABORTED,
                f"{self.cfg.role_name}: the hedged call already runs on this replica",
                hedge="same-replica",
                replica=self.cfg.replica,
            )
        if retry:
            self.metrics.retried()
        if call_id in self._call_ids:
            return None  # the same id twice: keep the first claim
        self._call_ids.add(call_id)
        return call_id

    async def topology_health(self) -> tuple[bool, dict[str, Any]]:
        """Whether this role and everything behind it serves (for /healthz)."""
        upstreams = self.role.upstreams
        if upstreams:
            await asyncio.gather(*(up.check(timeout=1.0) for up in upstreams))
        down = [up.role_name for up in upstreams if not up.serving]
        serving = self.ready.is_set() and not self.stopping and not down
        detail: dict[str, Any] = {"role": self.cfg.role_name}
        if down:
            detail["down"] = down
        return serving, detail

    async def _await_upstreams(self) -> None:
        """A router turns SERVING once every group behind it has a serving replica."""
        while not self.stopping:
            results = await asyncio.gather(*(up.check(timeout=1.0) for up in self.role.upstreams))
            if all(results):
                await self._set_serving()
                log.info("serving: every upstream answers")
                return
            await asyncio.sleep(0.2)

    async def _function_serving(self, serving: bool) -> None:
        """Follows the health of the user's server (a role whose function is one)."""
        if self.stopping:
            return
        if serving:
            await self._set_serving()
        else:
            self.ready.clear()
            await self._set_status(NOT_SERVING)

    async def _set_serving(self) -> None:
        await self.health.set("", SERVING)
        await self.health.set(SERVICE_NAME, SERVING)
        self.ready.set()

    async def start(self) -> None:
        cfg = self.cfg
        opts = [
            ("grpc.so_reuseport", 1 if cfg.reuse_port else 0),
            # Clients reconnect (and re-resolve DNS) now and then, so replicas added by a scale-up
            # behind a headless Service start taking traffic.
            ("grpc.max_connection_age_ms", 30_000),
            ("grpc.max_connection_age_grace_ms", int(cfg.timeout * 1000) + 1000),
            ("grpc.max_receive_message_length", cfg.max_request_bytes + 1024),
            # Results are checked against max_response_bytes before they are sent (an error naming it).
            ("grpc.max_send_message_length", cfg.max_response_bytes + 1024),
        ]
        server = grpc.aio.server(options=opts, maximum_concurrent_rpcs=None)
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    SERVICE_NAME, {"Call": grpc.unary_unary_rpc_method_handler(self._grpc_call)}
                ),
            )
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        address = f"{cfg.bind_host}:{cfg.grpc_port}"
        creds = server_credentials(cfg.tls_cert, cfg.tls_key, cfg.tls_ca)
        bound = server.add_secure_port(address, creds) if creds else server.add_insecure_port(address)
        if not bound:
            raise OSError(f"cannot listen on {address}")
        await self.health.set("", NOT_SERVING)
        await self.health.set(SERVICE_NAME, NOT_SERVING)
        await server.start()
        self._server = server
        if cfg.http_port is not None:
            app = http_entry.make_app(
                self.dispatch,
                self.topology_health,
                timeout=cfg.timeout,
                max_request_bytes=cfg.max_request_bytes,
                metrics=self.metrics,
                stopping=lambda: self.stopping,
            )
            sock = socket.socket(fileno=cfg.http_fd) if cfg.http_fd is not None else None
            self._http_sock = sock
            self._http = await http_entry.start(app, cfg.bind_host, cfg.http_port, reuse_port=cfg.reuse_port, sock=sock)
        if cfg.metrics_port is not None:
            self._metrics_server = await ops.start(
                ops.make_app(self.metrics, self.health.serving), cfg.bind_host, cfg.metrics_port, reuse_port=cfg.reuse_port
            )
        watch = getattr(self.role, "watch", None)
        if self.role.upstreams:
            self._watch = asyncio.ensure_future(self._await_upstreams())
        elif watch is not None:
            # The function is a server of the user's (mp.Container): serving while it answers.
            self._watch = asyncio.ensure_future(watch(self._function_serving))
        else:
            await self._set_serving()
        log.info(
            "listening",
            extra={"fields": {"grpc": address, "http": cfg.http_port, "pattern": cfg.pattern, "name": cfg.name}},
        )

    async def stop(self) -> None:
        """Graceful stop (SIGTERM): turn NOT_SERVING, so routers watching our health send no new
        calls; keep accepting calls for `drain_seconds` (those already on their way); then refuse
        new calls and finish the ones in flight, within the request deadline."""
        if self.stopping:
            return
        self.stopping = True
        log.info("stopping: draining in-flight requests", extra={"fields": {"in_flight": self.in_flight}})
        await self.health.enter_graceful_shutdown()
        if self._watch:
            self._watch.cancel()
        if self.cfg.drain_seconds > 0:
            await asyncio.sleep(self.cfg.drain_seconds)
        await self.health.close_watches()
        if self._http is not None:
            await self._http.shutdown()
        if self._server is not None:
            await self._server.stop(grace=self.cfg.timeout)
        if self._http is not None:
            # Stop accepting, then give connections accepted a moment ago time to send their
            # request and get its answer (with `Connection: close`, as every answer since the
            # stop began) before idle connections are closed: a successor entry sharing the
            # listening socket takes every later connection.
            await http_entry.stop_accepting(self._http, max(0.1, self.cfg.drain_seconds), self._http_sock)
            await self._http.cleanup()
        for up in self.role.upstreams:
            await up.close()
        close = getattr(self.role, "close", None)
        if close is not None:
            await close()
        self.workers.shutdown()
        if self._metrics_server is not None:
            await self._metrics_server.cleanup()
        if self.tracing is not None:
            self.tracing.shutdown()
        log.info("stopped")


async def serve(cfg: RuntimeConfig) -> int:
    """Runs until SIGTERM or SIGINT, then stops gracefully; the exit code (EXIT_WEDGED when calls
    past their deadline held every thread for the grace period)."""
    runtime = Runtime(cfg)
    await runtime.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(runtime.wedged.wait())]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in waits:
        task.cancel()
    wedged = runtime.wedged.is_set() and not stop.is_set()
    if wedged:
        log.error("exiting to be replaced: %d threads still run calls their callers gave up on", runtime.workers.lost)
    await runtime.stop()
    return EXIT_WEDGED if wedged else 0
