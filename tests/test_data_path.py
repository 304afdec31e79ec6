"""The runtime's data path on the local target: decoding that neither blocks the event loop nor
blows up memory (function servers, shard routers, gather roots all decode JSON)."""

from __future__ import annotations

import asyncio
import time

import pytest

import rel_support as rs

pytestmark = pytest.mark.timeout(150)

MIB = 1024 * 1024
#: 4 MiB of `[[],[],...]`: ~1.4 million empty lists, ~90 MiB of objects if decoded.
LISTS = b"[" + b",".join([b"[]"] * (4 * MIB // 3 - 1)) + b"]"


@pytest.fixture(scope="module")
def decode_topo():
    with rs.Topology("dp_decode") as topo:
        topo.wait_healthy()
        yield topo


@pytest.mark.parametrize("pattern", ["dp-svc", "dp-shard", "dp-sg"])
def test_huge_list_bodies_neither_block_small_requests_nor_grow_memory(decode_topo: rs.Topology, pattern: str) -> None:
    """Three concurrent 4 MiB `[[],...]` bodies are refused (RESOURCE_EXHAUSTED naming the limit)
    while small requests to the same entry keep answering fast, and the entry's RSS barely moves."""
    assert len(LISTS) <= 4 * MIB
    entry = decode_topo.entry(pattern)
    target = f"{rs.HOST}:{entry.grpc_port}"

    async def run():
        client = rs.GrpcClient(target)
        for i in range(20):
            assert (await client.json(b'{"n": 1}', i)).ok
        baseline = rs.rss_kib(entry.pid)
        peak = baseline
        small: list[rs.Outcome] = []
        done = False

        async def smalls() -> None:
            i = 0
            while not done:
                small.append(await client.json(b'{"n": %d}' % i, i))
                i += 1

        async def sample() -> None:
            nonlocal peak
            while not done:
                peak = max(peak, rs.rss_kib(entry.pid))
                await asyncio.sleep(0.01)

        background = [asyncio.ensure_future(smalls()), asyncio.ensure_future(sample())]
        await asyncio.sleep(0.1)
        big_clients = [rs.GrpcClient(target) for _ in range(3)]
        for _ in range(2):
            big = await asyncio.gather(*(c.json(LISTS, i) for i, c in enumerate(big_clients)))
        await asyncio.sleep(0.1)
        done = True
        await asyncio.gather(*background)
        for c in big_clients:
            await c.close()
        await client.close()
        return big, small, baseline, peak

    big, small, baseline, peak = rs.run(run())
    assert small and all(o.ok for o in small), [o for o in small if not o.ok][:3]
    worst = max(o.latency for o in small)
    rs.record(f"decode_{pattern}", {"small_requests": len(small), "small_max_ms": round(1000 * worst, 1),
                                    "rss_growth_mib": round((peak - baseline) / 1024, 1)})
    # Small requests waited 3.5-5 s behind these bodies before (each held the loop 0.5-1 s); a
    # refusal now costs ~2-10 ms of loop time. The bound leaves room for a busy 2-core machine.
    assert worst < 1.0, f"a small request waited {worst:.3f}s behind the big ones"
    # Decoding them grew RSS by 330-400 MiB before; what remains is the 4 MiB messages, their copies
    # (gRPC buffers, the Payload and its json field) and what malloc keeps of them.
    assert peak - baseline < 128 * 1024, f"RSS grew from {baseline} KiB to {peak} KiB"
    for outcome in big:
        assert outcome.status == "RESOURCE_EXHAUSTED", outcome
        assert "decode" in outcome.body["error"] and outcome.body["limit"] == 8 * 4 * MIB
