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
    """A 64-bit hash of a JSON key that is the same in every process (unlike Python's hash())."""
    if isinstance(key, str):
        data = key.encode("utf-8", "surrogatepass")
    else:
        data = json.dumps(key, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


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
