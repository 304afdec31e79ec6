"""JSON payloads on the wire: the `Payload` message, decoding with size and nesting limits."""

from __future__ import annotations

import json
import math
import re
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


#: json.loads/dumps with these options, made once: with options they build a new decoder or
#: encoder on every call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)
_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"))

#: What a decoded request may cost in memory, per byte of the request size limit: a body is refused
#: (RESOURCE_EXHAUSTED) when its estimated decoded form is larger than this times `max_bytes`.
DECODED_BYTES_PER_LIMIT_BYTE = 8
# Estimated CPython sizes of decoded values (3.11, 64-bit), each with the 8-byte slot that holds it:
# an empty list is 56 bytes, a small dict 184-232, a short str 49 + its length.
_LIST_COST, _DICT_COST, _STRING_COST, _ITEM_COST = 64, 240, 56, 8
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_CURLY_AS_SQUARE = bytes.maketrans(b"{}", b"[]")


def decode(data: bytes, *, max_bytes: int, max_depth: int) -> Any:
    """Parses a JSON request, refusing oversize, non-UTF-8, non-standard and too deeply nested input,
    and input whose decoded form would be too large (e.g. 4 MiB of `[[],[],...]` is ~90 MiB of lists).

    Every check before `json.loads` runs at C speed (counts, one regex, translate/replace passes):
    a 4 MiB body is measured in a few milliseconds and refused before any object is built.
    """
    if len(data) > max_bytes:
        raise RoleError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"request body is {len(data)} bytes, the limit is {max_bytes}",
            too_large=True,
            limit=max_bytes,
        )
    if not data or data.isspace():
        raise RoleError(grpc.StatusCode.INVALID_ARGUMENT, "request body is empty; send a JSON document")
    deep = data.count(b"[") + data.count(b"{") > max_depth  # else it cannot be too deep
    # Else it cannot be too large either: no byte adds more to the estimate than an opening brace.
    costly = len(data) * _DICT_COST > DECODED_BYTES_PER_LIMIT_BYTE * max_bytes
    if deep or costly:
        stripped = _check_decoded_size(data, max_bytes, max_depth if deep else None)
        if deep:
            _check_depth(stripped if stripped is not None else _strip_strings(data), max_depth)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RoleError(grpc.StatusCode.INVALID_ARGUMENT, f"request body is not UTF-8: {exc.reason} at byte {exc.start}") from None
    try:
        if text.startswith("\ufeff"):  # as json.loads refuses it
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        return _DECODER.decode(text)
    except (ValueError, RecursionError) as exc:
        raise RoleError(grpc.StatusCode.INVALID_ARGUMENT, f"request body is not valid JSON: {exc}") from None


def _strip_strings(data: bytes) -> bytes:
    """The body with every string's contents removed (brackets and quotes inside strings are text)."""
    return _STRING.sub(b'""', data) if b'"' in data else data


def decoded_size_estimate(data: bytes) -> int:
    """About how many bytes of Python objects `json.loads(data)` builds. Counted in the raw bytes,
    so brackets, quotes and commas inside strings count too (strip strings first for a close figure);
    object keys cost nothing (`json.loads` shares repeated keys)."""
    keys = data.count(b'":')
    return (
        _LIST_COST * data.count(b"[")
        + _DICT_COST * data.count(b"{")
        + _STRING_COST * max(0, data.count(b'"') // 2 - keys)
        + _ITEM_COST * (data.count(b",") + keys)
    )


def _check_decoded_size(data: bytes, max_bytes: int, max_depth: int | None) -> bytes | None:
    """Refuses a body whose decoded form would exceed the budget. Returns the string-stripped body
    when it had to be computed (the quick count, which counts inside strings too, was over and the
    strings alone were not). A run of more than `max_depth` opening brackets (None: no need to
    look) is refused as too deep first, so that a deep body is told so even when it is too large."""
    budget = DECODED_BYTES_PER_LIMIT_BYTE * max_bytes
    if b'"' not in data:
        if max_depth is not None:
            _check_opening_run(data, max_depth)
        lists = _LIST_COST * data.count(b"[")
        if lists > budget:
            _too_large(lists, budget)  # no strings: the lists alone are over (one count, no more)
    estimate = decoded_size_estimate(data)
    if estimate <= budget:
        return None
    # The string values alone (escaped quotes and keys aside) are a lower bound: over it, refuse now.
    strings = data.count(b'"') // 2 - data.count(b'\\"') - data.count(b'":')
    stripped = None
    if _STRING_COST * strings <= budget and b'"' in data:
        stripped = _strip_strings(data)
        if max_depth is not None:
            _check_opening_run(stripped, max_depth)
        estimate = decoded_size_estimate(stripped)
    if estimate > budget:
        _too_large(estimate, budget)
    return stripped


def _check_opening_run(stripped: bytes, max_depth: int) -> None:
    """The cheap part of the depth check (one translate, one search): `max_depth` + 1 brackets
    opened in a row, whatever lies between them but other brackets."""
    if b"[" * (max_depth + 1) in stripped.translate(_CURLY_AS_SQUARE, _NOT_BRACKET):
        _too_deep(max_depth)


def _too_large(estimate: int, budget: int) -> None:
    raise RoleError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        f"request JSON would decode to at least about {estimate} bytes of objects, more than {budget} "
        f"({DECODED_BYTES_PER_LIMIT_BYTE}x the request size limit): send fewer or larger values",
        too_large=True,
        limit=budget,
    )


def _check_depth(stripped: bytes, max_depth: int) -> None:
    """Measures bracket nesting of a string-stripped body at C speed: each pass removes the innermost
    pairs, one level; a pair left after `max_depth` passes is deeper. Unbalanced input that still
    opens more than `max_depth` levels is refused as too deep; json.loads names other problems."""
    brackets = stripped.translate(_CURLY_AS_SQUARE, _NOT_BRACKET)
    for done in range(max_depth + 1):
        if not brackets:
            return
        shorter = brackets.replace(b"[]", b"")
        if len(shorter) == len(brackets):  # only "]]..[[" is left: unbalanced
            if done + brackets.count(b"[") > max_depth:
                _too_deep(max_depth)
            return
        if done == max_depth:
            _too_deep(max_depth)
        brackets = shorter


def _too_deep(max_depth: int) -> None:
    raise RoleError(
        grpc.StatusCode.INVALID_ARGUMENT,
        f"request JSON is nested deeper than {max_depth} levels",
        limit=max_depth,
    )


def encode(value: Any, what: str = "result", *, max_bytes: int | None = None, role: str | None = None) -> bytes:
    """Serialises a function's result, or fails with INTERNAL naming what could not be serialised,
    or RESOURCE_EXHAUSTED (HTTP 500) naming `max_response_bytes` and the role when it is larger."""
    try:
        data = _ENCODER.encode(value).encode()
    except (TypeError, ValueError, RecursionError) as exc:
        raise RoleError(
            grpc.StatusCode.INTERNAL,
            f"the {what} is not JSON-serialisable: {exc}",
            type=type(value).__name__,
        ) from None
    if max_bytes is not None and len(data) > max_bytes:
        where = f" of {role}" if role else ""
        raise RoleError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"the {what}{where} is {len(data)} bytes, larger than max_response_bytes ({max_bytes})",
            response_too_large=True,
            limit=max_bytes,
            **({"role": role} if role else {}),
        )
    return data
