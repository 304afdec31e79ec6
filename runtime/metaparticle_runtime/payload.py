"""JSON payloads on the wire: the `Payload` message, decoding with size and nesting limits."""

from __future__ import annotations

import json
import math
from typing import Any

import grpc

from .errors import RoleError
from .proto.runtime_pb2 import Payload


def wrap(json_bytes: bytes) -> bytes:
    """JSON bytes -> serialized `Payload` message."""
    return Payload(json=json_bytes).SerializeToString()


def unwrap(message: bytes) -> bytes:
    """Serialized `Payload` message -> its JSON bytes."""
    try:
        return Payload.FromString(message).json
    except Exception:  # noqa: BLE001 - protobuf raises DecodeError and friends
        raise RoleError(grpc.StatusCode.INVALID_ARGUMENT, "request is not a metaparticle.v1.Payload message") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text} is out of range")
    return value


def decode(data: bytes, *, max_bytes: int, max_depth: int) -> Any:
    """Parses a JSON request, refusing oversize, non-UTF-8, non-standard and too deeply nested input."""
    if len(data) > max_bytes:
        raise RoleError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"request body is {len(data)} bytes, the limit is {max_bytes}",
            too_large=True,
            limit=max_bytes,
        )
    if not data.strip():
        raise RoleError(grpc.StatusCode.INVALID_ARGUMENT, "request body is empty; send a JSON document")
    # Only bodies with enough brackets can be too deep: count before walking.
    if data.count(b"[") + data.count(b"{") > max_depth:
        _check_depth_raw(data, max_depth)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RoleError(grpc.StatusCode.INVALID_ARGUMENT, f"request body is not UTF-8: {exc.reason} at byte {exc.start}") from None
    try:
        return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as exc:
        raise RoleError(grpc.StatusCode.INVALID_ARGUMENT, f"request body is not valid JSON: {exc}") from None


def _check_depth_raw(data: bytes, max_depth: int) -> None:
    """Measures bracket nesting outside strings without building the document."""
    depth = 0
    in_string = False
    escaped = False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            if depth > max_depth:
                raise RoleError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"request JSON is nested deeper than {max_depth} levels",
                    limit=max_depth,
                )
        elif byte in (0x5D, 0x7D):
            depth -= 1


def encode(value: Any, what: str = "result") -> bytes:
    """Serialises a function's result, or fails with INTERNAL naming what could not be serialised."""
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":")).encode()
    except (TypeError, ValueError, RecursionError) as exc:
        raise RoleError(
            grpc.StatusCode.INTERNAL,
            f"the {what} is not JSON-serialisable: {exc}",
            type=type(value).__name__,
        ) from None
