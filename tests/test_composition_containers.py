"""examples/composition as containers (`run --target docker`): the api's function calls the users
Shard and the search ScatterGather at their network aliases, and the callees' own metrics (scraped
from the host) count those calls. Without an engine this test skips, unless MP_REQUIRE_CONTAINERS=1
(CI), where it fails."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from metaparticle_pulumi import _live, _containers as containers

from conftest import METAPARTICLE, free_port, post_json
from target_support import copy_program

pytestmark = [pytest.mark.containers, pytest.mark.timeout(900)]

#: Requests to the api and what it answers (examples/composition/services.py).
CASES = [
    ({"user": "alice"}, {"user": "Alice", "likes": "pulumi", "documents": ["pulumi deploys infrastructure from real code"]}),
    ({"user": "bob"}, {"user": "Bob", "likes": "shard", "documents": ["a shard owns the keys that consistent hashing gives it"]}),
    ({"user": "zed"}, {"user": "zed", "error": "no such user"}),
]


def _requests(samples: Any, role: str) -> float:
    return sum(v for (name, labels), v in (samples or {}).items() if name == "metaparticle_requests_total" and ("role", role) in labels)


def _served(scrape: _live.Scrape, endpoints: dict[str, Any], pattern: str, role: str) -> float:
    """Requests the containers of `role` of `pattern` answered, as their metrics say."""
    (doc,) = [p for p in endpoints["patterns"] if p["name"] == pattern]
    (members,) = [r["replicas"] for r in doc["roles"] if r["name"] == role]
    return sum(_requests(scrape.processes.get(m["name"]), role) for m in members)


def test_the_composition_example_answers_through_three_patterns_in_containers(engine: Any, tmp_path: Path) -> None:
    program = copy_program("composition", tmp_path)
    project = f"composition-{uuid.uuid4().hex[:6]}"
    doc = yaml.safe_load((program / "Pulumi.yaml").read_text())
    (program / "Pulumi.yaml").write_text(yaml.safe_dump({**doc, "name": project}, sort_keys=False))
    endpoints_file = tmp_path / "endpoints.json"
    try:
        done = subprocess.run(
            [METAPARTICLE, "run", str(program), "--target", "docker", "--detach", "--port", str(free_port()), "--endpoints-json", str(endpoints_file)],
            capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        endpoints = json.loads(endpoints_file.read_text())
        assert {p["name"] for p in endpoints["patterns"]} == {"users", "search", "api"}
        (api,) = [p for p in endpoints["patterns"] if p["name"] == "api"]
        urls = _live.metrics_urls(endpoints)
        before = _live.scrape(urls, timeout=5)
        for _ in range(3):
            for request, expected in CASES:
                reply = post_json(api["url"], request, timeout=30)
                assert reply.status == 200, (reply.status, reply.body)
                assert reply.body == expected
        after = _live.scrape(urls, timeout=5)
        # Every request looked its user up in the Shard; the two known users' also searched.
        served = {
            (pattern, role): _served(after, endpoints, pattern, role) - _served(before, endpoints, pattern, role)
            for pattern, role in (("api", "api-router"), ("users", "users-router"), ("search", "search-root"))
        }
        assert served == {("api", "api-router"): 9, ("users", "users-router"): 9, ("search", "search-root"): 6}, served
        # The api's replicas reach the callees over the callees' networks; its routers stay on their own.
        (api_net,) = {p["network"] for p in endpoints["patterns"] if p["name"] == "api"}
        for role in api["roles"]:
            for name in role["containers"]:
                networks = set(engine.containers.get(name).attrs["NetworkSettings"]["Networks"])
                others = {p["network"] for p in endpoints["patterns"] if p["name"] != "api"}
                assert networks == ({api_net} | others if role["kind"] == "function" else {api_net}), (name, networks)
    finally:
        containers.delete(engine, project, images=True, grace=2)
    assert not containers.leftovers(engine, project)
