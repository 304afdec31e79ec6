"""Decoding requests: every refusal is a RoleError with the gRPC code (and HTTP status) it deserves."""

from __future__ import annotations

import json

import grpc
import pytest

from metaparticle_runtime.errors import RoleError
from metaparticle_runtime.payload import _DICT_COST, decode, decoded_size_estimate, encode, unwrap, wrap

LIMIT = 1024
DEPTH = 8


def refusal(data: bytes, *, max_bytes: int = LIMIT, max_depth: int = DEPTH) -> RoleError:
    with pytest.raises(RoleError) as info:
        decode(data, max_bytes=max_bytes, max_depth=max_depth)
    return info.value


def test_a_valid_document_decodes_to_its_value():
    doc = {"q": "pulumi", "n": [1, 2.5, None, True], "ü": "✓"}
    assert decode(json.dumps(doc).encode(), max_bytes=LIMIT, max_depth=DEPTH) == doc


def test_a_body_over_the_size_limit_is_resource_exhausted_and_413():
    err = refusal(b'"' + b"x" * LIMIT + b'"')
    assert err.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert err.http_status == 413
    assert err.document()["limit"] == LIMIT
    assert str(LIMIT) in err.message


def test_a_body_of_exactly_the_size_limit_is_accepted():
    body = b'"' + b"x" * (LIMIT - 2) + b'"'
    assert len(body) == LIMIT
    assert decode(body, max_bytes=LIMIT, max_depth=DEPTH) == "x" * (LIMIT - 2)


def test_nesting_deeper_than_the_limit_is_invalid_argument():
    err = refusal(b"[" * (DEPTH + 1) + b"]" * (DEPTH + 1))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.http_status == 400
    assert "deeper" in err.message and str(DEPTH) in err.message


def test_nesting_of_exactly_the_limit_is_accepted():
    body = b'{"a":' * (DEPTH - 1) + b"[1]" + b"}" * (DEPTH - 1)
    value = decode(body, max_bytes=LIMIT, max_depth=DEPTH)
    for _ in range(DEPTH - 1):
        value = value["a"]
    assert value == [1]


def test_brackets_inside_strings_do_not_count_as_nesting():
    text = '[{"s": "' + "[{" * 50 + '\\"]}\\\\"}]'
    assert decode(text.encode(), max_bytes=LIMIT, max_depth=DEPTH) == [{"s": "[{" * 50 + '"]}\\'}]


def test_many_shallow_siblings_are_not_mistaken_for_depth():
    body = json.dumps([[i] for i in range(50)]).encode()
    assert len(decode(body, max_bytes=LIMIT, max_depth=2)) == 50


@pytest.mark.parametrize("body", [b"\xff", b'{"a": "\xc3"}', b'"\xed\xa0\x80"'])
def test_invalid_utf8_is_invalid_argument(body):
    err = refusal(body)
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "UTF-8" in err.message


@pytest.mark.parametrize("body", [b"NaN", b"[Infinity]", b'{"x": -Infinity}', b"[1e999]", b'{"x": -1e400}'])
def test_non_finite_numbers_are_invalid_argument(body):
    err = refusal(body)
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.http_status == 400


@pytest.mark.parametrize("body", [b"", b"   ", b"\n\t "])
def test_an_empty_body_is_invalid_argument_and_says_so(body):
    err = refusal(body)
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "empty" in err.message


@pytest.mark.parametrize("body", [b'{"a":', b"{'a': 1}", b"[1,]", b"hello", b'{"a": 1} trailing'])
def test_malformed_json_is_invalid_argument_naming_the_problem(body):
    err = refusal(body)
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.message.startswith("request body is not valid JSON")


def test_every_refusal_is_a_json_error_document():
    for body in (b"", b"\xff", b"NaN", b"[" * 20, b"x" * 2000):
        doc = json.loads(json.dumps(refusal(body).document()))
        assert set(doc) >= {"error", "code"}
        assert doc["code"] in grpc.StatusCode.__members__


def test_a_payload_round_trips_its_json_bytes_unchanged():
    for data in (b"{}", b'{"a":[1,2]}', "\"ü\"".encode(), b""):
        assert unwrap(wrap(data)) == data


def test_bytes_that_are_not_a_payload_message_are_invalid_argument():
    with pytest.raises(RoleError) as info:
        unwrap(b"\xff\xff\xff\xff")
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_a_result_json_cannot_express_is_internal_and_names_its_type():
    with pytest.raises(RoleError) as info:
        encode({"when": object()})
    assert info.value.code == grpc.StatusCode.INTERNAL
    assert info.value.http_status == 500
    with pytest.raises(RoleError):
        encode(float("nan"))
    assert encode({"a": [1, "ü"]}) == b'{"a":[1,"\\u00fc"]}'


# -- what a body may cost once decoded ---------------------------------------------------------------

MIB = 1024 * 1024


def test_four_mib_of_empty_lists_is_refused_before_any_object_is_built():
    """4 MiB of `[[],[],...]` would be ~90 MiB of lists: refused in milliseconds, at almost no cost."""
    import time
    import tracemalloc

    body = b"[" + b",".join([b"[]"] * (4 * MIB // 3 - 1)) + b"]"
    tracemalloc.start()
    start = time.perf_counter()
    err = refusal(body, max_bytes=4 * MIB, max_depth=64)
    took = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert err.code == grpc.StatusCode.RESOURCE_EXHAUSTED and err.http_status == 413
    assert err.details["limit"] == 8 * 4 * MIB and "decode" in err.message
    assert peak < 2 * len(body), f"refusing allocated {peak} bytes"  # decoding built ~90 MiB
    assert took < 0.1, f"refusing took {took:.3f}s"  # json.loads alone took 0.2-0.5 s


@pytest.mark.parametrize(
    "item", [b'"ab"', b'{"id":1,"name":"xyz"}', b'[]', b'""'], ids=["short-strings", "small-objects", "lists", "empty-strings"]
)
def test_dense_bodies_over_eight_times_the_limit_are_refused_and_lighter_ones_decode(item):
    limit = 256 * 1024
    heavy = b"[" + b",".join([item] * (limit // (len(item) + 1) - 1)) + b"]"
    assert refusal(heavy, max_bytes=limit, max_depth=64).code == grpc.StatusCode.RESOURCE_EXHAUSTED
    light = b"[" + b",".join([item] * (limit // (len(item) + 1) // 4)) + b"]"
    assert len(decode(light, max_bytes=limit, max_depth=64)) == limit // (len(item) + 1) // 4


def test_brackets_and_quotes_inside_strings_do_not_count_as_objects():
    text = '[{\\"a\\":[1]},' * (300 * 1024 // 14)
    body = json.dumps({"text": text}).encode()
    assert len(body) < 400 * 1024
    assert decode(body, max_bytes=400 * 1024, max_depth=4) == {"text": text}


def test_the_size_estimate_is_close_to_what_json_builds():
    import tracemalloc

    from metaparticle_runtime.payload import decoded_size_estimate

    for body in (
        b"[" + b",".join([b"[]"] * 20000) + b"]",
        b"[" + b",".join([b'{"id":1,"name":"xyz"}'] * 5000) + b"]",
        b"[" + b",".join([b'"ab"'] * 20000) + b"]",
    ):
        tracemalloc.start()
        value = json.loads(body)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        del value
        assert 0.7 * peak < decoded_size_estimate(body) < 2 * peak


@pytest.mark.parametrize(
    "body",
    [b"[" * 100_000, b"[" * 50_000 + b"]" * 50_000, b'{"a":' * 30_000 + b"1" + b"}" * 30_000, b'[{"k":"x","v":' * 30_000],
    ids=["unclosed", "balanced", "objects", "with-strings"],
)
def test_deep_bodies_are_told_they_are_too_deep_even_when_also_too_large(body):
    err = refusal(body, max_bytes=len(body) + 10, max_depth=64)
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT and "nested deeper than 64" in err.message


def test_unbalanced_but_shallow_input_is_named_by_the_json_parser():
    err = refusal(b"[]" * 10 + b"]" * 5, max_bytes=LIMIT, max_depth=DEPTH)
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT and "not valid JSON" in err.message


def test_no_byte_adds_more_to_the_size_estimate_than_an_opening_brace():
    """What lets small bodies skip the size estimate: a body of n bytes is estimated at no more than
    n times an opening brace's cost, so one under limit x 8 / that cost cannot be over the budget."""
    patterns = [bytes([b]) for b in range(256)] + [b'"', b'""', b'":', b'"":', b'{"":', b'[],', b'{},', b'"",', b'[""]']
    for pattern in patterns:
        body = pattern * (4096 // len(pattern))
        assert decoded_size_estimate(body) <= len(body) * _DICT_COST, pattern


@pytest.mark.parametrize("item", [b"{}", b"[]", b'""'])
def test_the_densest_bodies_around_the_skip_bound_are_still_refused(item):
    """Small limits put dense bodies of a few kB over the budget: they take the full estimate."""
    limit = 2048
    body = b"[" + b",".join([item] * (limit // (len(item) + 1) - 1)) + b"]"
    assert len(body) <= limit
    assert refusal(body, max_bytes=limit, max_depth=64).code == grpc.StatusCode.RESOURCE_EXHAUSTED
