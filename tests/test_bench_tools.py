"""The bench's measuring tools that the figures rest on: new-connection counting from /proc/net/tcp,
CPU placement of the two layouts, the warm-up request count, and reading h2load's report."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bench.throughput import ALL_CPUS, PINNED, Setup, measure, place, warmup_count
from bench.common import Settings
from bench.tools import ConnCounter, _parse_h2load, h2load, pin

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def test_conn_counter_counts_new_connections_to_the_ports_only() -> None:
    with socket.socket() as server, socket.socket() as other:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        other.bind(("127.0.0.1", 0))
        other.listen(16)
        port, other_port = server.getsockname()[1], other.getsockname()[1]
        kept = socket.create_connection(("127.0.0.1", port))  # open before: not new
        counter = ConnCounter([port])
        counter.start()
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        elsewhere = socket.create_connection(("127.0.0.1", other_port))
        accepted = [server.accept()[0] for _ in range(4)]
        clients[0].close()  # closed within the run: still counted (closing / TIME_WAIT)
        assert counter.stop() == 3
        for s in clients[1:] + accepted + [kept, elsewhere]:
            s.close()


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs")
def test_place_pins_and_unpins() -> None:
    pid = os.getpid()
    before = sorted(os.sched_getaffinity(0))
    try:
        assert place({"servers": [pid]}, "pinned") == PINNED["h2load"]
        assert os.sched_getaffinity(0) == set(PINNED["servers"])
        assert place({"servers": [pid]}, "natural") is None
        assert os.sched_getaffinity(0) == set(ALL_CPUS)
        with pytest.raises(ValueError, match="layout"):
            place({}, "sideways")
    finally:
        pin(pid, before)


def test_warmup_count_follows_the_rate_and_covers_every_stream() -> None:
    assert warmup_count({"c": 2, "m": 11, "rate": 150}, 1.0) == 300
    assert warmup_count({"c": 2, "m": 11}, 1.0) == 600
    assert warmup_count({"c": 22, "m": 1}, 0.01) == 22


@pytest.mark.parametrize(
    ("finished", "seconds"),
    [("5.01s", 5.01), ("12.50ms", 0.0125), ("258us", 0.000258)],
)
def test_h2load_durations_are_read_in_every_unit_it_prints(finished: str, seconds: float) -> None:
    report = f"finished in {finished}, 1234.50 req/s, 1.2MB/s\nrequests: 10 total, 10 started, 10 done, 9 succeeded, 1 failed, 1 errored, 0 timeout\n"
    parsed = _parse_h2load(report)
    assert parsed["seconds"] == pytest.approx(seconds)
    assert (parsed["rps"], parsed["total"], parsed["succeeded"], parsed["failed"]) == (1234.5, 10, 9, 1)


@pytest.mark.skipif(shutil.which("h2load") is None, reason="h2load not installed: run bench/setup.sh")
def test_a_load_run_that_reaches_nothing_is_an_error_naming_the_target_and_what_had_ended(tmp_path: Path) -> None:
    with socket.socket() as holder:  # a port nothing listens on
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
    body = tmp_path / "body.bin"
    body.write_bytes(b"x")
    url = f"http://127.0.0.1:{port}"
    with pytest.raises(RuntimeError, match=rf"h2load to {url}: not one request succeeded"):
        h2load([{"url": url, "body": body, "c": 1, "m": 1}], count=5, cpus=None, workdir=tmp_path)
    ended = _pid_of_an_ended_process()
    setup = Setup([{"url": url, "body": body, "c": 1, "m": 1}], {"servers": [ended, os.getpid()]})
    with pytest.raises(RuntimeError, match=rf"processes ended by then: {{'servers': \[{ended}\]}}"):
        measure(setup, Settings.make(quick=True), tmp_path)


def _pid_of_an_ended_process() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid
