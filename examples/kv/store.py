"""The key-value store's shard: each key's value is one file under `ctx.storage`, written durably
(temporary file, fsync, rename, fsync of the directory) before the answer.

Requests: {"op": "put", "key": "k", "value": <any JSON>}, {"op": "get", "key": "k"},
{"op": "delete", "key": "k"}.
"""

import hashlib
import json

import metaparticle_pulumi as mp


def _path(ctx, key):
    # Keys are any string: the file name is their hash (no path tricks, no length limit).
    return ctx.storage / (hashlib.sha256(key.encode("utf-8")).hexdigest() + ".json")


def handle(request, ctx):
    if not isinstance(request, dict) or not isinstance(request.get("key"), str) or not request["key"]:
        raise mp.BadRequest('a request is {"op": "put"|"get"|"delete", "key": "<non-empty string>", ...}')
    op, key = request.get("op"), request["key"]
    path = _path(ctx, key)
    if op == "put":
        if "value" not in request:
            raise mp.BadRequest("put needs a value")
        mp.write_durably(path, json.dumps({"key": key, "value": request["value"]}))
        return {"ok": True, "key": key, "shard": ctx.index}
    if op == "get":
        try:
            stored = json.loads(path.read_text())
        except FileNotFoundError:
            return {"found": False, "key": key, "shard": ctx.index}
        return {"found": True, "key": key, "value": stored["value"], "shard": ctx.index}
    if op == "delete":
        return {"deleted": mp.remove_durably(path), "key": key, "shard": ctx.index}
    raise mp.BadRequest(f"op must be put, get or delete, got {op!r}")
