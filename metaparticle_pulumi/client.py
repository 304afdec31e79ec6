"""Calling a pattern's entry: JSON over HTTP (`http://`) or the runtime's gRPC service (`grpc://`)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlparse

import grpc

from metaparticle_runtime import CALL_METHOD, ERROR_METADATA_KEY
from metaparticle_runtime.payload import unwrap, wrap

from ._errors import Error


class CallError(Error):
    """The call could not be made or the pattern answered an error."""

    def __init__(self, message: str, status: int | str | None = None, document: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.document = document


@dataclass
class Answer:
    status: int | str
    body: Any


def call(url: str, body: bytes, *, timeout: float = 30.0) -> Answer:
    """Sends one JSON request; raises `CallError` for transport failures and error answers."""
    parsed = urlparse(url)
    if parsed.scheme in ("http", "https"):
        return _call_http(url, body, timeout)
    if parsed.scheme == "grpc":
        if not parsed.hostname or not parsed.port:
            raise CallError(f"{url}: a gRPC URL needs a host and a port, e.g. grpc://127.0.0.1:50051")
        return _call_grpc(f"{parsed.hostname}:{parsed.port}", body, timeout)
    raise CallError(f"{url}: unsupported scheme {parsed.scheme!r}; use http://, https:// or grpc://")


def _call_http(url: str, body: bytes, timeout: float) -> Answer:
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Answer(response.status, _json_or_text(response.read()))
    except urllib.error.HTTPError as err:
        document = _json_or_text(err.read())
        message = document.get("error") if isinstance(document, dict) else str(document)
        raise CallError(f"HTTP {err.code}: {message}", err.code, document) from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise CallError(f"cannot reach {url}: {reason}") from None


def _call_grpc(address: str, body: bytes, timeout: float) -> Answer:
    with grpc.insecure_channel(address) as channel:
        stub = channel.unary_unary(CALL_METHOD)
        try:
            reply = stub(wrap(body), timeout=timeout)
        except grpc.RpcError as err:
            document: Any = None
            for key, value in err.trailing_metadata() or ():
                if key == ERROR_METADATA_KEY:
                    document = _json_or_text(value)
            if document is None and err.code() == grpc.StatusCode.UNAVAILABLE:
                # No runtime answered (an unavailable downstream role answers with its error document).
                raise CallError(f"cannot reach grpc://{address}: {err.details()}", err.code().name) from None
            if document is None:
                document = {"error": err.details(), "code": err.code().name}
            raise CallError(f"{err.code().name}: {err.details()}", err.code().name, document) from None
    return Answer("OK", _json_or_text(unwrap(reply)))


def _json_or_text(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return data.decode("utf-8", "replace")


def wait_healthz(url: str, timeout: float, should_stop: Callable[[], bool] = lambda: False) -> bool:
    """Polls GET `url`/healthz until it answers 200 (the entry sees its whole topology serving)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        if time.monotonic() > deadline or should_stop():
            return False
        time.sleep(0.1)
