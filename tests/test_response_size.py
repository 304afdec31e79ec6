"""`max_response_bytes`: one limit on every hop (function server, router and root channels), an
error naming the limit and the role when a result is larger, and results up to it pass routers."""

from __future__ import annotations

import asyncio
import json

import pytest

import rel_support as rs
from metaparticle_runtime.config import RuntimeConfig
from metaparticle_runtime.errors import RoleError
from metaparticle_runtime.payload import encode

pytestmark = pytest.mark.timeout(150)

MIB = 1024 * 1024


def test_the_default_is_16_mib_and_it_travels_in_the_environment():
    assert RuntimeConfig.max_response_bytes == 16 * MIB
    cfg = RuntimeConfig(role="function", function="m:f", replica="r", max_response_bytes=2 * MIB)
    assert cfg.to_env()["MP_MAX_RESPONSE_BYTES"] == str(2 * MIB)
    assert RuntimeConfig.from_env(cfg.to_env()).max_response_bytes == 2 * MIB


def test_a_result_over_the_limit_is_an_error_naming_it_and_the_role():
    with pytest.raises(RoleError) as info:
        encode("x" * 2000, max_bytes=1024, role="api-replica")
    err = info.value
    assert err.code.name == "RESOURCE_EXHAUSTED" and err.http_status == 500
    assert "max_response_bytes (1024)" in err.message and "api-replica" in err.message
    assert err.details["limit"] == 1024 and err.details["role"] == "api-replica"
    assert encode("x" * 1000, max_bytes=1024) == b'"' + b"x" * 1000 + b'"'


@pytest.fixture(scope="module")
def topo():
    with rs.Topology("dp_response") as t:
        t.wait_healthy()
        yield t


def _call(topo: rs.Topology, pattern: str, size: int) -> tuple[rs.Outcome, rs.Outcome]:
    entry = topo.entry(pattern)
    body = json.dumps({"bytes": size}).encode()

    async def run():
        client = rs.GrpcClient(f"{rs.HOST}:{entry.grpc_port}")
        http = rs.HttpClient(f"http://{rs.HOST}:{entry.http_port}")
        try:
            return await client.json(body), await http.post(body)
        finally:
            await client.close()
            await http.close()

    return rs.run(run())


def test_a_10_mib_result_passes_a_spread_router(topo: rs.Topology) -> None:
    """Router channels accepted max_request_bytes + 1 KiB (4 MiB) of reply before: this was 429."""
    for outcome in _call(topo, "dp-big", 10 * MIB):
        assert outcome.ok, (outcome.status, str(outcome.body)[:300])
        assert len(outcome.body["data"]) == 10 * MIB


def test_a_result_over_the_limit_answers_an_error_naming_it_through_the_router(topo: rs.Topology) -> None:
    grpc_outcome, http_outcome = _call(topo, "dp-small", 3 * MIB)
    assert grpc_outcome.status == "RESOURCE_EXHAUSTED" and http_outcome.status == 500
    for outcome in (grpc_outcome, http_outcome):
        assert outcome.json_error, outcome
        assert "max_response_bytes (2097152)" in outcome.body["error"], outcome.body
        assert outcome.body["role"] == "dp-small-replica" and outcome.body["limit"] == 2 * MIB, outcome.body
    for outcome in _call(topo, "dp-small", 2 * MIB - 100):
        assert outcome.ok, (outcome.status, str(outcome.body)[:300])


def test_leaf_results_and_the_merged_result_share_the_limit(topo: rs.Topology) -> None:
    """Two 6 MiB leaf results pass the root's channels; their 12 MiB merge passes too; two 9 MiB
    leaves (18 MiB merged) are refused naming the root."""
    for outcome in _call(topo, "dp-join", 6 * MIB):
        assert outcome.ok and len(outcome.body["data"]) == 12 * MIB, (outcome.status, str(outcome.body)[:300])
    grpc_outcome, http_outcome = _call(topo, "dp-join", 9 * MIB)
    for outcome in (grpc_outcome, http_outcome):
        assert outcome.status in ("RESOURCE_EXHAUSTED", 500), outcome.status
        assert "max_response_bytes" in outcome.body["error"] and outcome.body["role"] == "dp-join-root", outcome.body
