"""A bare grpc.aio server answering metaparticle.v1.Function/Call with the request's own bytes (a
Payload echoes as itself): the floor that the function server's own CPU per request is compared with.

`python -m bench.bare_echo PORT [--thread]`; the event loop is uvloop when installed, as the
runtime's default. `--thread` hands every request to a worker thread and back, as asyncio offers it
(`asyncio.to_thread`): the floor for a sync function, whose cost includes that hand-over.
"""

from __future__ import annotations

import asyncio
import sys

import grpc


def _echo(request: bytes) -> bytes:
    return request


async def serve(port: int, on_thread: bool) -> None:
    server = grpc.aio.server()

    async def call(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request

    async def call_on_thread(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return await asyncio.to_thread(_echo, request)

    # no (de)serializers: raw bytes in and out
    handler = grpc.unary_unary_rpc_method_handler(call_on_thread if on_thread else call)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("metaparticle.v1.Function", {"Call": handler}),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def main() -> None:
    port = int(sys.argv[1])
    on_thread = "--thread" in sys.argv[2:]
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(port, on_thread))
    else:
        uvloop.run(serve(port, on_thread))


if __name__ == "__main__":
    main()
