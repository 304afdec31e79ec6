"""A bare grpc.aio server answering metaparticle.v1.Function/Call with the request's own bytes (a
Payload echoes as itself): the floor that the function server's own CPU per request is compared with.

`python -m bench.bare_echo PORT`; the event loop is uvloop when installed, as the runtime's default.
"""

from __future__ import annotations

import asyncio
import sys

import grpc


async def serve(port: int) -> None:
    server = grpc.aio.server()

    async def call(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request

    handler = grpc.unary_unary_rpc_method_handler(call)  # no (de)serializers: raw bytes in and out
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("metaparticle.v1.Function", {"Call": handler}),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def main() -> None:
    port = int(sys.argv[1])
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(port))
    else:
        uvloop.run(serve(port))


if __name__ == "__main__":
    main()
