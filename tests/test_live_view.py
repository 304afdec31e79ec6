"""The live view of `metaparticle run` in a terminal: the rows computed from two scrapes (pure), and
the table drawn in a real pseudo-terminal while traffic flows."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import time
import urllib.request

import pytest

from conftest import METAPARTICLE, free_port, wait_until, write_program
from metaparticle_pulumi import _live

LABELS = (("pattern", "Spread"), ("role", "api-replica"))


def samples(ok: float, failed: float = 0.0, buckets: dict[str, float] | None = None, in_flight: float = 0.0) -> _live.Samples:
    out: _live.Samples = {
        ("metaparticle_requests_total", tuple(sorted(LABELS + (("code", "OK"),)))): ok,
        ("metaparticle_requests_total", tuple(sorted(LABELS + (("code", "UNKNOWN"),)))): failed,
        ("metaparticle_in_flight", LABELS): in_flight,
    }
    for le, count in (buckets or {}).items():
        out[("metaparticle_request_duration_seconds_bucket", tuple(sorted(LABELS + (("le", le),))))] = count
    return out


ROLE = [_live.RoleGroup("api", "api-replica", ("api-replica-0", "api-replica-1", "api-replica-2"))]


def test_rows_are_rates_between_two_scrapes_summed_over_the_replicas():
    before = _live.Scrape(10.0, {
        "api-replica-0": samples(100, 1, {"0.01": 90, "0.1": 100, "+Inf": 101}),
        "api-replica-1": samples(50, 0, {"0.01": 50, "0.1": 50, "+Inf": 50}),
        "api-replica-2": samples(0),
    })
    after = _live.Scrape(12.0, {
        # 81 more answers (one a failure): 60 under 10 ms, 20 between 10 and 100 ms, one slower.
        "api-replica-0": samples(180, 2, {"0.01": 150, "0.1": 180, "+Inf": 182}, in_flight=3),
        # Restarted between the scrapes: its counters started again from zero (20 answers).
        "api-replica-1": samples(20, 0, {"0.01": 20, "0.1": 20, "+Inf": 20}, in_flight=1),
        "api-replica-2": None,  # did not answer the scrape
    })
    (row,) = _live.rows(before, after, ROLE, {"api-replica-1": 1, "api-replica-0": 0})
    assert (row.up, row.replicas) == (2, 3)
    assert row.rps == pytest.approx((81 + 20) / 2.0)  # every answer counts, failures too
    # 101 answers in all: 80 under 10 ms, 100 under 100 ms: the median lies in the first bucket.
    assert row.p50 == pytest.approx(0.01 * 50.5 / 80)
    assert 0.01 < row.p99 <= 0.1
    assert row.errors == 2 and row.in_flight == 4 and row.restarts == 1


def test_a_role_without_traffic_has_no_latency_and_zero_rate():
    scrape = _live.Scrape(1.0, {name: samples(5, buckets={"0.01": 5, "+Inf": 5}) for name in ROLE[0].processes})
    (row,) = _live.rows(scrape, _live.Scrape(2.0, scrape.processes), ROLE, {})
    assert row.rps == 0 and row.p50 is None and row.p99 is None and row.up == 3


def test_quantiles_interpolate_within_a_bucket_like_prometheus():
    buckets = [(0.1, 10.0), (0.2, 20.0), (float("inf"), 20.0)]
    assert _live.quantile(0.5, buckets) == pytest.approx(0.1)
    assert _live.quantile(0.75, buckets) == pytest.approx(0.15)
    assert _live.quantile(0.99, [(0.1, 1.0), (float("inf"), 100.0)]) == pytest.approx(0.1)  # above the last bound
    assert _live.quantile(0.5, [(0.1, 0.0), (float("inf"), 0.0)]) is None


def test_the_table_names_every_column():
    row = _live.Row("api", "api-router", 1, 1, 12.34, 0.0021, 0.05, 3, 2, 1)
    from rich.console import Console

    console = Console(width=120, record=True, color_system=None)
    console.print(_live.table([row]))
    text = console.export_text()
    for cell in ("req/s", "p50", "p99", "errors", "in flight", "restarts", "api-router", "12.3", "2.1 ms", "50.0 ms", "1/1"):
        assert cell in text


def test_containers_of_the_docker_target_are_grouped_and_scraped_like_processes():
    role = {
        "name": "api-router",
        "containers": ["p-api-router-0", "p-api-router-1"],
        "replicas": [
            {"name": "p-api-router-0", "replica": "api-router-0", "metrics_url": "http://127.0.0.1:41000/metrics"},
            {"name": "p-api-router-1", "replica": "api-router-1", "metrics_url": None},
        ],
    }
    local = {"name": "api-replica", "processes": [{"name": "api-replica-0", "grpc_port": 1, "metrics_url": "http://127.0.0.1:41001/metrics"}]}
    endpoints = {"patterns": [{"name": "api", "roles": [role, local]}]}
    assert _live.groups(endpoints) == [
        _live.RoleGroup("api", "api-router", ("p-api-router-0", "p-api-router-1")),
        _live.RoleGroup("api", "api-replica", ("api-replica-0",)),
    ]
    # A container whose operations port is not published is not scraped (and counts as down).
    assert _live.metrics_urls(endpoints) == {
        "p-api-router-0": "http://127.0.0.1:41000/metrics",
        "api-replica-0": "http://127.0.0.1:41001/metrics",
    }


SPREAD = "import metaparticle_pulumi as mp\n\n\ndef echo(request):\n    return request\n\n\nmp.Spread('api', function=echo, replicas=2)\n"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def test_run_in_a_terminal_shows_the_live_table_with_the_traffic(tmp_path):
    program = write_program(tmp_path / "live", SPREAD)
    port = free_port()
    master, slave = pty.openpty()
    env = {**os.environ, "COLUMNS": "120", "LINES": "40", "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    process = subprocess.Popen(
        [METAPARTICLE, "run", str(program), "--port", str(port)],
        stdin=slave, stdout=slave, stderr=slave, env=env, cwd=tmp_path, start_new_session=True,
    )
    os.close(slave)
    screen = bytearray()

    def read(seconds: float) -> str:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    screen.extend(os.read(master, 65536))
                except OSError:
                    break
        return ANSI.sub("", screen.decode("utf-8", "replace"))

    try:
        assert wait_until(lambda: "Serving." in read(0.2), 30), read(0)
        url = f"http://127.0.0.1:{port}/"
        sent, deadline = 0, time.monotonic() + 4.0
        while time.monotonic() < deadline:  # about three refreshes of traffic
            with urllib.request.urlopen(urllib.request.Request(url, data=b'{"x": 1}', method="POST"), timeout=5) as reply:
                assert json.loads(reply.read()) == {"x": 1}
            sent += 1
            read(0.0)
        text = read(1.5)
        assert sent > 10
        rows = [[cell.strip() for cell in line.split("│")] for line in text.splitlines() if "api-router" in line and "│" in line]
        rows = [cells for cells in rows if cells[1:4] == ["api", "api-router", "1/1"]]
        assert rows, text[-3000:]
        # Each refresh shows the rate since the one before: a refresh after the traffic ended shows
        # 0.0, so the table is read at the last refresh that saw traffic.
        busy = [cells for cells in rows if float(cells[4]) > 0]  # req/s
        assert busy, rows
        cells = busy[-1]
        assert cells[5].endswith("ms") and cells[6].endswith("ms")  # p50, p99
        replica_rows = [line for line in text.splitlines() if "api-replica" in line and "2/2" in line]
        assert replica_rows, text[-3000:]
        for header in ("req/s", "p50", "p99", "errors", "in flight", "restarts"):
            assert header in text
    finally:
        process.send_signal(signal.SIGINT)
        try:
            # Keep reading: a terminal nobody reads blocks the writer.
            assert wait_until(lambda: read(0.1) is not None and process.poll() is not None, 20)
            assert process.returncode == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            os.close(master)
