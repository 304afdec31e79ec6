"""The function as the user's own HTTP server (`mp.Container`): the runtime is its adapter.

The role takes gRPC calls as for a Python function (routers and roots see no difference) and
POSTs each request's JSON to the user's server next to it (`function_url`, on 127.0.0.1), within
the caller's remaining deadline, over one pooled session. The server's answer maps to the same
statuses a Python function's outcome does: 2xx with JSON -> the result, 4xx -> INVALID_ARGUMENT
(429 -> RESOURCE_EXHAUSTED) with its body in the error document, 5xx -> UNKNOWN, a reply that is
not JSON -> INTERNAL, nobody listening -> UNAVAILABLE. Health follows the server's `GET /healthz`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, Awaitable, Callable

import aiohttp
import grpc

from ..config import RuntimeConfig
from ..errors import RoleError
from ..payload import decode, unwrap, wrap

log = logging.getLogger("metaparticle.function")

_COMPONENT = {"Service": "service", "Spread": "replica", "Shard": "shard", "ScatterGather": "leaf"}
#: Seconds between two `GET /healthz` of the user's server; each waits at most HEALTH_TIMEOUT.
HEALTH_INTERVAL = 0.5
HEALTH_TIMEOUT = 1.0
#: Failed probes in a row after which a serving replica turns NOT_SERVING.
HEALTH_FAILURES = 2
#: How much of a server's error body goes into the error document when it is not JSON.
_ERROR_TEXT_CHARS = 2000


class _TooLarge(Exception):
    pass


class HttpFunction:
    """Serves a function role by calling the user's HTTP server (see the module docstring)."""

    upstreams: list = []
    #: Calls wait on the network, not on a thread: admission counts only `max_in_flight`.
    uses_threads = False

    def __init__(self, cfg: RuntimeConfig) -> None:
        assert cfg.function_url is not None
        self.cfg = cfg
        base = cfg.function_url.rstrip("/")
        self.url = base + "/"
        self.health_url = base + "/healthz"
        self.upstreams = []
        self.details: dict[str, Any] = {"role": cfg.role_name, "replica": cfg.replica}
        if cfg.index is not None:
            self.details[_COMPONENT.get(cfg.pattern, "service")] = cfg.index
        self._session: aiohttp.ClientSession | None = None
        #: Probes have a connection of their own: with every call's connection busy (a slow
        #: server at max_in_flight) a probe must not wait for one and fail as if the server were down.
        self._probe_session: aiohttp.ClientSession | None = None
        #: Whether the server answered its last health probes (see `watch`).
        self.serving = False

    def _client(self) -> aiohttp.ClientSession:
        """The one pooled session (made on the serving loop, at first use)."""
        if self._session is None or self._session.closed:
            # Admission bounds the calls in flight; the pool keeps their connections open.
            connector = aiohttp.TCPConnector(limit=self.cfg.max_in_flight + 1, force_close=False)
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=True)
        return self._session

    async def call(self, message: bytes, deadline: float) -> bytes:
        body = unwrap(message)
        # The same bounds as for a Python function: the user's server never sees what they refuse.
        decode(body, max_bytes=self.cfg.max_request_bytes, max_depth=self.cfg.max_json_depth)
        timeout = deadline - time.monotonic()
        if timeout <= 0:
            raise RoleError(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded before the function server was called", **self.details)
        try:
            async with self._client().post(
                self.url,
                data=body,
                headers={"Content-Type": "application/json", "X-Metaparticle-Timeout": f"{timeout:.3f}"},
                timeout=aiohttp.ClientTimeout(total=timeout),
                allow_redirects=False,
            ) as response:
                status = response.status
                try:
                    data = await self._read(response)
                except _TooLarge:
                    raise self._too_large(response.content_length) from None
        except asyncio.TimeoutError:
            raise RoleError(
                grpc.StatusCode.DEADLINE_EXCEEDED, f"the function server did not answer within the deadline ({timeout:.3f}s)", **self.details
            ) from None
        except aiohttp.ClientConnectorError as exc:
            raise RoleError(
                grpc.StatusCode.UNAVAILABLE, f"the function server at {self.url} is not listening: {exc.os_error or exc}", **self.details
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise RoleError(
                grpc.StatusCode.UNAVAILABLE, f"the function server at {self.url} closed the call: {type(exc).__name__}: {exc}", **self.details
            ) from None
        return wrap(self._result(status, data))

    async def _read(self, response: aiohttp.ClientResponse) -> bytes:
        """The body, refused past `max_response_bytes` without reading it all."""
        limit = self.cfg.max_response_bytes
        if response.content_length is not None and response.content_length > limit:
            raise _TooLarge
        chunks, size = [], 0
        async for chunk in response.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > limit:
                raise _TooLarge
            chunks.append(chunk)
        return b"".join(chunks)

    def _too_large(self, length: int | None) -> RoleError:
        limit = self.cfg.max_response_bytes
        size = f"{length} bytes" if length is not None else f"more than {limit} bytes"
        return RoleError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"the result of {self.cfg.role_name} is {size}, larger than max_response_bytes ({limit})",
            response_too_large=True,
            limit=limit,
            **self.details,
        )

    def _result(self, status: int, data: bytes) -> bytes:
        """The JSON result of a 2xx answer, or the error the answer means."""
        if 200 <= status < 300:
            try:
                json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
            except (UnicodeDecodeError, ValueError, RecursionError) as exc:
                raise RoleError(
                    grpc.StatusCode.INTERNAL, f"the function server answered {status} with a body that is not JSON: {exc}", server_status=status, **self.details
                ) from None
            return data.strip()
        answered = _body_document(data)
        what = f"the function server answered {status}"
        text = answered.get("error") if isinstance(answered, dict) else answered
        message = f"{what}: {text}" if isinstance(text, str) and text else what
        if status == 429:
            code = grpc.StatusCode.RESOURCE_EXHAUSTED
        elif 400 <= status < 500:
            code = grpc.StatusCode.INVALID_ARGUMENT
        elif status >= 500:
            code = grpc.StatusCode.UNKNOWN
        else:
            code = grpc.StatusCode.INTERNAL
        raise RoleError(code, message, server_status=status, body=answered, **self.details)

    async def healthy(self) -> bool:
        """Whether the server's `GET /healthz` answers 200 now."""
        if self._probe_session is None or self._probe_session.closed:
            self._probe_session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1))
        try:
            async with self._probe_session.get(self.health_url, timeout=aiohttp.ClientTimeout(total=HEALTH_TIMEOUT)) as response:
                await response.read()
                return response.status == 200
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
            return False

    async def watch(self, set_serving: Callable[[bool], Awaitable[None]]) -> None:
        """Probes the server for as long as the role runs: serving from its first 200, not serving
        after HEALTH_FAILURES failed probes in a row (and serving again when it answers)."""
        failures = 0
        while True:
            if await self.healthy():
                failures = 0
                if not self.serving:
                    self.serving = True
                    log.info("the function server answers %s", self.health_url, extra={"fields": self.details})
                    await set_serving(True)
            else:
                failures += 1
                if self.serving and failures >= HEALTH_FAILURES:
                    self.serving = False
                    log.warning("the function server stopped answering %s: not serving", self.health_url, extra={"fields": self.details})
                    await set_serving(False)
            await asyncio.sleep(HEALTH_INTERVAL)

    async def close(self) -> None:
        for session in (self._session, self._probe_session):
            if session is not None:
                await session.close()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _body_document(data: bytes) -> Any:
    """An error answer's body: its JSON when it is JSON, else its text (cut short)."""
    text = data.decode("utf-8", "replace")
    try:
        return json.loads(text)
    except ValueError:
        return text[:_ERROR_TEXT_CHARS]
