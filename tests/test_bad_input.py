"""Bad input, generated (hypothesis) and from a corpus of nasty cases, against the HTTP and the gRPC
entry of every pattern running on the local target; and invalid pattern arguments at deploy time.

Every answer must be a documented status with a JSON error document, no replica may crash or
restart, and every entry must still serve afterwards. The counts are written to
tests/.results/reliability.json.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rel_support as rs
from metaparticle_runtime.payload import wrap

pytestmark = pytest.mark.timeout(300)

LIMIT = 256 * 1024  # max_request_bytes of every pattern but the Service (see the program)
DEFAULT_LIMIT = 4 * 1024 * 1024
MAX_DEPTH = 64
PATTERNS = {
    # name: (kind, request limit)
    "bi-service": ("echo", DEFAULT_LIMIT),
    "bi-spread": ("echo", LIMIT),
    "bi-shard-path": ("shard-path", LIMIT),
    "bi-shard-fn": ("shard-fn", LIMIT),
    "bi-scatter": ("scatter", LIMIT),
    "bi-scatter-partial": ("scatter", LIMIT),
}
FUNCTION_MODES = ("raise", "unserialisable", "bad_request")
KEY_MODES = ("key_raise", "key_set", "key_nan", "key_object")
GATHER_MODES = ("gather_raise",)

#: The statuses an entry may answer bad input with, and the code of the JSON error of each.
HTTP_CODES = {400: {"INVALID_ARGUMENT"}, 413: {"RESOURCE_EXHAUSTED"}, 500: {"UNKNOWN", "INTERNAL"}}
GRPC_CODES = {"INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", "UNKNOWN", "INTERNAL"}

COUNTS: Counter = Counter()


# -- what the answer must be -----------------------------------------------------------------------


class _Invalid(Exception):
    pass


def _reference_decode(body: bytes, limit: int) -> Any:
    """Decodes a request by the documented rules, independently of the runtime: raises _Invalid
    ("size" or "invalid") when the runtime must refuse it."""
    if len(body) > limit:
        raise _Invalid("size")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise _Invalid("invalid") from None

    def constant(name: str) -> Any:
        raise ValueError(name)

    def finite(text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            raise ValueError(text)
        return value

    try:
        value = json.loads(text, parse_constant=constant, parse_float=finite)
    except (ValueError, RecursionError):
        raise _Invalid("invalid") from None
    if _depth(value) > MAX_DEPTH:
        raise _Invalid("invalid")
    return value


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, dict)):
            deepest = max(deepest, depth)
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def _has_user_id(request: Any) -> bool:
    user = request.get("user") if isinstance(request, dict) else None
    return isinstance(user, dict) and "id" in user


def expected(pattern: str, body: bytes) -> tuple[set, Any]:
    """The HTTP statuses allowed for `body` at `pattern`, and the decoded request (or None)."""
    kind, limit = PATTERNS[pattern]
    try:
        request = _reference_decode(body, limit)
    except _Invalid as exc:
        return ({413} if exc.args[0] == "size" else {400}), None
    mode = request.get("mode") if isinstance(request, dict) else None
    if kind == "shard-path" and not _has_user_id(request):
        return {400}, request
    if kind == "shard-fn":
        if not isinstance(request, dict) or mode in KEY_MODES or "k" not in request:
            return {400}, request
    if mode == "bad_request":
        return {400}, request
    if mode in ("raise", "unserialisable"):
        return {500}, request
    if kind == "scatter" and mode in GATHER_MODES:
        return {500}, request
    return {200}, request


def problems(pattern: str, protocol: str, body: bytes, outcome: rs.Outcome) -> list[str]:
    """What is wrong with `outcome` as the answer to `body` (empty: nothing)."""
    allowed, request = expected(pattern, body)
    kind, limit = PATTERNS[pattern]
    found = []
    status = outcome.status
    if protocol == "grpc":
        if status == "UNAVAILABLE" and len(body) > limit and isinstance(outcome.body, str) and "GOAWAY" in outcome.body:
            # The connection was being closed (servers cap connection age) while a message over
            # the limit was still being sent: gRPC resets the stream rather than answer it.
            COUNTS["oversize_reset_by_goaway"] += 1
            status = "RESOURCE_EXHAUSTED"
        http = {"OK": 200, "INVALID_ARGUMENT": 400, "RESOURCE_EXHAUSTED": 413, "UNKNOWN": 500, "INTERNAL": 500}.get(str(status))
        if http is None:
            return [f"undocumented gRPC status {status}: {outcome.body!r:.300}"]
        # Far over the limit, gRPC itself refuses the message before the runtime sees it: no document.
        transport_refusal = status == "RESOURCE_EXHAUSTED" and len(body) > limit + 512
        if transport_refusal and not outcome.json_error:
            COUNTS["grpc_oversize_refused_by_transport"] += 1
        if status != "OK" and not outcome.json_error and not transport_refusal:
            found.append(f"gRPC {status} without a JSON error document: {outcome.body!r:.300}")
        if status != "OK" and outcome.json_error and outcome.body.get("code") != status:
            found.append(f"gRPC {status} with a document of code {outcome.body.get('code')}")
    else:
        http = status
        if status != 200:
            if status not in HTTP_CODES:
                return [f"undocumented HTTP status {status}: {outcome.body!r:.300}"]
            if not outcome.json_error or not isinstance(outcome.body, dict):
                found.append(f"HTTP {status} without a JSON error document: {outcome.body!r:.300}")
            elif outcome.body.get("code") not in HTTP_CODES[status] or not isinstance(outcome.body.get("error"), str):
                found.append(f"HTTP {status} with document {outcome.body!r:.300}")
    if http not in allowed:
        found.append(f"{protocol} answered {status} where {sorted(allowed)} was due: {outcome.body!r:.300}")
    elif http == 200:
        if not isinstance(outcome.body, dict):
            found.append(f"200 with a body that is not a JSON object: {outcome.body!r:.200}")
        elif kind == "echo" and outcome.body.get("echo") != request:
            found.append("the echo differs from the request")
        elif kind == "scatter" and outcome.body.get("leaves") != [0, 1]:
            found.append(f"scatter answered {outcome.body!r:.200}")
    if http == 400 and kind == "shard-path" and request is not None and not _has_user_id(request) and outcome.json_error:
        if outcome.body.get("field") != "user.id" or "user" not in outcome.body.get("error", ""):
            found.append(f"a missing shard key was not named: {outcome.body!r:.300}")
    return found


# -- the running topology --------------------------------------------------------------------------


class Harness:
    """Every pattern of tests/programs/rel_bad_input, with one HTTP and one gRPC client per entry."""

    def __init__(self, topo: rs.Topology) -> None:
        self.topo = topo
        self.loop = asyncio.new_event_loop()
        self.entries = topo.entries()
        assert set(self.entries) == set(PATTERNS), sorted(self.entries)
        self.pids = {name: p.pid for name, p in topo.processes().items()}

        async def make() -> tuple[dict, dict]:
            grpc_clients = {n: rs.GrpcClient(f"{rs.HOST}:{p.grpc_port}") for n, p in self.entries.items()}
            http_clients = {n: rs.HttpClient(f"http://{rs.HOST}:{p.http_port}", concurrency=64) for n, p in self.entries.items()}
            return grpc_clients, http_clients

        self.grpc, self.http = self.loop.run_until_complete(make())
        self.semaphore = asyncio.Semaphore(64)

    async def _send(self, pattern: str, protocol: str, body: bytes) -> rs.Outcome:
        async with self.semaphore:
            if protocol == "grpc":
                return await self.grpc[pattern].json(body, timeout=30)
            return await self.http[pattern].post(body)

    def send_all(self, bodies: list[bytes], patterns: list[str] | None = None) -> list[str]:
        """Sends every body to both entries of every pattern at once; the problems found."""
        jobs = [(p, proto, b) for b in bodies for p in (patterns or list(PATTERNS)) for proto in ("http", "grpc")]

        async def run() -> list:
            return await asyncio.gather(*(self._send(*job) for job in jobs), return_exceptions=True)

        outcomes = self.loop.run_until_complete(run())
        found = []
        for (pattern, protocol, body), outcome in zip(jobs, outcomes):
            COUNTS[f"{protocol}:{pattern}"] += 1
            if isinstance(outcome, BaseException):
                found.append(f"{pattern} {protocol}: {type(outcome).__name__}: {outcome} for {body[:200]!r}")
                continue
            COUNTS[f"status:{outcome.status}"] += 1
            for problem in problems(pattern, protocol, body, outcome):
                found.append(f"{pattern} {protocol}: {problem} -- request {body[:200]!r} ({len(body)} bytes)")
        return found

    def close(self) -> None:
        async def close() -> None:
            for client in [*self.grpc.values(), *self.http.values()]:
                await client.close()

        try:
            self.loop.run_until_complete(close())
        finally:
            self.loop.close()


@pytest.fixture(scope="module")
def harness():
    with rs.Topology("rel_bad_input", ready_timeout=60) as topo:
        h = Harness(topo)
        try:
            yield h
        finally:
            h.close()


# -- generated requests ----------------------------------------------------------------------------

json_leaf = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
json_value = st.recursive(
    json_leaf, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=16
)
modes = st.sampled_from(FUNCTION_MODES + KEY_MODES + GATHER_MODES) | st.text(max_size=6)
request_like = st.fixed_dictionaries(
    {},
    optional={
        "user": json_value | st.fixed_dictionaries({"id": json_value}),
        "k": json_value,
        "mode": modes,
        "q": json_value,
    },
)
valid_json = (json_value | request_like).map(lambda v: json.dumps(v).encode())
valid_json_ascii_off = (json_value | request_like).map(lambda v: json.dumps(v, ensure_ascii=False).encode("utf-8", "surrogatepass"))


def _mutate(args: tuple[bytes, int, bytes, int]) -> bytes:
    body, at, junk, how = args
    at = at % (len(body) + 1)
    if how == 0:
        return body[:at]  # truncated
    if how == 1:
        return body[:at] + junk + body[at:]  # something inserted
    if how == 2:
        return body[:at] + body[at + 1 :]  # a byte dropped
    return body + junk  # trailing garbage


mutated = st.tuples(valid_json, st.integers(0, 1 << 16), st.binary(min_size=1, max_size=4), st.integers(0, 3)).map(_mutate)
BAD_UTF8 = [b"\xff", b"\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf", b"\x80", b"\xe2\x82"]
invalid_utf8 = st.tuples(valid_json, st.sampled_from(BAD_UTF8), st.integers(0, 1 << 16)).map(
    lambda a: a[0][: a[2] % (len(a[0]) + 1)] + a[1] + a[0][a[2] % (len(a[0]) + 1) :]
)


def _nest(args: tuple[int, str]) -> bytes:
    depth, shape = args
    if shape == "list":
        return b"[" * depth + b"]" * depth
    if shape == "object":
        return b'{"a":' * depth + b"1" + b"}" * depth
    if shape == "unclosed":
        return b"[" * depth
    return b'{"user":{"id":' + b"[" * depth + b"]" * depth + b"}}"  # the shard key itself is deep


nested = st.tuples(st.integers(1, 5000), st.sampled_from(["list", "object", "unclosed", "key"])).map(_nest)


def _sized(size: int) -> bytes:
    """A valid JSON request of exactly `size` bytes (> 40)."""
    head = b'{"user":{"id":1},"k":1,"pad":"'
    return head + b"x" * (size - len(head) - 2) + b'"}'


sized = st.integers(LIMIT - 64, LIMIT + 4096).map(_sized)
numbers = st.sampled_from(
    [b"1e999", b"-1e999", b"NaN", b"Infinity", b"-Infinity", b"[NaN]", b'{"k": Infinity}', b"9" * 5000, b"-0", b"1E400", b"0.1e-400", b"01", b"1.", b".5", b"+1"]
)
whitespace = st.sampled_from([b"", b" ", b"\n", b"\t\r\n ", b"\x00", b"\xef\xbb\xbf{}"])
texty = st.text(max_size=60).map(lambda s: s.encode("utf-8", "surrogatepass"))
bodies = st.one_of(
    valid_json, valid_json_ascii_off, mutated, invalid_utf8, nested, numbers, whitespace, texty, st.binary(max_size=200),
    sized,
)

BATCH = 16
EXAMPLES = 55  # 55 x 16 bodies x 6 patterns x 2 entries = 10,560 requests


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture, HealthCheck.large_base_example],
)
@given(batch=st.lists(bodies, min_size=BATCH, max_size=BATCH))
def test_generated_requests_get_documented_answers(harness: Harness, batch: list[bytes]) -> None:
    COUNTS["generated"] += len(batch) * len(PATTERNS) * 2
    found = harness.send_all(batch)
    assert not found, "\n".join(found[:10])


# -- the corpus ------------------------------------------------------------------------------------

CORPUS: list[bytes] = [
    b"",
    b"   \n",
    b"{",
    b"}",
    b"[1,2",
    b'{"a":1}garbage',
    b'{"a":1}{"b":2}',
    b"{'single': 'quotes'}",
    b'{"a":1,}',
    b"[1,]",
    b'{"a" 1}',
    b"undefined",
    b"\xff\xfe\x00\x00",
    b'{"a": "\xc3\x28"}',
    b'"\xed\xa0\x80"',
    b'"\\ud800"',
    b'{"user": {"id": "\\udfff"}, "k": "\\ud800\\udc00"}',
    b'"\\u0000"',
    b"NaN",
    b"[-Infinity]",
    b"1e999",
    b"9" * 5000,
    b"[" * 65 + b"]" * 65,
    b"[" * 64 + b"]" * 64,
    b'{"a":' * 65 + b"1" + b"}" * 65,
    b"[" * 100000,
    b"{" * 100000,
    b'["' + b"[" * 1000 + b'"]',  # brackets in a string are not nesting
    b"[" + b"[]," * 20000 + b"[]]",
    b"null",
    b"true",
    b"0",
    b"[]",
    b'"a string"',
    b"{}",
    b'{"user": null}',
    b'{"user": {}}',
    b'{"user": {"id": null}}',
    b'{"user": {"id": [1, {"a": 2}]}, "k": {"b": [3]}}',
    b'{"user": 5}',
    b'{"user": {"id": 1}, "k": 1, "mode": "raise"}',
    b'{"user": {"id": 1}, "k": 1, "mode": "unserialisable"}',
    b'{"user": {"id": 1}, "k": 1, "mode": "bad_request"}',
    b'{"user": {"id": 1}, "mode": "key_raise"}',
    b'{"user": {"id": 1}, "mode": "key_set"}',
    b'{"user": {"id": 1}, "mode": "key_nan"}',
    b'{"user": {"id": 1}, "mode": "key_object"}',
    b'{"user": {"id": 1}, "k": 1, "mode": "gather_raise"}',
    b'{"user": {"id": 1}, "k": 1}',
    b'{"k": 1}',
    _sized(LIMIT),
    _sized(LIMIT + 1),
    _sized(LIMIT + 600),
    _sized(LIMIT * 4),
    _sized(DEFAULT_LIMIT + 1),
    _sized(DEFAULT_LIMIT * 2),
]


def test_corpus_of_nasty_requests_gets_documented_answers(harness: Harness) -> None:
    COUNTS["corpus"] += len(CORPUS) * len(PATTERNS) * 2
    found = harness.send_all(CORPUS)
    assert not found, "\n".join(found[:10])


def test_specific_errors_name_what_is_wrong(harness: Harness) -> None:
    """A missing shard key names the field; a failing key, function or gather function says so."""

    async def one(pattern: str, body: bytes) -> tuple[rs.Outcome, rs.Outcome]:
        return await harness.http[pattern].post(body), await harness.grpc[pattern].json(body)

    def both(pattern: str, body: bytes) -> tuple[rs.Outcome, rs.Outcome]:
        COUNTS["direct"] += 2
        return harness.loop.run_until_complete(one(pattern, body))

    for http, grpc_ in [both("bi-shard-path", b'{"user": {"name": "x"}}'), both("bi-shard-path", b'{"name": "x"}')]:
        assert http.status == 400 and grpc_.status == "INVALID_ARGUMENT"
        for o in (http, grpc_):
            assert o.body["field"] == "user.id" and "shard key" in o.body["error"], o
    missing_top = both("bi-shard-path", b'{"name": "x"}')[0]
    assert "'user'" in missing_top.body["error"], missing_top
    for body, words in [
        (b'{"mode": "key_raise"}', "key function raised RuntimeError"),
        (b'{"x": 1}', "key function raised KeyError"),
        (b'{"mode": "key_set"}', "cannot be hashed"),
        (b'{"mode": "key_object"}', "cannot be hashed"),
        (b'{"mode": "key_nan"}', "cannot be hashed"),
    ]:
        for o in both("bi-shard-fn", body):
            assert o.status in (400, "INVALID_ARGUMENT") and words in o.body["error"], (body, o)
    for o in both("bi-scatter", b'{"mode": "gather_raise"}'):
        assert o.status in (500, "UNKNOWN") and "gather function" in o.body["error"] and "ValueError" in o.body["error"], o
    for o in both("bi-service", b'{"mode": "raise"}'):
        assert o.status in (500, "UNKNOWN") and "RuntimeError" in o.body["error"], o
    for o in both("bi-spread", b'{"mode": "unserialisable"}'):
        assert o.status in (500, "INTERNAL") and "not JSON-serialisable" in o.body["error"], o
    for o in both("bi-scatter-partial", b'{"mode": "bad_request"}'):
        assert o.status in (400, "INVALID_ARGUMENT") and "refused this request" in o.body["error"], o
    for o in both("bi-spread", b"[" * 65 + b"]" * 65):
        assert o.status in (400, "INVALID_ARGUMENT") and "nested deeper than 64" in o.body["error"], o
    for o in both("bi-spread", _sized(LIMIT + 1)):
        assert o.status in (413, "RESOURCE_EXHAUSTED") and o.body["limit"] == LIMIT, o


def test_http_requests_off_the_api_get_json_errors(harness: Harness) -> None:
    async def run() -> list[rs.Outcome]:
        client = harness.http["bi-service"]
        return [
            await client.post(b"{}", method="GET"),
            await client.post(b"{}", method="PUT"),
            await client.post(b"{}", method="DELETE"),
            await client.post(b"{}", path="/nope"),
            await client.post(b"{}", path="/../../etc/passwd"),
            await client.post(b'{"a": 1}', headers={"Content-Type": "text/plain"}),
            await client.post(b'{"a": 1}', headers={}),
            await client.post(b"", path="/healthz", method="GET"),
        ]

    outcomes = harness.loop.run_until_complete(run())
    COUNTS["direct"] += len(outcomes)
    assert [o.status for o in outcomes] == [405, 405, 405, 404, 404, 200, 200, 200], outcomes
    for o in outcomes[:5]:
        assert o.json_error and isinstance(o.body.get("error"), str) and o.body.get("code"), o


def test_grpc_messages_that_are_not_payloads_get_json_errors(harness: Harness) -> None:
    messages = [b"\xff\xff\xff\xff", b"\x0a\x05ab", b"\x08\x01", b"\x0a", b"\x12\x03abc", b"\x0a\x80\x80\x80\x80\x10", os.urandom(64)]

    async def run() -> list[rs.Outcome]:
        return [await harness.grpc[p].raw(m) for p in PATTERNS for m in messages]

    outcomes = harness.loop.run_until_complete(run())
    COUNTS["direct"] += len(outcomes)
    for o in outcomes:
        assert o.status in ("INVALID_ARGUMENT", "OK"), o
        if o.status != "OK":
            assert o.json_error and o.body["code"] == "INVALID_ARGUMENT", o


def test_no_replica_crashed_and_every_entry_still_serves(harness: Harness) -> None:
    """Runs last in this module: the same processes as at the start, all serving."""
    now = {name: p.pid for name, p in harness.topo.processes().items()}
    assert now == harness.pids, "a replica was restarted"
    log = harness.topo.log()
    assert "exited with code" not in log, log[-3000:]
    assert "| error" not in log and "Traceback" not in log, log[-3000:]
    harness.topo.wait_healthy(timeout=5)
    found = harness.send_all([b'{"user": {"id": 7}, "k": 7, "q": "still serving"}'])
    assert not found, found
    if not COUNTS["generated"]:
        return  # the generated requests were deselected: nothing to report
    assert COUNTS["generated"] >= 10_000
    total = sum(v for k, v in COUNTS.items() if k.startswith(("http:", "grpc:")))
    rs.record(
        "bad_input",
        {
            "requests": total + COUNTS["direct"],
            "generated_requests": COUNTS["generated"],
            "corpus_requests": COUNTS["corpus"] + COUNTS["direct"],
            "entries": len(PATTERNS) * 2,
            "statuses": {k.split(":", 1)[1]: v for k, v in sorted(COUNTS.items()) if k.startswith("status:")},
            "grpc_oversize_reset_by_goaway": COUNTS["oversize_reset_by_goaway"],
            "grpc_oversize_refused_by_transport": COUNTS["grpc_oversize_refused_by_transport"],
            "crashes": 0,
            "restarts": 0,
        },
    )


# -- invalid pattern arguments at deploy time ------------------------------------------------------

BAD_ARGS = {
    "negative_replicas": "Spread 'api': replicas must be a positive integer, got -1",
    "zero_leaves": "ScatterGather 'search': leaves must be a positive integer, got 0",
    "non_callable": "Service 'hello': function must be callable, got int 42",
    "unserialisable": "Spread 'api': function 'locked' cannot be shipped to the runtime: TypeError: cannot pickle '_thread.lock' object",
    "bad_tls": "Service 'hello': tls certificate /nonexistent/role.crt does not exist",
}
#: More invalid arguments, checked through the same evaluation `metaparticle run` does (in-process,
#: which is faster than a CLI process each).
MORE_BAD_ARGS = {
    "zero_shards": "Shard 'users': shards must be a positive integer, got 0",
    "bad_key": "Shard 'users': key must be a function of the request or a JSON field path, got 5",
    "bad_on_missing": "ScatterGather 'search': on_missing must be 'fail' or 'partial', got 'ignore'",
    "bad_timeout": "Service 'hello': timeout must be a positive number of seconds, got -1",
    "unknown_argument": "Service 'hello': unknown argument(s) replicas",
}


def test_invalid_pattern_arguments_fail_metaparticle_run_with_one_clear_message() -> None:
    runs = {}
    for case in BAD_ARGS:
        env = {**os.environ, "REL_BAD_CASE": case, "COLUMNS": "400"}
        runs[case] = subprocess.Popen(
            [sys.executable, "-m", "metaparticle_pulumi", "run", str(rs.PROGRAMS / "rel_bad_args"), "--port", str(rs.free_port())],
            cwd=rs.ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    for case, message in BAD_ARGS.items():
        out, err = runs[case].communicate(timeout=60)
        lines = [line for line in err.splitlines() if line.strip()]
        assert runs[case].returncode == 2, (case, out, err)
        assert len(lines) == 1 and lines[0].startswith("error: "), (case, err)
        assert message in lines[0], (case, lines[0])
        assert "Traceback" not in out + err


@pytest.mark.parametrize("case", sorted(MORE_BAD_ARGS))
def test_more_invalid_pattern_arguments_are_one_line_program_errors(case: str, monkeypatch) -> None:
    from metaparticle_pulumi._program import ProgramError, evaluate

    monkeypatch.setenv("REL_BAD_CASE", case)
    loop = asyncio.new_event_loop()  # Pulumi's evaluation wants a current event loop
    asyncio.set_event_loop(loop)
    try:
        with pytest.raises(ProgramError) as info:
            evaluate(rs.PROGRAMS / "rel_bad_args", target="local", port=rs.free_port())
    finally:
        asyncio.set_event_loop(None)
        loop.close()
    assert str(info.value) == MORE_BAD_ARGS[case] or str(info.value).startswith(MORE_BAD_ARGS[case]), str(info.value)
    assert "\n" not in str(info.value)
    if case == sorted(MORE_BAD_ARGS)[-1]:
        rs.record("invalid_pattern_arguments", {"cases": len(BAD_ARGS) + len(MORE_BAD_ARGS), "cli_cases": len(BAD_ARGS)})
