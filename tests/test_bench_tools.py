"""The bench's measuring tools that the figures rest on: new-connection counting from /proc/net/tcp,
CPU placement of the two layouts, and the warm-up request count."""

from __future__ import annotations

import os
import socket
import sys

import pytest

from bench.throughput import ALL_CPUS, PINNED, place, warmup_count
from bench.tools import ConnCounter, pin

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
