"""Writes vectors.json: what the Python shard router answers for known requests, which the Go router
(runtime/router, `go test ./...`) and tests/test_router_vectors.py both check.

Each routing case is a serialised request (a Payload message, or raw bytes that are not one), a key
path and a shard count, with the expected shard or the expected error (gRPC code, HTTP status and the
exact JSON error document). The answers come from the runtime's own code (payload.decode,
ShardRouter.key_of and shard_of_key, hashing.key_hash, server.answer_within), so regenerating after a
change there shows what moved:

    PYTHONPATH=runtime python runtime/router/testdata/make_vectors.py            # rewrite
    PYTHONPATH=runtime python runtime/router/testdata/make_vectors.py --check    # compare, exit 1 if stale
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import random
import sys
from pathlib import Path
from typing import Any

from metaparticle_runtime.config import RuntimeConfig
from metaparticle_runtime.errors import RoleError
from metaparticle_runtime.hashing import jump_hash, key_hash
from metaparticle_runtime.payload import decode, unwrap, wrap
from metaparticle_runtime.roles.shard import ShardRouter
from metaparticle_runtime.server import answer_within
from metaparticle_runtime.upstream import service_config

OUT = Path(__file__).resolve().parent / "vectors.json"
SHARD_COUNTS = (1, 2, 3, 5, 10, 64, 1000)
MAX_BYTES, MAX_DEPTH = 16384, 8


def router(key_path: str, shards: int) -> ShardRouter:
    """The real ShardRouter's key and shard logic, without connecting upstreams."""
    shard = ShardRouter.__new__(ShardRouter)
    shard.cfg = RuntimeConfig(role="shard", key_path=key_path, upstreams=("x",) * shards, upstream_names=("x",) * shards,
                              max_request_bytes=MAX_BYTES, max_json_depth=MAX_DEPTH)
    shard.key_fn = None
    shard.upstreams = [None] * shards  # type: ignore[list-item]
    return shard


def route(message: bytes, key_path: str, shards: int) -> dict[str, Any]:
    shard = router(key_path, shards)
    try:
        request = decode(unwrap(message), max_bytes=MAX_BYTES, max_depth=MAX_DEPTH)
        key = asyncio.run(shard.key_of(request, time.monotonic() + 10))
        return {"shard": shard.shard_of_key(key)}
    except RoleError as err:
        return {"code": err.code.name, "http_status": err.http_status, "document": json.dumps(err.document())}


def message_case(name: str, message: bytes, key_path: str = "user.id", shards: int = 10) -> dict[str, Any]:
    return {"name": name, "message_b64": base64.b64encode(message).decode(), "key_path": key_path, "shards": shards,
            "expect": route(message, key_path, shards)}


def body_case(name: str, body: bytes | str, key_path: str = "user.id", shards: int = 10) -> dict[str, Any]:
    data = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    return message_case(name, wrap(data), key_path, shards)


KEYS = [
    '"alice"', '""', '"ünïcödé ✓"', '"😀 emoji"', '"\\ud83d\\ude00"', '"\\ud800 lone"', '"\\udc00"', '"tab\\tnew\\nline"',
    '"quote\\" back\\\\ slash\\/"', '"\\u0000\\u001f\\u007f\\u0080"', '"日本語"',
    "0", "-0", "42", "-7", "12345678901234567890123456789", "-99999999999999999999",
    "3.5", "-0.0", "0.0", "1.0", "1e16", "1.5e16", "1e15", "123456789012345678", "1e-5", "0.0001", "1.5e-7",
    "2.5e+300", "5e-324", "1e-400", "0.1", "1E3", "100.0", "1.7976931348623157e308",
    "true", "false", "null", "[]", "{}", '["a", 1, 2.0, null]', '{"b": 2, "a": [1, {"z": null}]}',
    '{"é": 1, "e": 2, "\\u00e9": 3}', "1e0", "1", "-5.0", "1e300", "[1.0, {\"a\": 2.0, \"b\": 2.5}]", '[{"k": "日本"}, [[[]]], "😀"]', '{"a": 1, "a": 2}',
]


def known_answers() -> list[dict[str, Any]]:
    out = []
    for text in KEYS:
        key = json.loads(text)
        out.append({"key_json": text, "hash": str(key_hash(key)), "shards": {str(n): jump_hash(key_hash(key), n) for n in SHARD_COUNTS}})
    return out


def routing_cases() -> list[dict[str, Any]]:
    cases = []
    for i, text in enumerate(KEYS):
        for n in (1, 3, 10, 64):
            cases.append(body_case(f"key {text} over {n}", '{"user": {"id": %s}, "x": 1}' % text, shards=n))
    paths = [("a", '{"a": "v"}'), ("a.b.c", '{"a": {"b": {"c": [1, 2]}}}'), ("items.1", '{"items": ["x", "y"]}'),
             ("items.01", '{"items": ["x", "y"]}'), ("items.2", '{"items": ["x", "y"]}'), ("items.x", '{"items": ["x"]}'),
             ("0", "[5, 6]"), ("a.0.b", '{"a": [{"b": true}]}'), ("a", "[1]"), ("a.b", '{"a": 5}'),
             ("a.b", '{"a": "text"}'), ("a..b", '{"a": {"": {"b": 2}}}'), ("ключ", '{"ключ": "значение"}'),
             ("it's", '{"it\'s": 1}'), ("user.id", '{"user": {}}'), ("user.id", "{}"), ("user.id", '"str"'),
             ("user.id", "null"), ("user.id", '{"user": null}'), ("a", '{"a": 1, "a": "last"}')]
    for path, body in paths:
        cases.append(body_case(f"path {path!r} in {body}", body, key_path=path, shards=7))
    bad = {
        "empty": b"", "whitespace": b" \t\r\n\x0b\x0c", "BOM": "\ufeff{}", "not json": b"hello", "truncated object": b'{"user": {"id": 1',
        "truncated string": b'{"a": "abc', "trailing comma object": b'{"a": 1,}', "trailing comma array": b"[1,]",
        "missing colon": b'{"a" 1}', "missing comma": b'{"a": 1 "b": 2}', "single quotes": b"{'a': 1}",
        "extra data": b'{"a": 1} x', "two docs": b"{} {}", "leading zero": b"01", "leading zero in array": b"[01]",
        "bare minus": b"-", "minus letter": b"-a", "dot number": b".5", "trailing dot": b"1.", "exp without digits": b"1e",
        "exp sign": b"1e+", "NaN": b'{"a": NaN}', "Infinity": b"[Infinity]", "-Infinity": b"-Infinity", "nan lowercase": b"nan",
        "out of range float": b'{"user": {"id": 1e999}}', "negative out of range": b"-1e400", "huge int": b"1" * 4301,
        "big int ok": b'{"user": {"id": ' + b"9" * 4300 + b"}}", "control char": b'"a\x01b"', "newline in string": b'{"a": "x\ny"}',
        "bad escape": b'"\\x"', "bad unicode escape": b'"\\u12G4"', "short unicode escape": b'"\\u12"', "unicode escape at end": b'"\\u1234',
        "bad low surrogate": b'"\\ud800\\u12G4"', "pair then end": b'"\\ud800\\udc00', "escape at end": b'"\\', "lone quote": b'"',
        "object key not string": b"{1: 2}", "object open": b"{", "array open": b"[", "array open space": b"[ ", "close only": b"]",
        "nul": b"\x00", "true prefix": b"tru", "error after unicode": "[\"日本\", x]", "error on line 3": b'{\n"a": 1,\n"b" 2}',
        "error after unicode line": "{\n\"é\":\n  x}", "deep ok": b"[" * 8 + b"]" * 8, "too deep": b"[" * 9 + b"]" * 9,
        "too deep objects": b'{"a":' * 9 + b"1" + b"}" * 9, "brackets in strings": b'["[[[[[[[[[[[["]', "escaped quote in string": b'["\\"[[[[[[[[[["]',
        "too deep then bad utf8": b"[" * 9 + b"\xff", "unbalanced closers": b"]]]]]]]]][[[[[[[[[", "too large": b"[" + b"1," * (MAX_BYTES // 2) + b"1]",
        "at the limit": b'"' + b"x" * (MAX_BYTES - 2) + b'"', "over the limit": b'"' + b"x" * (MAX_BYTES - 1) + b'"',
        "invalid start byte": b'{"a": "\x80"}', "invalid continuation": b'"\xc3\x28"', "truncated utf8": b'"\xe6\x97',
        "surrogate in utf8": b'"\xed\xa0\x80"', "overlong": b'"\xc0\xaf"', "E0 low": b'"\xe0\x80\x80"', "F4 high": b'"\xf4\x90\x80\x80"',
        "F5": b'"\xf5\x80"', "truncated 4-byte": b'"\xf0\x9f\x98', "truncated 4-byte bad": b'"\xf0\x9f\x28', "end after lead": b"\xe6",
        "latin-1": "{\"a\": \"caf\xe9\"}".encode("latin-1"),
        # The decoded-size estimate (8x max_request_bytes) and the nesting passes of payload.decode.
        "decodes too large: lists": b"[" + b"[]," * 5000 + b"[]]", "decodes too large: objects": b"[" + b"{}," * 3000 + b"{}]",
        "decodes too large: strings": b"[" + b'"",' * 5000 + b'""]', "decodes too large: items": b"[" + b"1," * 8000 + b"1]",
        "brackets inside one string": b'{"user": {"id": "' + b"[" * 15000 + b'"}}',
        "quotes and brackets in strings": rb'["\"[[[[", "]]]]\"", "[[[[[[[[["]',
        "deep and too large": b"[" * 10 + b"[]," * 5000 + b"]" * 10, "deep run then strings": b"[" * 9 + b'"x"' + b"]" * 9,
        "deep in objects and arrays": b'{"a": [{"b": [{"c": [{"d": [{"e": 1}]}]}]}]}', "unbalanced opens": b"[" * 9 + b"]",
        "unbalanced opens after closers": b"]]]" + b"[" * 9, "nine after a closed pair": b"[[]]" + b"[" * 8 + b"]" * 8,
        "deep with escaped quote": rb'[[[[[[[[["\"[[[[["]]]]]]]]]', "deep with escaped backslash": rb'[[[[[["\\[[[[[["]]]]]]',
        "backslash newline in string": b'[[[[[[[[["a\\\n"]]]]]]]]]', "lone quote with brackets": b'"[[[[[[[[[[[[',
    }
    for name, body in bad.items():
        cases.append(body_case(name, body))
    not_payload = {"garbage": b"\xff\xff\xff", "truncated field": b"\x0a\x05ab", "wrong wire type": b"\x0d\x00\x00", "empty message": b"",
                   "unknown field": b"\x12\x01x" + wrap(b'{"user": {"id": 1}}'), "repeated field": wrap(b'{"user": {"id": 1}}') + wrap(b'{"user": {"id": 2}}')}
    for name, message in not_payload.items():
        cases.append(message_case("message " + name, message))
    cases += fuzz_cases(random.Random(11), 500)
    cases += random_key_cases(random.Random(12), 200)
    return cases


def random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(8 if depth < 3 else 6)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.randint(-(10**rng.randint(1, 30)), 10**rng.randint(1, 30))
    if kind == 2:
        return rng.uniform(-1, 1) * 10 ** rng.randint(-30, 30)
    if kind == 3:
        return float(rng.randint(-(10**17), 10**17))
    if kind in (4, 5):
        return "".join(rng.choice("abcXYZ09 _-\\\"/\n\t\x7f\x00éß日本😀\u2028\ufeff") for _ in range(rng.randint(0, 12)))
    if kind == 6:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {random_value(rng, 9) if False else f"k{rng.randint(0, 9)}é": random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def random_key_cases(rng: random.Random, count: int) -> list[dict[str, Any]]:
    """Keys of every JSON type, written the way json.dumps writes them (ASCII or not, compact or not)."""
    out = []
    for i in range(count):
        key = random_value(rng)
        text = json.dumps({"user": {"id": key}}, ensure_ascii=rng.random() < 0.5, separators=rng.choice([None, (",", ":")]))
        out.append(body_case(f"random key {i}", text, shards=rng.choice(SHARD_COUNTS)))
    return out


def fuzz_cases(rng: random.Random, count: int) -> list[dict[str, Any]]:
    """Mutated documents: deletions, insertions, swaps and truncations of valid requests."""
    seeds = ['{"user": {"id": "u-1", "tags": ["a", "b"]}, "n": 1.5e3}', '{"user": {"id": [1, {"x": null}]}, "é": "ü"}',
             '[{"user": {"id": true}}, -0.25e-3, "\\u00e9\\n"]', '{"user":{"id":12345678901234567890},"z":[[],{}]}']
    alphabet = list('{}[]":,.-+eE0123456789 \n\t\\uatrfnlsx') + ["é", "😀", "\x01", "\\u", "\\ud83d"]
    out = []
    for i in range(count):
        text = rng.choice(seeds)
        for _ in range(rng.randint(1, 3)):
            pos = rng.randint(0, len(text))
            op = rng.random()
            if op < 0.35:
                text = text[:pos] + text[pos + 1 :]
            elif op < 0.75:
                text = text[:pos] + rng.choice(alphabet) + text[pos:]
            elif op < 0.9:
                text = text[:pos]
            else:
                text = text[:pos] + text[pos:][::-1]
        out.append(body_case(f"fuzz {i}", text, shards=rng.choice(SHARD_COUNTS)))
    return out


def vectors() -> dict[str, Any]:
    return {
        "about": "Generated by make_vectors.py from the Python runtime; checked by the Go router's tests and tests/test_router_vectors.py.",
        "max_request_bytes": MAX_BYTES,
        "max_json_depth": MAX_DEPTH,
        "jump_hash": [{"key": str(k), "buckets": n, "bucket": jump_hash(k, n)} for k in (0, 1, 2**63, 2**64 - 1, 123456789) for n in SHARD_COUNTS],
        "key_hash": known_answers(),
        "routing": routing_cases(),
        # Balancing and retries: retries 0 (idempotent=False) has no retry policy at all.
        "service_config": [{"retries": r, "burst": b, "config": service_config(r, b)} for r in (0, 1, 2, 4, 10) for b in (5, 256, 1000)],
        # How long a call may take when its gRPC caller's deadline is `left_us` away (a margin of
        # a twentieth, 5-50 ms, so the DEADLINE_EXCEEDED document arrives before the caller's timer).
        "deadline": [
            {"left_us": left, "answer_within_us": round(answer_within(left / 1e6) * 1e6)}
            for left in (0, 3_000, 5_000, 50_000, 100_000, 500_000, 999_000, 1_000_000, 2_000_000, 30_000_000)
        ],
    }


def main() -> int:
    text = json.dumps(vectors(), indent=1, ensure_ascii=False) + "\n"
    if "--check" in sys.argv:
        if OUT.read_text() != text:
            print(f"{OUT} is stale: regenerate it with {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
