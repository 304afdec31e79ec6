"""The local run's entry port belongs to the run alone: nobody shares it through SO_REUSEPORT."""

from __future__ import annotations

import socket

import pytest

import metaparticle_pulumi as mp
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
