"""Consistent sharding: even spread, minimal movement on resize, the same hash in every process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import pytest

from metaparticle_runtime.hashing import jump_hash, key_at_path, key_hash, shard_for

KEYS = [f"user-{i}" for i in range(100_000)]


def test_jump_hash_spreads_100k_keys_evenly_over_10_shards():
    counts = Counter(shard_for(key, 10) for key in KEYS)
    assert sorted(counts) == list(range(10))
    mean = len(KEYS) / 10
    assert max(counts.values()) / mean <= 1.05, counts


def test_growing_from_10_to_11_shards_moves_only_the_keys_the_new_shard_takes():
    moved = [key for key in KEYS if shard_for(key, 10) != shard_for(key, 11)]
    assert len(moved) <= 1.1 * len(KEYS) / 11
    # The new shard takes its share and nothing else moves between the old shards.
    assert len(moved) >= 0.9 * len(KEYS) / 11
    assert {shard_for(key, 11) for key in moved} == {10}


def test_jump_hash_stays_in_range_for_every_bucket_count():
    for buckets in (1, 2, 3, 7, 64, 1000):
        assert all(0 <= jump_hash(key_hash(k), buckets) < buckets for k in KEYS[:2000])
    assert {jump_hash(key_hash(k), 1) for k in KEYS[:100]} == {0}


def test_jump_hash_refuses_zero_buckets():
    with pytest.raises(ValueError):
        jump_hash(1, 0)


KEY_SAMPLES = ["alice", "", "ünïcödé ✓", 42, -7, 3.5, True, None, ["a", 1], {"b": 2, "a": [1, {"z": None}]}]


def test_key_hash_is_the_same_in_another_process_with_another_hash_seed():
    script = (
        "import json, sys\n"
        "from metaparticle_runtime.hashing import key_hash\n"
        "print(json.dumps([key_hash(k) for k in json.loads(sys.stdin.read())]))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", script], input=json.dumps(KEY_SAMPLES), capture_output=True, text=True, env=env, timeout=30, check=True
    )
    assert json.loads(out.stdout) == [key_hash(k) for k in KEY_SAMPLES]


def test_key_hash_of_an_object_ignores_field_order():
    assert key_hash({"a": 1, "b": 2}) == key_hash({"b": 2, "a": 1})


def test_key_hash_tells_different_keys_apart():
    hashes = [key_hash(k) for k in KEY_SAMPLES]
    assert len(set(hashes)) == len(hashes)
    assert all(0 <= h < 2**64 for h in hashes)
    assert len({key_hash(k) for k in KEYS[:10_000]}) == 10_000


def test_key_hash_refuses_keys_json_cannot_express():
    with pytest.raises(ValueError):
        key_hash(float("nan"))
    with pytest.raises(TypeError):
        key_hash({1, 2})


def test_key_at_path_walks_objects_and_list_indexes():
    request = {"user": {"id": "u1", "tags": ["x", "y"]}, "0": "zero"}
    assert key_at_path(request, "user.id") == "u1"
    assert key_at_path(request, "user") == {"id": "u1", "tags": ["x", "y"]}
    assert key_at_path(request, "user.tags.1") == "y"
    assert key_at_path(request, "0") == "zero"


def test_key_at_path_keeps_falsy_values():
    assert key_at_path({"user": {"id": 0}}, "user.id") == 0
    assert key_at_path({"user": None}, "user") is None


@pytest.mark.parametrize(
    "request_, path, missing",
    [
        ({}, "user", "user"),
        ({"user": {}}, "user.id", "user.id"),
        ({"user": "bob"}, "user.id", "user.id"),
        ({"user": {"tags": ["x"]}}, "user.tags.3", "user.tags.3"),
        ({"user": {"tags": ["x"]}}, "user.tags.first", "user.tags.first"),
        (["a"], "user", "user"),
        ("text", "user.id", "user"),
    ],
)
def test_key_at_path_names_the_first_missing_field(request_, path, missing):
    with pytest.raises(KeyError) as info:
        key_at_path(request_, path)
    assert info.value.args[0] == missing


# -- known answers: a change here moves keys between shards during a rolling upgrade ------------------

#: key -> (key_hash, shard_for with 1, 2, 3, 10 and 1000 shards), computed once and pinned.
KNOWN_KEYS = [
    ("", 13020603013274838756, [0, 0, 2, 6, 987]),
    ("user-42", 12029086546990375023, [0, 1, 1, 9, 897]),
    ("ü", 3976460501203677525, [0, 0, 0, 9, 681]),
    (0, 8493733112532773764, [0, 0, 0, 0, 279]),
    (1, 8518482412311870710, [0, 1, 2, 4, 891]),
    (-7, 1742748123310498148, [0, 0, 0, 8, 296]),
    (2**70, 16213371291910180463, [0, 1, 1, 9, 540]),
    (1.5, 3831814941423113338, [0, 0, 2, 5, 993]),
    (True, 4608981236071098869, [0, 0, 0, 3, 562]),
    (None, 7985457161556883059, [0, 1, 1, 3, 128]),
    ([1, "a"], 3391806434102023716, [0, 1, 1, 6, 230]),
    ({"b": 1, "a": [2]}, 6998724998086459368, [0, 1, 1, 6, 958]),
]


@pytest.mark.parametrize("key, hashed, shards", KNOWN_KEYS, ids=[repr(k[0]) for k in KNOWN_KEYS])
def test_key_hash_and_shard_for_give_their_known_answers(key, hashed, shards):
    assert key_hash(key) == hashed
    assert [shard_for(key, n) for n in (1, 2, 3, 10, 1000)] == shards


def test_jump_hash_gives_the_answers_of_the_papers_reference_implementation():
    # From the C code of Lamping & Veach (2014), compiled and run on these inputs.
    assert [jump_hash(1, n) for n in (1, 2, 10, 100, 1 << 20)] == [0, 0, 6, 55, 985611]
    assert [jump_hash(0xDEADBEEF, n) for n in (1, 2, 10, 100, 1 << 20)] == [0, 1, 5, 87, 479362]
    assert [jump_hash(2**64 - 1, n) for n in (1, 2, 10, 100, 1 << 20)] == [0, 1, 9, 92, 589430]
    assert [jump_hash(0, n) for n in (1, 2, 10, 100, 1 << 20)] == [0, 0, 0, 0, 0]


@pytest.mark.parametrize(
    "a, b",
    [(1, 1.0), (0, -0.0), (10**20, 1e20), ([1, {"x": 2}], [1.0, {"x": 2.0}]), ({"n": 3}, {"n": 3.0}), (42, "42")],
)
def test_equal_json_numbers_hash_equally(a, b):
    assert key_hash(a) == key_hash(b)


@pytest.mark.parametrize("a, b", [(True, 1), (False, 0), (1.5, 1), ("1.0", 1)])
def test_different_json_values_hash_differently(a, b):
    assert key_hash(a) != key_hash(b)
