"""JSON over HTTP at the entry role: `POST /` answers the pattern's JSON result, `GET /healthz` its
health, `GET /metrics` the entry role's Prometheus metrics."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Optional

from aiohttp import web

from .errors import RoleError
from .payload import unwrap, wrap

if TYPE_CHECKING:
    from .metrics import Metrics

#: (request payload, deadline, the caller's headers for trace context) -> reply payload.
Dispatch = Callable[[bytes, float, Any], Awaitable[bytes]]
Health = Callable[[], Awaitable[tuple[bool, dict[str, Any]]]]

#: The body size limit of the app (aiohttp's 413 exception does not carry it).
MAX_REQUEST_BYTES = web.AppKey("max_request_bytes", int)


def _error(status: int, message: str, code: str, **details: Any) -> web.Response:
    body = {"error": message, "code": code, **details}
    return web.json_response(body, status=status)


def _middleware(stopping: Callable[[], bool]) -> Any:
    """aiohttp's own refusals (404, 405, 413) answer JSON like everything else; once the role is
    stopping, every answer says `Connection: close`, so a keep-alive client sends its next request
    on a new connection (to the successor sharing the listening socket) instead of on one that
    this process is about to close."""

    @web.middleware
    async def json_errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPRequestEntityTooLarge:
            limit = request.app[MAX_REQUEST_BYTES]
            response = _error(
                413, f"request body is larger than the limit of {limit} bytes", "RESOURCE_EXHAUSTED", too_large=True, limit=limit
            )
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(exc.status, "INVALID_ARGUMENT")
            response = _error(exc.status, exc.reason, code)
        if stopping():
            response.force_close()
        return response

    return json_errors


def make_app(
    dispatch: Dispatch,
    health: Health,
    *,
    timeout: float,
    max_request_bytes: int,
    metrics: Optional["Metrics"] = None,
    stopping: Callable[[], bool] = lambda: False,
) -> web.Application:
    """The entry's app; `stopping` says when answers should close their connection (see _middleware)."""
    app = web.Application(client_max_size=max_request_bytes, middlewares=[_middleware(stopping)])
    app[MAX_REQUEST_BYTES] = max_request_bytes

    async def call(request: web.Request) -> web.Response:
        deadline = time.monotonic() + timeout
        body = await request.read()
        try:
            reply = await dispatch(wrap(body), deadline, request.headers)
        except RoleError as err:
            return web.json_response(err.document(), status=err.http_status)
        return web.Response(body=unwrap(reply), content_type="application/json")

    async def healthz(request: web.Request) -> web.Response:
        serving, detail = await health()
        return web.json_response(
            {"status": "SERVING" if serving else "NOT_SERVING", **detail}, status=200 if serving else 503
        )

    app.router.add_post("/", call)
    app.router.add_get("/healthz", healthz)
    if metrics is not None:
        from .ops import exposition_handler

        app.router.add_get("/metrics", exposition_handler(metrics))
    return app


async def start(
    app: web.Application, host: str, port: int, *, reuse_port: bool = False, sock: Optional[socket.socket] = None
) -> web.AppRunner:
    """Serves `app` on `host:port`, or on `sock` (a listening socket it was given) when set."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site: web.BaseSite
    if sock is not None:
        site = web.SockSite(runner, sock)
    else:
        site = web.TCPSite(runner, host, port, reuse_address=True, reuse_port=reuse_port or None)
    await site.start()
    return runner


async def stop_accepting(runner: web.AppRunner, settle: float, sock: Optional[socket.socket] = None) -> None:
    """Stops taking connections from the listening socket, then waits up to `settle` seconds for
    the connections accepted so far to be answered and closed (their answers say `Connection:
    close` by now); whatever is left (idle keep-alive connections) `runner.cleanup()` closes.

    A socket shared with a successor (`sock`) leaves asyncio's selector first and the loop runs
    once more: a connection accepted in the same iteration as the site's close would otherwise
    be dropped unanswered (its transport is made a step later and refuses a closed server)."""
    loop = asyncio.get_running_loop()
    if sock is not None and isinstance(loop, asyncio.SelectorEventLoop):
        loop.remove_reader(sock.fileno())
        await asyncio.sleep(0)
    for site in list(runner.sites):
        await site.stop()
    deadline = loop.time() + settle
    server = runner.server
    while server is not None and server.connections and loop.time() < deadline:
        await asyncio.sleep(0.01)
