"""The operations port (`RuntimeConfig.metrics_port`): plain HTTP for the machines that watch a
replica, never for requests.

`GET /metrics` is the role's Prometheus registry. `GET /healthz` answers 200 while this replica's
gRPC health is SERVING and 503 otherwise (starting, draining, out of threads), so a kubelet probes
health with an `httpGet` even when the gRPC port speaks mutual TLS, which its gRPC probe cannot.
"""

from __future__ import annotations

from typing import Awaitable, Callable

from aiohttp import web

from .metrics import CONTENT_TYPE, Metrics


def exposition_handler(metrics: Metrics) -> Callable[[web.Request], Awaitable[web.Response]]:
    """`GET /metrics`: the registry in Prometheus' text format (here and at the HTTP entry)."""

    async def exposition(request: web.Request) -> web.Response:
        return web.Response(body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE})

    return exposition


def make_app(metrics: Metrics, serving: Callable[[], bool]) -> web.Application:
    async def healthz(request: web.Request) -> web.Response:
        up = serving()
        return web.json_response({"status": "SERVING" if up else "NOT_SERVING"}, status=200 if up else 503)

    app = web.Application()
    app.router.add_get("/metrics", exposition_handler(metrics))
    app.router.add_get("/healthz", healthz)
    return app


async def start(app: web.Application, host: str, port: int, *, reuse_port: bool = False) -> web.AppRunner:
    """Serves `app` on host:port; with `reuse_port`, bound with SO_REUSEPORT (the local target holds
    the port, bound but not listening, until the role binds it)."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_address=True, reuse_port=reuse_port or None).start()
    return runner
