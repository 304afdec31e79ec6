"""Consistent sharding: a stable 64-bit key hash and jump consistent hash (Lamping & Veach, 2014).

Jump hash spreads keys evenly (max/mean about 1.01) and, when shards grow from N to N+1, moves only
the 1/(N+1) of keys that the new shard takes: resizing does not reshuffle everyone.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

_MASK = (1 << 64) - 1


def key_hash(key: Any) -> int:
    """A 64-bit hash of a JSON key that is the same in every process (unlike Python's hash()).

    What is hashed (BLAKE2b with an 8-byte digest, read little-endian):
    - a string: its UTF-8 bytes, without quotes;
    - anything else: its compact JSON text (no spaces, object keys sorted), in which a float with an
      integral value is written as that integer, at any depth.
    So equal JSON numbers hash equally (1, 1.0 and 1e0 land on the same shard), true and false are
    not numbers (true is not 1), and a key hashes like the string of its JSON text (42 like "42",
    true like "true", null like "null"). NaN and infinities are refused (ValueError).
    Pinned by known answers in tests/test_hashing.py: changing any of this moves keys between shards.
    """
    if isinstance(key, str):
        data = key.encode("utf-8", "surrogatepass")
    else:
        data = json.dumps(_integral_floats_as_ints(key), sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def _integral_floats_as_ints(value: Any) -> Any:
    """`value` with every float that equals an integer replaced by that integer (1.0 -> 1)."""
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, dict):
        return {k: _integral_floats_as_ints(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_integral_floats_as_ints(v) for v in value]
    return value


def jump_hash(key: int, buckets: int) -> int:
    """The bucket in [0, buckets) of a 64-bit key."""
    if buckets < 1:
        raise ValueError("buckets must be at least 1")
    b, j = -1, 0
    key &= _MASK
    while j < buckets:
        b = j
        key = (key * 2862933555777941757 + 1) & _MASK
        j = int((b + 1) * ((1 << 31) / ((key >> 33) + 1)))
    return b


def shard_for(key: Any, shards: int) -> int:
    """The shard that owns `key`."""
    return jump_hash(key_hash(key), shards)


def key_at_path(request: Any, path: str) -> Any:
    """The value at a dotted JSON field path ("user.id"); KeyError naming the field when missing."""
    value = request
    walked = []
    for part in path.split("."):
        walked.append(part)
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise KeyError(".".join(walked))
    return value
