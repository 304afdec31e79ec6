"""Prometheus metrics of a role: what a scrape of the HTTP entry's `GET /metrics` (and of a role's
own metrics port) says after known traffic."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from metaparticle_runtime.config import RuntimeConfig

from conftest import free_port, wait_until

ROOT = Path(__file__).resolve().parents[1]
HANDLERS = """
import time

def handler(request):
    if request.get("fail"):
        raise ValueError("asked to fail")
    time.sleep(request.get("sleep", 0))
    return request
"""


def _post(port: int, body: bytes) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/", data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status
    except urllib.error.HTTPError as err:
        return err.code


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        assert reply.headers["Content-Type"].startswith("text/plain")
        text = reply.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.fixture
def function_role(tmp_path) -> Iterator[RuntimeConfig]:
    (tmp_path / "handlers.py").write_text(HANDLERS)
    config = RuntimeConfig(
        role="function", pattern="Service", name="api", role_name="api", replica="api-0",
        function="handlers:handler", source_dir=str(tmp_path), bind_host="127.0.0.1",
        grpc_port=free_port(), http_port=free_port(), metrics_port=free_port(), max_in_flight=1, threads=2,
    )
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MP_")}, **config.to_env()}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "runtime"), env.get("PYTHONPATH", "")])
    process = subprocess.Popen([sys.executable, "-m", "metaparticle_runtime"], env=env, stderr=subprocess.PIPE)
    try:
        assert wait_until(lambda: _healthy(config.http_port) or process.poll() is not None, 30, 0.05)
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        yield config
    finally:
        process.terminate()
        process.wait(timeout=30)


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as reply:
            return reply.status == 200
    except OSError:
        return False


def test_every_answer_counts_once_by_status_with_its_duration(function_role):
    port = function_role.http_port
    statuses = [_post(port, json.dumps({"i": i}).encode()) for i in range(5)]
    statuses += [_post(port, b"{not json"), _post(port, b'{"fail": true}')]
    slow = threading.Thread(target=_post, args=(port, b'{"sleep": 1.0}'))
    slow.start()
    assert wait_until(lambda: _scrape(port)[("metaparticle_in_flight", (("pattern", "Service"), ("role", "api")))] == 1, 5, 0.02)
    refused = _post(port, b'{"i": 99}')
    slow.join()
    assert statuses == [200] * 5 + [400, 500] and refused == 429

    samples = _scrape(port)
    base = (("pattern", "Service"), ("role", "api"))

    def requests(code: str) -> float:
        return samples.get(("metaparticle_requests_total", tuple(sorted(base + (("code", code),)))), 0.0)

    assert requests("OK") == 6  # five, then the slow one
    assert requests("INVALID_ARGUMENT") == 1
    assert requests("RESOURCE_EXHAUSTED") == 1
    assert requests("UNKNOWN") == 1  # the function raised
    assert sum(v for (name, labels), v in samples.items() if name == "metaparticle_requests_total") == 9
    assert samples[("metaparticle_refused_total", base)] == 1
    assert samples[("metaparticle_in_flight", base)] == 0
    assert samples[("metaparticle_request_duration_seconds_count", base)] == 9
    # The slow call took a second: it sits above the 0.5 s bucket, everything else below.
    assert samples[("metaparticle_request_duration_seconds_bucket", tuple(sorted(base + (("le", "0.5"),))))] == 8
    assert samples[("metaparticle_request_duration_seconds_sum", base)] >= 1.0


def test_the_metrics_port_serves_the_same_registry(function_role):
    assert _post(function_role.http_port, b'{"x": 1}') == 200
    own = _scrape(function_role.metrics_port)
    assert own[("metaparticle_requests_total", (("code", "OK"), ("pattern", "Service"), ("role", "api")))] == 1
    assert {name for name, _ in own} == {name for name, _ in _scrape(function_role.http_port)}


def test_the_metrics_port_answers_the_replicas_own_health_and_turns_503_on_drain(tmp_path):
    """What a kubelet's httpGet probe sees under mutual TLS: 200 while SERVING, 503 once draining."""
    (tmp_path / "handlers.py").write_text(HANDLERS)
    config = RuntimeConfig(
        role="function", function="handlers:handler", source_dir=str(tmp_path), bind_host="127.0.0.1",
        grpc_port=free_port(), metrics_port=free_port(), drain_seconds=3.0,
    )
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MP_")}, **config.to_env()}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "runtime"), env.get("PYTHONPATH", "")])
    process = subprocess.Popen([sys.executable, "-m", "metaparticle_runtime"], env=env, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{config.metrics_port}/healthz"

    def status() -> int:
        try:
            with urllib.request.urlopen(url, timeout=1) as reply:
                return reply.status
        except urllib.error.HTTPError as err:
            return err.code
        except OSError:
            return 0

    try:
        assert wait_until(lambda: status() == 200, 30, 0.05)
        process.terminate()
        assert wait_until(lambda: status() == 503, 2.5, 0.02), "still 200 while draining"
    finally:
        process.kill()
        process.wait(timeout=30)


def test_a_routers_metrics_count_its_calls_to_each_upstream_by_outcome(tmp_path):
    """A ScatterGather root calls every leaf once per request: each leaf's OK count is the request count."""
    from conftest import EXAMPLES, run_program

    with run_program(EXAMPLES / "scatter_gather", tmp=tmp_path) as running:
        port = int(running.url.rsplit(":", 1)[1])
        for q in ("pulumi", "leaf", "code"):
            assert _post(port, json.dumps({"q": q}).encode()) == 200
        samples = _scrape(port)
    calls = {
        dict(labels)["upstream"]: value
        for (name, labels), value in samples.items()
        if name == "metaparticle_upstream_calls_total" and dict(labels)["outcome"] == "OK"
    }
    assert calls == {f"search-leaf-{i}": 3 for i in range(4)}
    assert samples[("metaparticle_requests_total", (("code", "OK"), ("pattern", "ScatterGather"), ("role", "search-root")))] == 3
