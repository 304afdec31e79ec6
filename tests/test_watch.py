"""`metaparticle run DIR --watch`: an edit of the program rolls the changed roles under load with no
failed request, the entry keeping its port; a program that no longer evaluates leaves the last
good version serving."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from conftest import post_json, run_program, wait_until, write_program

SPREAD = """
import metaparticle_pulumi as mp


def handler(request):
    return {{"version": {version}}}


mp.Spread("api", function=handler, replicas=2)
"""


def ask(url: str) -> Any:
    """One request: the answer's version, or the failure as text."""
    request = urllib.request.Request(url, data=b"{}", method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return json.loads(reply.read())["version"]
    except (OSError, ValueError, KeyError) as exc:
        return f"failed: {type(exc).__name__}: {exc}"


class Load:
    """Clients sending requests in a loop, each bounded in count and time."""

    def __init__(self, url: str, clients: int = 3, count: int = 4000, seconds: float = 60.0) -> None:
        self.answers: list[tuple[float, Any]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()

        def client() -> None:
            deadline = time.monotonic() + seconds
            for _ in range(count):
                if self._stop.is_set() or time.monotonic() > deadline:
                    return
                answer = ask(url)
                with self._lock:
                    self.answers.append((time.monotonic(), answer))

        self._threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
        for thread in self._threads:
            thread.start()

    def latest(self, n: int) -> list[Any]:
        with self._lock:
            return [answer for _, answer in self.answers[-n:]]

    def stop(self) -> list[Any]:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)
        return [answer for _, answer in sorted(self.answers, key=lambda pair: pair[0])]


def endpoints(tmp: Path) -> dict[str, Any]:
    return json.loads((tmp / "endpoints.json").read_text())


def test_an_edit_rolls_under_load_without_a_failed_request_and_a_broken_edit_keeps_serving(tmp_path):
    program = write_program(tmp_path / "hot", SPREAD.format(version=1))
    with run_program(program, "--watch", tmp=tmp_path) as running:
        before = set(running.children())
        first = endpoints(tmp_path)
        load = Load(running.url)
        assert wait_until(lambda: len(load.latest(100)) == 100, 20)
        (program / "__main__.py").write_text(SPREAD.format(version=2))
        switched = wait_until(lambda: load.latest(100) == [2] * 100, 60)
        answers = load.stop()
        assert switched, running.log()[-3000:]
        failures = [a for a in answers if not isinstance(a, int)]
        assert failures == [], f"{len(failures)} of {len(answers)} failed: {failures[:5]}"
        assert answers[0] == 1 and answers[-1] == 2 and set(answers) == {1, 2}
        assert answers.index(2) > 50  # the old version answered until the roll
        assert wait_until(lambda: "rolled api-router, api-replica" in running.log(), 20)  # the old ones stopped
        assert "reloading: __main__.py changed" in running.log()

        after = endpoints(tmp_path)  # rewritten after the roll
        assert after["patterns"][0]["url"] == first["patterns"][0]["url"] == running.url
        assert not before & set(running.children())  # every process was replaced
        for role in after["patterns"][0]["roles"]:
            for process in role["processes"]:  # the new processes' metrics are where it says
                with urllib.request.urlopen(process["metrics_url"], timeout=5) as reply:
                    assert b"metaparticle_requests_total" in reply.read()

        serving = set(running.children())
        (program / "__main__.py").write_text(SPREAD.format(version=3) + "\ndef broken(:\n")
        assert wait_until(lambda: "SyntaxError" in running.log(), 20), running.log()[-2000:]
        time.sleep(0.5)
        assert [ask(running.url) for _ in range(20)] == [2] * 20
        assert set(running.children()) == serving
        assert "still serving the previous version" in running.log()
        assert f"__main__.py:{len(SPREAD.format(version=3).splitlines()) + 2}: SyntaxError" in running.log()


SEARCH = """
import metaparticle_pulumi as mp


def leaf(request, ctx):
    return [ctx.index]


def gather(results):
    return {{"hits": sorted(i for part in results for i in part), "version": {version}}}


mp.ScatterGather("search", leaf=leaf, gather=gather, leaves=3)
"""


def test_only_the_roles_that_changed_roll(tmp_path):
    program = write_program(tmp_path / "search", SEARCH.format(version=1))
    with run_program(program, "--watch", tmp=tmp_path) as running:
        leaves = {port: running.pid_of(port) for port in running.role_ports("search-leaf-0") + running.role_ports("search-leaf-2")}
        root = running.pid_of(running.role_ports("search-root")[0])
        (program / "__main__.py").write_text(SEARCH.format(version=2))
        rolled = "rolled search-root: 1 new processes serve, 1 old ones stopped, 3 kept"
        assert wait_until(lambda: rolled in running.log(), 30), running.log()[-2000:]
        assert post_json(running.url, {}).body == {"hits": [0, 1, 2], "version": 2}
        assert {port: running.pid_of(port) for port in leaves} == leaves  # the leaves kept running
        (new_root,) = [r for r in endpoints(tmp_path)["patterns"][0]["roles"] if r["name"] == "search-root"]
        assert running.pid_of(new_root["grpc_ports"][0]) not in (None, root)
