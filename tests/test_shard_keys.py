"""A shard key function runs off the router's event loop, within the request's deadline."""

from __future__ import annotations

import asyncio
import json

import pytest

import rel_support as rs

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def keys():
    with rs.Topology("dp_keys") as topo:
        topo.wait_healthy()
        yield topo


def test_a_slow_key_function_answers_504_at_the_deadline_and_stalls_no_other_request(keys: rs.Topology) -> None:
    async def run():
        client = rs.GrpcClient(keys.grpc_target)
        try:
            slow = asyncio.ensure_future(client.json(json.dumps({"user": "a", "key_sleep": 3}).encode()))
            await asyncio.sleep(0.05)
            quick = [await client.json(json.dumps({"user": f"u{i}"}).encode(), i) for i in range(10)]
            return await slow, quick
        finally:
            await client.close()

    slow, quick = rs.run(run())
    assert slow.status == "DEADLINE_EXCEEDED" and 0.4 < slow.latency < 0.9, slow
    assert "key function" in slow.body["error"], slow.body
    # Before, the key function ran on the router's loop: these waited the whole 3 s.
    assert all(o.ok for o in quick) and max(o.latency for o in quick) < 0.3, quick


def test_equal_numeric_keys_reach_the_same_shard(keys: rs.Topology) -> None:
    async def run():
        client = rs.GrpcClient(keys.grpc_target)
        try:
            return [
                [(await client.json(json.dumps({"user": k}).encode())).body["shard"] for k in pair]
                for pair in ([7, 7.0], [10**20, 1e20], [{"id": 3}, {"id": 3.0}])
            ]
        finally:
            await client.close()

    for pair in rs.run(run()):
        assert pair[0] == pair[1], pair
