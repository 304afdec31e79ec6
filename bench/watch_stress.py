"""`python -m bench.watch_stress [--rolls N] [--clients N] [--keepalive N] [--seconds S]`: a bounded
stress of `metaparticle run DIR --watch`. A Spread of 2 replicas answers its version; clients post
in a loop (`--clients` opening a connection per request like urllib, `--keepalive` reusing one
HTTP/1.1 connection each) while the program is edited `--rolls` times, each edit rolling the router
and the replicas. Prints one JSON line: requests, failures by kind, and each failure's time
relative to the nearest roll's log lines. Exit 1 if any request failed.

Every part is bounded: the rolls (count, and 60 s each to be done), the clients (the run's
duration), the run itself (SIGINT, then SIGKILL after 30 s).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

PROGRAM = """
import metaparticle_pulumi as mp


def handler(request):
    return {{"version": {version}}}


mp.Spread("api", function=handler, replicas=2)
"""


class Clients:
    """Threads posting `{}` in a loop until stopped; each failure is kept with its time and kind."""

    def __init__(self, port: int, fresh: int, keepalive: int) -> None:
        self.port = port
        self.ok = 0
        self.failures: list[dict[str, Any]] = []
        self.versions: Counter[int] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._fresh, daemon=True) for _ in range(fresh)]
        self._threads += [threading.Thread(target=self._keepalive, daemon=True) for _ in range(keepalive)]
        for thread in self._threads:
            thread.start()

    def _record(self, kind: str, answer: Any = None, exc: BaseException | None = None) -> None:
        with self._lock:
            if exc is None:
                self.ok += 1
                self.versions[answer] += 1
            else:
                self.failures.append({"t": time.time(), "client": kind, "error": f"{type(exc).__name__}: {exc}"[:200]})

    def _fresh(self) -> None:
        url = f"http://127.0.0.1:{self.port}/"
        while not self._stop.is_set():
            request = urllib.request.Request(url, data=b"{}", method="POST", headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=10) as reply:
                    self._record("fresh", json.loads(reply.read())["version"])
            except Exception as exc:  # noqa: BLE001 - every failure is what we count
                self._record("fresh", exc=exc)

    def _keepalive(self) -> None:
        conn: http.client.HTTPConnection | None = None
        while not self._stop.is_set():
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                conn.request("POST", "/", body=b"{}", headers={"Content-Type": "application/json"})
                reply = conn.getresponse()
                body = reply.read()
                if reply.status != 200:
                    raise RuntimeError(f"HTTP {reply.status}: {body[:100]!r}")
                self._record("keepalive", json.loads(body)["version"])
                if reply.will_close:
                    conn.close()
                    conn = None
            except Exception as exc:  # noqa: BLE001
                self._record("keepalive", exc=exc)
                conn.close()
                conn = None

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)


def entry_events(log_path: Path) -> dict[str, list[float]]:
    """When old entries began their stop ("stopping") and ended it ("stopped"), from the run's
    JSON log lines (epoch seconds)."""
    from datetime import datetime

    events: dict[str, list[float]] = {"stopping": [], "stopped": []}
    for line in log_path.read_text().splitlines():
        if not line.startswith("{"):
            continue
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if doc.get("role") == "api-router":
            word = doc.get("message", "").split(":")[0]
            if word in events:
                events[word].append(datetime.fromisoformat(doc["time"].replace("Z", "+00:00")).timestamp())
    return events


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.watch_stress", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rolls", type=int, default=6)
    parser.add_argument("--clients", type=int, default=4, help="clients opening a connection per request")
    parser.add_argument("--keepalive", type=int, default=4, help="clients reusing one keep-alive connection")
    parser.add_argument("--seconds", type=float, default=600, help="bound on the whole run")
    parser.add_argument("--router", choices=("auto", "go", "python"), default="auto", help="METAPARTICLE_ROUTER for the run")
    args = parser.parse_args(argv)
    sys.path[:0] = [str(REPO)]
    from metaparticle_pulumi._ports import free_port

    tmp = Path(tempfile.mkdtemp(prefix="watch-stress-"))
    program = tmp / "hot"
    program.mkdir()
    (program / "Pulumi.yaml").write_text("name: hot\nruntime: python\n")
    (program / "__main__.py").write_text(PROGRAM.format(version=0))
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "runtime")]), "PYTHONUNBUFFERED": "1", "METAPARTICLE_ROUTER": args.router}
    log_path = tmp / "run.log"
    started = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "metaparticle_pulumi", "run", str(program), "--watch", "--log-format", "json", "--port", str(port)],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp, start_new_session=True,
        )
    clients = None
    rolls_done = 0
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError("the run did not serve within 60 s:\n" + log_path.read_text()[-2000:])
        clients = Clients(port, args.clients, args.keepalive)
        time.sleep(1.0)
        for version in range(1, args.rolls + 1):
            if time.monotonic() - started > args.seconds:
                break
            (program / "__main__.py").write_text(PROGRAM.format(version=version))
            roll_deadline = time.monotonic() + 60
            while time.monotonic() < roll_deadline and log_path.read_text().count("rolled api-router") < version:
                time.sleep(0.1)
            if log_path.read_text().count("rolled api-router") < version:
                raise RuntimeError(f"roll {version} did not finish within 60 s:\n" + log_path.read_text()[-2000:])
            rolls_done = version
            time.sleep(1.0)  # steady load on the new version before the next edit
    finally:
        if clients is not None:
            clients.stop()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    failures = clients.failures if clients else []
    events = entry_events(log_path)
    for failure in failures:
        for name, times in events.items():
            before = [t for t in times if t <= failure["t"]]
            failure[f"ms_after_{name}"] = round((failure["t"] - before[-1]) * 1000, 1) if before else None
    result = {
        "router": args.router,
        "rolls": rolls_done,
        "requests": (clients.ok if clients else 0) + len(failures),
        "failed": len(failures),
        "by_kind": dict(Counter(f"{f['client']}: {f['error'].split(':')[0]}" for f in failures)),
        "failures": failures[:20],
        "versions": dict(clients.versions) if clients else {},
        "seconds": round(time.monotonic() - started, 1),
    }
    print(json.dumps(result))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
