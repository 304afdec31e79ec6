"""Errors that cross role boundaries: a gRPC status plus a JSON error document.

The same error reaches an HTTP caller as `{"error": ..., "code": ..., ...}` with the matching HTTP
status, and a gRPC caller as the status code with the document in trailing metadata.
"""

from __future__ import annotations

import json
from typing import Any

import grpc

from . import ERROR_METADATA_KEY

#: HTTP status for each gRPC status code the runtime uses.
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.CANCELLED: 499,
}


class Error(Exception):
    """Root of the errors metaparticle raises on purpose (`mp.Error`); its message is meant for the user."""


class CallError(Error):
    """A call to a pattern could not be made, or the pattern answered an error.

    `status` is the gRPC status name (`"UNAVAILABLE"`) or the HTTP status (503); `document` the
    pattern's JSON error document (`{"error": ..., "code": ...}`), when it answered one.
    """

    def __init__(self, message: str, status: int | str | None = None, document: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.document = document


class RoleError(Exception):
    """A request failed with a status that means what it says, and details for the caller."""

    def __init__(self, code: grpc.StatusCode, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details

    @property
    def http_status(self) -> int:
        if self.details.get("too_large"):
            return 413
        if self.details.get("response_too_large"):
            return 500  # the result is too large: not the caller's fault, and no use retrying
        return HTTP_STATUS.get(self.code, 500)

    def document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"error": self.message, "code": self.code.name}
        doc.update(self.details)
        return doc

    def metadata(self) -> tuple[tuple[str, bytes], ...]:
        return ((ERROR_METADATA_KEY, json.dumps(self.document()).encode()),)

    @classmethod
    def from_rpc_error(cls, err: grpc.RpcError, *, context: str = "", **extra: Any) -> "RoleError":
        """Rebuilds the downstream error, prefixing `context` ("shard 2") to its message."""
        code = err.code() if callable(getattr(err, "code", None)) else grpc.StatusCode.UNKNOWN
        message = err.details() if callable(getattr(err, "details", None)) else str(err)
        details: dict[str, Any] = {}
        trailing = err.trailing_metadata() if callable(getattr(err, "trailing_metadata", None)) else None
        for key, value in trailing or ():
            if key == ERROR_METADATA_KEY:
                try:
                    details = json.loads(value)
                except ValueError:
                    details = {}
        details.pop("error", None)
        details.pop("code", None)
        if code == grpc.StatusCode.UNAVAILABLE and not details:
            message = f"unavailable: {message}"
        if code == grpc.StatusCode.DEADLINE_EXCEEDED and not details:
            message = "deadline exceeded"
        # Errors about the request itself read the same whichever replica found them.
        if context and code != grpc.StatusCode.INVALID_ARGUMENT:
            message = f"{context}: {message}"
        for key, value in extra.items():
            details.setdefault(key, value)
        return cls(code or grpc.StatusCode.UNKNOWN, message or "error", **details)


class BadRequest(Exception):
    """Raise from a user function to answer 400 / INVALID_ARGUMENT with this message."""


#: What a user function may raise that answers an error instead of stopping the server: every
#: Exception, and also SystemExit (`sys.exit()` in a function) and KeyboardInterrupt raised by the
#: code itself (the runtime handles SIGINT on its loop, so no real one is raised there).
RAISED_BY_USER_CODE = (Exception, SystemExit, KeyboardInterrupt)
