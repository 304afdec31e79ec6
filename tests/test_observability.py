"""What `metaparticle run` shows of a running topology: every process's Prometheus metrics at the
`metrics_url` the endpoints document lists."""

from __future__ import annotations

import urllib.request
from collections import defaultdict

from prometheus_client.parser import text_string_to_metric_families

from conftest import post_json, run_program, write_program

TWO_PATTERNS = """
import metaparticle_pulumi as mp


def echo(request):
    return {"echo": request}


def leaf(request, ctx):
    return [ctx.index]


def gather(results):
    return sorted(i for part in results for i in part)


mp.Spread("api", function=echo, replicas=3)
mp.ScatterGather("search", leaf=leaf, gather=gather, leaves=3)
"""


def scrape(url: str) -> dict[str, float]:
    """`metaparticle_requests_total` by code, from one process's metrics."""
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    counts: dict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "metaparticle_requests_total":
                counts[sample.labels["code"]] += sample.value
    return counts


def test_every_process_serves_its_metrics_and_the_counts_add_up(tmp_path):
    program = write_program(tmp_path / "two", TWO_PATTERNS)
    with run_program(program, tmp=tmp_path) as running:
        api, search = running.pattern("api"), running.pattern("search")
        for i in range(7):
            assert post_json(api["url"], {"i": i}).status == 200
        for i in range(5):
            reply = post_json(search["url"], {"q": i})
            assert reply.status == 200 and reply.body == [0, 1, 2]

        urls = {}
        for pattern in running.endpoints["patterns"]:
            for role in pattern["roles"]:
                assert len(role["processes"]) == len(role["grpc_ports"])
                for process in role["processes"]:
                    urls[process["name"]] = process["metrics_url"]
                if role["entry"]:
                    assert role["processes"][0]["metrics_url"] == pattern["url"] + "/metrics"
        assert len(set(urls.values())) == len(urls) == 1 + 3 + 1 + 3  # a port of its own each

        ok = {name: scrape(url)["OK"] for name, url in urls.items()}
        assert ok["api-router"] == 7
        assert sum(ok[f"api-replica-{i}"] for i in range(3)) == 7
        assert ok["search-root"] == 5
        for i in range(3):
            assert ok[f"search-leaf-{i}"] == 5  # every leaf answers every query
