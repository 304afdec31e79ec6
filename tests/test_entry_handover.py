"""An HTTP entry handing its shared listening socket over to a successor (`run --watch` rolls it
so) loses no request, from clients that open a connection per request or keep one alive: once
stopping, the old entry answers with `Connection: close`, stops accepting, and waits for the
connections it accepted to be answered before it closes what is left. Before, it closed idle
keep-alive connections while their clients were sending the next request (reset, broken pipe,
closed without answer) and the Go router dropped requests it read after its shutdown began."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from dataclasses import replace
from typing import Any

import pytest

import router_support as rt

pytestmark = pytest.mark.timeout(120)


class Clients:
    """`keepalive` clients reusing one connection each (a new one when told `Connection: close`)
    and `fresh` clients opening one per request, all posting in a loop until stopped."""

    def __init__(self, port: int, keepalive: int = 8, fresh: int = 2) -> None:
        self.port = port
        self.ok = 0
        self.closes = 0
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(True,), daemon=True) for _ in range(keepalive)]
        self._threads += [threading.Thread(target=self._run, args=(False,), daemon=True) for _ in range(fresh)]
        for thread in self._threads:
            thread.start()

    def _run(self, keep: bool) -> None:
        conn: http.client.HTTPConnection | None = None
        while not self._stop.is_set():
            conn = conn or http.client.HTTPConnection(rt.HOST, self.port, timeout=10)
            try:
                conn.request("POST", "/", body=b'{"n": 1}', headers={"Content-Type": "application/json", **({} if keep else {"Connection": "close"})})
                reply = conn.getresponse()
                body = json.loads(reply.read())
                assert reply.status == 200 and body["echo"] == {"n": 1}, (reply.status, body)
                with self._lock:
                    self.ok += 1
                    self.closes += keep and reply.will_close
                if reply.will_close or not keep:
                    conn.close()
                    conn = None
            except Exception as exc:  # noqa: BLE001 - every failure is the finding
                with self._lock:
                    self.failures.append(f"{'keep-alive' if keep else 'fresh'}: {type(exc).__name__}: {exc}")
                conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def count(self) -> int:
        with self._lock:
            return self.ok

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)


@pytest.mark.parametrize("kind", ["python", "go"])
def test_entries_handing_over_a_shared_socket_lose_no_request(kind: str) -> None:
    binary = rt.router_binary() if kind == "go" else None
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((rt.HOST, 0))
    listener.listen(1024)
    port = listener.getsockname()[1]
    with rt.processes() as procs:
        replicas = procs.functions("api-replica", 1)
        base = replace(
            rt.router_config("spread", [replicas], ["api-replica"], "api-router"), http_port=port, http_fd=listener.fileno()
        )

        def entry(n: int) -> rt.Proc:
            proc = procs.start(replace(base, grpc_port=rt.rs.free_port(), replica=f"api-router-{n}"), kind, binary,
                               pass_fds=(listener.fileno(),))
            rt.wait_status(proc)
            return proc

        current = entry(0)
        clients = Clients(port)
        try:
            for n in (1, 2):  # two handovers, as two rolls
                time.sleep(0.3)
                successor = entry(n)
                before = clients.count()
                assert current.stop() == 0, current.log()[-2000:]
                assert clients.count() > before, "no request was answered during the stop"
                current = successor
            time.sleep(0.3)
            after = clients.count()
            time.sleep(0.3)
            assert clients.count() > after  # the last successor serves every client
        finally:
            clients.stop()
            listener.close()
        assert clients.failures == [], f"{len(clients.failures)} of {clients.ok + len(clients.failures)} failed: {clients.failures[:5]}"
        assert clients.closes >= 8  # every keep-alive client was told to reconnect at least once
