"""Calling a pattern's entry: `Client` for programs outside any pattern (`mp.Client`) and, inside a
function, `ctx.call` / `ctx.acall` for the patterns it `uses`.

One client keeps one pooled connection per target: a gRPC channel (sync, plus one asyncio channel
per event loop) or an HTTP session. Requests and answers are JSON values; an error answer raises
`CallError` carrying its status (the gRPC status name, or the HTTP status) and the error document.
"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request
from typing import Any, Optional
from urllib.parse import urlparse

import grpc

from . import CALL_METHOD, ERROR_METADATA_KEY, tracing
from .errors import CallError
from .payload import unwrap, wrap
from .tls import channel_credentials

#: Largest answer a client accepts, in bytes (a pattern's own limit is usually lower).
MAX_ANSWER_BYTES = 64 * 1024 * 1024


def _json_or_text(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return data.decode("utf-8", "replace")


def _encode(request: Any) -> bytes:
    if isinstance(request, (bytes, bytearray)):
        return bytes(request)
    try:
        return json.dumps(request, allow_nan=False, separators=(",", ":")).encode()
    except (TypeError, ValueError) as exc:
        raise CallError(f"the request is not JSON: {exc}") from None


def _rpc_error(err: grpc.RpcError, target: str) -> CallError:
    document: Any = None
    for key, value in err.trailing_metadata() or ():
        if key == ERROR_METADATA_KEY:
            document = _json_or_text(value if isinstance(value, bytes) else value.encode())
    code = err.code()
    if document is None and code == grpc.StatusCode.UNAVAILABLE:
        # No runtime answered (a downstream role that is down answers with its own document).
        return CallError(f"cannot reach {target}: {err.details()}", code.name)
    if document is None:
        document = {"error": err.details(), "code": code.name}
    return CallError(f"{code.name}: {err.details()}", code.name, document)


class Client:
    """Calls one pattern's entry: `grpc://host:port`, a gRPC target (`dns:///api:50051`,
    `ipv4:127.0.0.1:5001`), or `http(s)://host:port`.

    `timeout` is the default deadline of a call in seconds; `tls` the (cert, key, ca) files of a
    mutual-TLS topology (gRPC only).
    """

    def __init__(self, url: str, *, timeout: float = 30.0, tls: Optional[tuple[str, str, str]] = None) -> None:
        if timeout <= 0:
            raise CallError(f"the timeout must be positive, got {timeout!r}")
        self.url = url
        self.timeout = timeout
        parsed = urlparse(url)
        self._http = parsed.scheme in ("http", "https")
        if self._http:
            self._target = url.rstrip("/") + "/"
        elif parsed.scheme == "grpc":
            if not parsed.hostname or not parsed.port:
                raise CallError(f"{url}: a gRPC URL needs a host and a port, e.g. grpc://127.0.0.1:50051")
            self._target = f"{parsed.hostname}:{parsed.port}"
        elif parsed.scheme in ("dns", "ipv4", "ipv6", "unix"):
            self._target = url
        else:
            raise CallError(f"{url}: unsupported scheme {parsed.scheme!r}; use http://, https:// or grpc://")
        self._credentials = channel_credentials(*tls) if tls else None
        self._options = [
            ("grpc.max_receive_message_length", MAX_ANSWER_BYTES),
            ("grpc.max_send_message_length", MAX_ANSWER_BYTES),
        ]
        self._lock = threading.Lock()
        self._channel: Optional[grpc.Channel] = None
        self._aio: dict[asyncio.AbstractEventLoop, grpc.aio.Channel] = {}
        self._sessions: dict[asyncio.AbstractEventLoop, Any] = {}

    # -- sync ------------------------------------------------------------------------------------
    def call(self, request: Any, *, timeout: Optional[float] = None) -> Any:
        """Sends one JSON request and returns the decoded answer; `CallError` on an error answer."""
        seconds = self._deadline(timeout)
        body = _encode(request)
        if self._http:
            return self._call_http(body, seconds)
        stub = self._sync_channel().unary_unary(CALL_METHOD)
        try:
            reply = stub(wrap(body), timeout=seconds, metadata=tracing.with_trace())
        except grpc.RpcError as err:
            raise _rpc_error(err, self.url) from None
        return _json_or_text(unwrap(reply))

    def _sync_channel(self) -> grpc.Channel:
        with self._lock:
            if self._channel is None:
                if self._credentials is not None:
                    self._channel = grpc.secure_channel(self._target, self._credentials, options=self._options)
                else:
                    self._channel = grpc.insecure_channel(self._target, options=self._options)
            return self._channel

    def _call_http(self, body: bytes, seconds: float) -> Any:
        request = urllib.request.Request(self._target, data=body, method="POST", headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=seconds) as response:
                return _json_or_text(response.read())
        except urllib.error.HTTPError as err:
            document = _json_or_text(err.read())
            message = document.get("error") if isinstance(document, dict) else str(document)
            raise CallError(f"HTTP {err.code}: {message}", err.code, document) from None
        except (urllib.error.URLError, OSError) as err:
            raise CallError(f"cannot reach {self.url}: {getattr(err, 'reason', err)}") from None

    # -- async -----------------------------------------------------------------------------------
    async def acall(self, request: Any, *, timeout: Optional[float] = None) -> Any:
        """`call` on the running event loop."""
        seconds = self._deadline(timeout)
        body = _encode(request)
        if self._http:
            return await self._acall_http(body, seconds)
        stub = self._aio_channel().unary_unary(CALL_METHOD)
        try:
            reply = await stub(wrap(body), timeout=seconds, metadata=tracing.with_trace())
        except grpc.aio.AioRpcError as err:
            raise _rpc_error(err, self.url) from None
        return _json_or_text(unwrap(reply))

    def _aio_channel(self) -> grpc.aio.Channel:
        loop = asyncio.get_running_loop()
        channel = self._aio.get(loop)
        if channel is None:
            if self._credentials is not None:
                channel = grpc.aio.secure_channel(self._target, self._credentials, options=self._options)
            else:
                channel = grpc.aio.insecure_channel(self._target, options=self._options)
            self._aio[loop] = channel
        return channel

    async def _acall_http(self, body: bytes, seconds: float) -> Any:
        import aiohttp

        loop = asyncio.get_running_loop()
        session = self._sessions.get(loop)
        if session is None:
            session = self._sessions[loop] = aiohttp.ClientSession()
        try:
            async with session.post(
                self._target, data=body, headers={"Content-Type": "application/json"}, timeout=aiohttp.ClientTimeout(total=seconds)
            ) as response:
                document = _json_or_text(await response.read())
                if response.status >= 400:
                    message = document.get("error") if isinstance(document, dict) else str(document)
                    raise CallError(f"HTTP {response.status}: {message}", response.status, document)
                return document
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as err:
            raise CallError(f"cannot reach {self.url}: {err or type(err).__name__}") from None

    # -- lifecycle -------------------------------------------------------------------------------
    def _deadline(self, timeout: Optional[float]) -> float:
        seconds = self.timeout if timeout is None else timeout
        if seconds <= 0:
            raise CallError(f"deadline exceeded before calling {self.url}", "DEADLINE_EXCEEDED")
        return seconds

    def close(self) -> None:
        """Closes the sync channel (asyncio channels close with `aclose` on their loop)."""
        with self._lock:
            if self._channel is not None:
                self._channel.close()
                self._channel = None

    async def aclose(self) -> None:
        """Closes this loop's asyncio channel and HTTP session, and the sync channel."""
        loop = asyncio.get_running_loop()
        channel = self._aio.pop(loop, None)
        if channel is not None:
            await channel.close()
        session = self._sessions.pop(loop, None)
        if session is not None:
            await session.close()
        self.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"Client({self.url!r})"


def uses_clients(uses: tuple[tuple[str, str], ...], tls: Optional[tuple[str, str, str]] = None) -> dict[str, Client]:
    """A client per pattern a role `uses` (RuntimeConfig.uses), with the role's own TLS files."""
    return {name: Client(target, tls=tls) for name, target in uses}
