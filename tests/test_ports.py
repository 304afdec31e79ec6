"""The local run's entry port belongs to the run alone: nobody shares it through SO_REUSEPORT; free ports
handed to tools cannot be taken by an outgoing connection before the tool binds them."""

from __future__ import annotations

import itertools
import socket

import pytest

import metaparticle_pulumi as mp
from metaparticle_pulumi import _ports
from metaparticle_pulumi._ports import HOST, Ports

pytestmark = pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="held ports need SO_REUSEPORT")


def _shared(port: int) -> socket.socket:
    """What another program of this user does to share a port: SO_REUSEPORT, then bind."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((HOST, port))
    return sock


def test_an_entry_port_another_program_joined_is_refused_when_the_run_listens():
    ports = Ports()
    port = ports.entry_port()
    intruder = _shared(port)  # possible while the port is only held: holds share by design
    try:
        with pytest.raises(mp.Error, match=f"port {port} on 127.0.0.1 is in use by another program"):
            ports.listen(port)
    finally:
        intruder.close()
        ports.close()


def test_once_the_run_listens_on_its_entry_nobody_can_join_it():
    ports = Ports()
    port = ports.entry_port()
    listener = ports.listen(port)
    try:
        with pytest.raises(OSError):
            _shared(port)
        with socket.create_connection((HOST, port), timeout=5):
            conn, _ = listener.accept()  # the connection reached the run's own socket
            conn.close()
    finally:
        listener.close()
        ports.close()


# -- free_port: ports for tools that bind them themselves ----------------------------------------


def _ephemeral_low() -> int:
    with open("/proc/sys/net/ipv4/ip_local_port_range") as fh:
        return int(fh.read().split()[0])


def test_free_ports_come_from_below_the_range_outgoing_connections_draw_their_ports_from():
    """An outgoing connection made between the check and the tool's bind cannot take the port."""
    listener = socket.create_server((HOST, 0))
    clients = [socket.create_connection(listener.getsockname(), timeout=5) for _ in range(50)]
    try:
        source_ports = {client.getsockname()[1] for client in clients}
        chosen = [_ports.free_port() for _ in range(200)]
        low = _ephemeral_low()
        assert all(port < low for port in chosen), sorted(p for p in chosen if p >= low)
        assert all(low <= port for port in source_ports)  # what the kernel draws from, for contrast
        assert len(set(chosen)) == len(chosen), "two calls in a row gave the same port"
    finally:
        for client in clients:
            client.close()
        listener.close()


def test_free_port_passes_over_a_port_something_listens_on(monkeypatch):
    low, _high = _ports._candidate_range()
    taken = None
    for port in range(low, low + 100):  # one candidate that something listens on
        try:
            taken = socket.create_server((HOST, port))
            break
        except OSError:
            continue
    assert taken is not None
    try:
        monkeypatch.setattr(_ports, "_next_candidate", itertools.count(taken.getsockname()[1] - low))
        port = _ports.free_port()
        assert port != taken.getsockname()[1]
        socket.create_server((HOST, port)).close()  # and what it gives can be listened on
    finally:
        taken.close()
