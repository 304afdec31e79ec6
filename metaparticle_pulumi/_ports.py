"""Ports on 127.0.0.1 chosen for a local run and held until the process that will serve on each binds it.

A held port is a socket bound (never listening) with SO_REUSEPORT: no other program can bind it
meanwhile, while the runtime, which binds with SO_REUSEPORT too (MP_REUSE_PORT), can. A socket
that does not listen takes none of the connections, so holding it past the child's bind is
harmless; the run releases each port once its process serves.
"""

from __future__ import annotations

import socket

from ._errors import PatternError

HOST = "127.0.0.1"
_REUSEPORT = getattr(socket, "SO_REUSEPORT", None)


class Ports:
    """The ports of one evaluation; the first entry gets `entry` when given, the rest are free ones."""

    def __init__(self, entry: int | None = None) -> None:
        self._entry = entry
        #: The port asked for the main entry (`run --port`), if any.
        self.main_entry = entry
        self._held: dict[int, socket.socket] = {}
        self._listening: dict[int, socket.socket] = {}

    def reserve(self, port: int = 0) -> int:
        """Binds `port` (0: one the OS says is free) and holds it; the port."""
        try:
            sock = _bind(port, reuse_address=False)
        except OSError as exc:
            try:
                # Connections of an earlier server may linger on it in TIME_WAIT, which a bind
                # without SO_REUSEADDR counts as in use (a server binding it would not).
                sock = _bind(port, reuse_address=True) if port else None
            except OSError:
                sock = None
            if sock is None:
                raise PatternError(f"port {port} on {HOST} is in use ({exc.strerror or exc}); choose another") from None
        chosen = sock.getsockname()[1]
        if _REUSEPORT is None:  # nowhere to hold it: the child could not bind next to us
            sock.close()
        else:
            self._held[chosen] = sock
        return chosen

    def entry_port(self) -> int:
        """The port of a pattern's HTTP entry: `entry` for the first one asked, then free ones."""
        if self._entry is not None:
            port, self._entry = self._entry, None
            return self.reserve(port)
        return self.reserve()

    def held(self) -> list[int]:
        return sorted(self._held)

    def listen(self, port: int) -> int:
        """Makes the held `port` a listening socket shared by the processes given its descriptor
        (a pattern's routers: one accept queue, so connections waiting in it survive a router that
        dies, unlike separate SO_REUSEPORT sockets); the descriptor, kept open until `close`."""
        if port in self._listening:
            return self._listening[port].fileno()
        sock = self._held.pop(port, None) or _bind(port, reuse_address=True)
        # Accepted connections inherit it: their TIME_WAIT then does not keep a server (one that
        # sets SO_REUSEADDR, as servers do) from this port after the run.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.listen(1024)
        sock.set_inheritable(True)
        self._listening[port] = sock
        return sock.fileno()

    def release(self, port: int) -> None:
        """Lets go of `port` (its process binds it now); a listening port stays until `close`."""
        sock = self._held.pop(port, None)
        if sock is not None:
            sock.close()

    def close(self) -> None:
        for port in list(self._held):
            self.release(port)
        for sock in self._listening.values():
            sock.close()
        self._listening.clear()

    def __del__(self) -> None:
        self.close()


def _bind(port: int, *, reuse_address: bool) -> socket.socket:
    """A socket bound to `port` with SO_REUSEPORT (where there is one), not listening.

    Without SO_REUSEADDR it keeps out servers that set it too (most do): Linux lets two sockets
    with SO_REUSEADDR share a port while neither listens.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if _REUSEPORT is not None:
            sock.setsockopt(socket.SOL_SOCKET, _REUSEPORT, 1)
        if reuse_address:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, port))
    except OSError:
        sock.close()
        raise
    return sock


def free_port() -> int:
    """A port free on 127.0.0.1 now, not held (for tools that bind it themselves at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]
