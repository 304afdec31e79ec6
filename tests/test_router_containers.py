"""Routers and metrics in containers (`run --target docker`): the image's compiled router serves a
Spread's router containers and answers through the entry, and every container's metrics are
scraped from the host at the `metrics_url` the endpoints list, as the live view does. Without an
engine these tests skip, unless MP_REQUIRE_CONTAINERS=1 (CI), where they fail; without Go, unless
MP_REQUIRE_ROUTER=1."""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from metaparticle_pulumi import _containers as containers
from metaparticle_pulumi._router import IMAGE_ROUTER
from metaparticle_runtime.config import RuntimeConfig
from metaparticle_runtime.elf import dynamic_loader

from conftest import METAPARTICLE, free_port, post_json, wait_until
from router_support import router_binary
from target_support import copy_program

pytestmark = [pytest.mark.containers, pytest.mark.timeout(900)]


def _cli(*args: str, env: dict[str, str], timeout: float = 400) -> subprocess.CompletedProcess[str]:
    return subprocess.run([METAPARTICLE, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, env=env)


def _project(program: Path) -> str:
    project = f"{program.name.replace('_', '-')}-{uuid.uuid4().hex[:6]}"
    doc = yaml.safe_load((program / "Pulumi.yaml").read_text())
    (program / "Pulumi.yaml").write_text(yaml.safe_dump({**doc, "name": project}, sort_keys=False))
    return project


@pytest.fixture(scope="module")
def spread(engine: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """examples/spread run detached as containers with this checkout's compiled router."""
    binary = router_binary()
    assert dynamic_loader(binary) is None, f"{binary} is not static: scripts/build-router builds with CGO_ENABLED=0"
    tmp = tmp_path_factory.mktemp("router-containers")
    program = copy_program("spread", tmp)
    project = _project(program)
    env = {**os.environ, "METAPARTICLE_ROUTER_BIN": binary, "METAPARTICLE_ROUTER": "auto"}
    endpoints = tmp / "endpoints.json"
    try:
        done = _cli("run", str(program), "--target", "docker", "--detach", "--port", str(free_port()), "--endpoints-json", str(endpoints), env=env)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        yield {"program": program, "project": project, "endpoints": json.loads(endpoints.read_text()), "env": env}
    finally:
        containers.delete(engine, project, images=True, grace=2)


def _role(endpoints: dict[str, Any], name: str) -> dict[str, Any]:
    (pattern,) = endpoints["patterns"]
    return next(r for r in pattern["roles"] if r["name"] == name)


def _inside(container: Any, expression: str) -> str:
    """What a Python expression gives inside the container (run as its user, next to its process)."""
    result = container.exec_run(["python", "-c", f"import os, urllib.request; print({expression}, end='')"])
    assert result.exit_code == 0, result.output.decode(errors="replace")
    return result.output.decode()


def _metrics_inside(container: Any) -> str:
    """The container's own /metrics on its operations port (its MP_METRICS_PORT: routers sharing a
    network namespace have one each), fetched from inside it."""
    port = RuntimeConfig.from_env(dict(e.split("=", 1) for e in container.attrs["Config"]["Env"] if "=" in e)).metrics_port
    return _inside(container, f"urllib.request.urlopen('http://127.0.0.1:{port}/metrics', timeout=5).read().decode()")


def test_router_containers_run_the_compiled_router_and_answer(engine: Any, spread: dict[str, Any]) -> None:
    endpoints = spread["endpoints"]
    url = endpoints["patterns"][0]["url"]
    answers = [post_json(url, {"i": i}, timeout=15) for i in range(12)]
    assert all(a.status == 200 for a in answers), [(a.status, a.body) for a in answers]
    assert [a.body["echo"] for a in answers] == [{"i": i} for i in range(12)]
    assert len({a.body["replica"] for a in answers}) >= 2, "the router did not balance per request"
    routers = _role(endpoints, "api-router")["containers"]
    assert len(routers) == 2
    served = 0
    for name in routers:
        container = engine.containers.get(name)
        # The runtime exec()s the router in place: the container's first process is the binary.
        assert _inside(container, "open('/proc/1/cmdline').read().split(chr(0))[0]") == IMAGE_ROUTER
        assert _inside(container, "os.readlink('/proc/1/exe')") == IMAGE_ROUTER
        # The Go router's text has no *_created series; prometheus_client writes one per counter.
        text = _metrics_inside(container)
        assert "_created" not in text
        served += "metaparticle_requests_total{" in text
    assert served >= 1, "no router counted the requests"
    replica = engine.containers.get(_role(endpoints, "api-replica")["containers"][0])
    assert "metaparticle_requests_created" in _metrics_inside(replica), "the replicas run the Python runtime"


def test_every_container_lists_a_metrics_url_that_the_live_view_scrapes(engine: Any, spread: dict[str, Any]) -> None:
    from metaparticle_pulumi import _live

    endpoints = spread["endpoints"]
    assert endpoints["target"] == "docker"
    urls = _live.metrics_urls(endpoints)
    names = [name for role in endpoints["patterns"][0]["roles"] for name in role["containers"]]
    assert sorted(urls) == sorted(names) and len(names) == 5, urls
    assert all(re.fullmatch(r"http://127\.0\.0\.1:\d+/metrics", url) for url in urls.values()), urls
    assert len(set(urls.values())) == len(urls), "each container on a host port of its own"
    before = _live.scrape(urls, timeout=5)
    assert all(samples is not None for samples in before.processes.values()), before.processes
    url = endpoints["patterns"][0]["url"]
    for i in range(30):
        assert post_json(url, {"n": i}, timeout=15).status == 200
    after = _live.scrape(urls, timeout=5)
    rows = {row.role: row for row in _live.rows(before, after, _live.groups(endpoints), {})}
    assert set(rows) == {"api-router", "api-replica"}
    assert rows["api-router"].up == 2 and rows["api-replica"].up == 3
    seconds = after.at - before.at
    # Every request passed one router and one replica: the scrapes from the host saw all of them.
    assert round(rows["api-router"].rps * seconds) == 30
    assert round(rows["api-replica"].rps * seconds) == 30
    assert rows["api-replica"].p50 is not None and rows["api-router"].errors == 0


def test_a_router_killed_under_load_leaves_new_connections_from_the_host_without_failures(engine: Any, spread: dict[str, Any]) -> None:
    """Both entry routers listen in one network namespace (SO_REUSEPORT): the kernel spreads new
    connections over them, and once one is killed, over the one left. Runs last: it kills a router."""
    import http.client
    import threading
    import time
    from urllib.parse import urlparse

    endpoints = spread["endpoints"]
    address = urlparse(endpoints["patterns"][0]["url"])
    routers = [engine.containers.get(name) for name in _role(endpoints, "api-router")["containers"]]
    results: list[tuple[float, bool, str]] = []  # (when its connection was made, answered 200, what went wrong)
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            connection = http.client.HTTPConnection(address.hostname, address.port, timeout=10)
            try:
                connection.connect()
                connected = time.monotonic()
                connection.request("POST", "/", body=b'{"load": true}', headers={"Content-Type": "application/json"})
                reply = connection.getresponse()
                reply.read()
                results.append((connected, reply.status == 200, str(reply.status)))
            except (OSError, http.client.HTTPException) as exc:
                results.append((time.monotonic(), False, repr(exc)))
            finally:
                connection.close()

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(3)
        served = {name: _requests_served(engine.containers.get(name)) for name in _role(endpoints, "api-router")["containers"]}
        assert all(count > 0 for count in served.values()), f"the kernel did not spread connections over both routers: {served}"
        routers[0].kill()
        killed = time.monotonic()
        time.sleep(4)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    before = [r for r in results if r[0] < killed]
    after = [r for r in results if r[0] >= killed]
    assert len(before) > 50 and len(after) > 50, (len(before), len(after))
    failed = [r for r in after if not r[1]]
    print(f"\nrouter kill: {len(before)} requests before, {len(after)} on new connections after, {len(failed)} of those failed; "
          f"{sum(not r[1] for r in before)} before (in flight at the kill)")
    assert not failed, f"{len(failed)} of {len(after)} requests on connections made after the kill failed: {failed[:5]}"
    routers[0].reload()
    assert routers[0].status in ("exited", "stopped"), routers[0].status
    assert post_json(endpoints["patterns"][0]["url"], {"after": "kill"}, timeout=15).status == 200


def _requests_served(container: Any) -> float:
    """The requests a router container answered, from its own metrics."""
    total = 0.0
    for line in _metrics_inside(container).splitlines():
        if line.startswith("metaparticle_requests_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_a_router_whose_process_dies_is_started_again_by_the_engine(engine: Any, spread: dict[str, Any]) -> None:
    """A crash, unlike a `kill` through the engine's API (a stop the user asked for), is what the
    restart policy is for: the router's process SIGKILLed from the host comes back in its container
    and the entry answers again. Runs after the API kill above: the router it kills is the one left."""
    import signal
    import time

    endpoints = spread["endpoints"]
    running = [c for c in (engine.containers.get(n) for n in _role(endpoints, "api-router")["containers"]) if c.status == "running"]
    assert running, "no router container is running"
    router = running[0]
    restarts = router.attrs["RestartCount"]
    os.kill(router.attrs["State"]["Pid"], signal.SIGKILL)
    died = time.monotonic()

    def restarted() -> bool:
        router.reload()
        return router.status == "running" and router.attrs["RestartCount"] > restarts

    assert wait_until(restarted, timeout=60, interval=0.2), f"{router.name} was not started again: {router.status}, {router.attrs['RestartCount']} restarts"
    assert router.attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"

    def answers() -> bool:
        try:
            return post_json(endpoints["patterns"][0]["url"], {"after": "crash"}, timeout=5).status == 200
        except OSError:
            return False

    assert wait_until(answers, timeout=60, interval=0.2), "the entry does not answer through the restarted router"
    print(f"\nrouter crash: {router.name} running again and answering {time.monotonic() - died:.1f} s after its process died")
