"""What `metaparticle run` shows of a running topology: every process's Prometheus metrics at the
`metrics_url` the endpoints document lists, and its logs as text or JSON lines."""

from __future__ import annotations

import http.server
import json
import re
import threading
import urllib.error
import urllib.request
from collections import defaultdict
from typing import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import post_json, run_program, wait_until, write_program
from metaparticle_pulumi import _logformat

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


# -- logs -------------------------------------------------------------------------------------------

FAILING = """
import metaparticle_pulumi as mp


def handler(request):
    if request.get("fail"):
        raise ValueError("asked to fail")
    print("plain output", flush=True)
    return request


mp.Spread("api", function=handler, replicas=2)
"""
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


class _Collector(http.server.BaseHTTPRequestHandler):
    """Accepts OTLP/HTTP exports and drops them (the traces are tested in test_tracing)."""

    def do_POST(self) -> None:  # noqa: N802 - the base class names it so
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def collector(monkeypatch) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    try:
        yield url
    finally:
        server.shutdown()


def _failing_request(url: str) -> None:
    request = urllib.request.Request(
        url, data=b'{"fail": true}', method="POST",
        headers={"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01", "Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(request, timeout=10)


def test_json_logs_are_one_object_per_line_with_the_trace_of_the_request(tmp_path, collector):
    program = write_program(tmp_path / "failing", FAILING)
    with run_program(program, "--log-format", "json", tmp=tmp_path) as running:
        _failing_request(running.url)
        assert post_json(running.url, {"ok": 1}).status == 200
        assert wait_until(lambda: "plain output" in running.log() and "asked to fail" in running.log(), 10)
    records = [json.loads(line) for line in running.log().splitlines() if line.strip()]  # every line is JSON
    for record in records:
        assert {"time", "level", "pattern", "role", "replica", "message"} <= set(record), record
    (failure,) = [r for r in records if "asked to fail" in r["message"]]
    assert failure["level"] == "warning" and failure["trace_id"] == TRACE_ID
    assert failure["pattern"] == "Spread" and failure["role"] == "api-replica"
    assert failure["replica"] in ("api-replica-0", "api-replica-1")
    (printed,) = [r for r in records if r["message"] == "plain output"]  # a print of the function
    assert printed["role"] == "api-replica" and printed["pattern"] == "Spread" and "trace_id" not in printed
    own = [r for r in records if r.get("source") == "metaparticle run"]
    assert [r["message"] for r in own][:2] == ["ready", "serving"] and own[1]["url"] == running.url
    assert own[-1]["message"] == "stopped 3 processes"


def test_text_logs_stay_lines_per_replica(tmp_path, collector):
    program = write_program(tmp_path / "failing", FAILING)
    with run_program(program, tmp=tmp_path) as running:
        _failing_request(running.url)
        assert wait_until(lambda: "asked to fail" in running.log(), 10)
    (line,) = [line for line in running.log().splitlines() if "asked to fail" in line]
    assert re.match(r"api-replica-[01] \| warning +function handler raised ValueError: asked to fail", line), line
    assert f"trace_id={TRACE_ID}" in line and "Serving." in running.log()
    assert not [line for line in running.log().splitlines() if line.startswith("{")]


def test_a_runtime_record_keeps_its_fields_and_other_lines_become_messages():
    line = json.dumps({"ts": "2026-01-01T00:00:00.000Z", "level": "info", "pattern": "Shard", "name": "kv",
                       "role": "kv-shard-1", "replica": "kv-shard-1", "msg": "listening", "grpc": "127.0.0.1:5"})
    assert _logformat.record(line, "kv-shard-1") == {
        "time": "2026-01-01T00:00:00.000Z", "level": "info", "pattern": "Shard", "role": "kv-shard-1",
        "replica": "kv-shard-1", "message": "listening", "name": "kv", "grpc": "127.0.0.1:5",
    }
    assert _logformat.text(line) == "info    listening  grpc=127.0.0.1:5"
    note = _logformat.record("exited with code 1; restarting in 0.5s", "kv-shard-1", "Shard", "kv-shard-1")
    assert note["level"] == "warning" and note["message"].startswith("exited") and note["pattern"] == "Shard"
    assert _logformat.text("Traceback (most recent call last):") == "Traceback (most recent call last):"
