"""JSON over HTTP at the entry role: `POST /` answers the pattern's JSON result, `GET /healthz` its health."""

from __future__ import annotations

import time
from typing import Any, Awaitable, Callable

from aiohttp import web

from .errors import RoleError
from .payload import unwrap, wrap

Dispatch = Callable[[bytes, float], Awaitable[bytes]]
Health = Callable[[], Awaitable[tuple[bool, dict[str, Any]]]]

#: The body size limit of the app (aiohttp's 413 exception does not carry it).
MAX_REQUEST_BYTES = web.AppKey("max_request_bytes", int)


def _error(status: int, message: str, code: str, **details: Any) -> web.Response:
    body = {"error": message, "code": code, **details}
    return web.json_response(body, status=status)


@web.middleware
async def _json_errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """aiohttp's own refusals (404, 405, 413) answer JSON like everything else."""
    try:
        return await handler(request)
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[MAX_REQUEST_BYTES]
        return _error(
            413, f"request body is larger than the limit of {limit} bytes", "RESOURCE_EXHAUSTED", too_large=True, limit=limit
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(exc.status, "INVALID_ARGUMENT")
        return _error(exc.status, exc.reason, code)


def make_app(dispatch: Dispatch, health: Health, *, timeout: float, max_request_bytes: int) -> web.Application:
    app = web.Application(client_max_size=max_request_bytes, middlewares=[_json_errors])
    app[MAX_REQUEST_BYTES] = max_request_bytes

    async def call(request: web.Request) -> web.Response:
        deadline = time.monotonic() + timeout
        body = await request.read()
        try:
            reply = await dispatch(wrap(body), deadline)
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
    return app


async def start(app: web.Application, host: str, port: int, *, reuse_port: bool = False) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True, reuse_port=reuse_port or None)
    await site.start()
    return runner


