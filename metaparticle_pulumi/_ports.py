"""Ports on 127.0.0.1 chosen for a local run and held until the process that will serve on each binds it.

A held port is a socket bound (never listening) with SO_REUSEPORT: no other program can bind it
meanwhile, while the runtime, which binds with SO_REUSEPORT too (MP_REUSE_PORT), can. A socket
that does not listen takes none of the connections, so holding it past the child's bind is
harmless; the run releases each port once its process serves.
"""

from __future__ import annotations

import itertools
import random
import socket
from typing import Collection, Hashable, Mapping, Optional

from ._errors import PatternError

HOST = "127.0.0.1"
_REUSEPORT = getattr(socket, "SO_REUSEPORT", None)


class Ports:
    """The ports of one evaluation; the first entry gets `entry` when given, the rest are free ones.

    `reuse` maps keys (what a port is for: a replica's gRPC port...) to the ports an earlier
    evaluation gave them: `run --watch` re-evaluates with them, so a role that did not change keeps
    its port (and its running process). A held port may be one a running process listens on with
    SO_REUSEPORT (same user): holding it takes none of its connections.
    """

    def __init__(
        self, entry: int | None = None, reuse: Optional[Mapping[Hashable, int]] = None, listening: Collection[int] = (),
    ) -> None:
        self._entry = entry
        #: Ports the run already listens on (its entries, on a `run --watch` re-evaluation): given
        #: again as they are, nothing to hold.
        self._listening = frozenset(listening)
        #: The port asked for the main entry (`run --port`), if any.
        self.main_entry = entry
        self._held: dict[int, socket.socket] = {}
        self._reuse = dict(reuse or {})
        #: The port given to each key asked for.
        self.keys: dict[Hashable, int] = {}

    def reserve(self, port: int = 0, *, key: Optional[Hashable] = None, running: bool = False) -> int:
        """Binds `port` (0: the one `reuse` gives `key`, else one the OS says is free) and holds
        it; the port. With `running`, a port `reuse` gives that is in use is taken as it is, not
        held: the running process of an earlier evaluation serves on it (a user's server, which
        binds without SO_REUSEPORT, so it cannot be held next to it)."""
        reused = False
        if not port and key is not None:
            port = self._reuse.get(key, 0)
            reused = bool(port)
        if port and port in self._listening:
            if key is not None:
                self.keys[key] = port
            return port
        try:
            sock = _bind(port, reuse_address=False)
        except OSError as exc:
            try:
                # Connections of an earlier server may linger on it in TIME_WAIT, which a bind
                # without SO_REUSEADDR counts as in use (a server binding it would not).
                sock = _bind(port, reuse_address=True) if port else None
            except OSError:
                sock = None
            if sock is None and reused and running:
                if key is not None:
                    self.keys[key] = port
                return port
            if sock is None:
                raise PatternError(f"port {port} on {HOST} is in use ({exc.strerror or exc}); choose another") from None
        chosen = sock.getsockname()[1]
        if _REUSEPORT is None:  # nowhere to hold it: the child could not bind next to us
            sock.close()
        else:
            self._held[chosen] = sock
        if key is not None:
            self.keys[key] = chosen
        return chosen

    def entry_port(self, key: Optional[Hashable] = None) -> int:
        """The port of a pattern's HTTP entry: `entry` for the first one asked, then free ones."""
        if self._entry is not None:
            port, self._entry = self._entry, None
            return self.reserve(port, key=key)
        return self.reserve(key=key)

    def listen(self, port: int) -> Optional[socket.socket]:
        """Hands over the held socket of `port`, now listening (None when it is not held): the run
        passes it to the entry process, and to its successor on a `run --watch` roll, so that no
        connection waiting to be accepted is lost while one entry replaces the other."""
        sock = self._held.pop(port, None)
        if sock is not None:
            # As servers bind: the connections it accepted, lingering in TIME_WAIT after the run,
            # then keep no server from binding the port again at once.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # Processes are handed this socket, so nobody needs to bind next to it: without
            # SO_REUSEPORT, listening fails if another program of this user shares the port
            # (the kernel would split the connections between the two), and none can join later.
            sock.setsockopt(socket.SOL_SOCKET, _REUSEPORT, 0)
            try:
                sock.listen(1024)
            except OSError as exc:
                sock.close()
                raise PatternError(f"port {port} on {HOST} is in use by another program ({exc.strerror or exc}); choose another") from None
            sock.set_inheritable(True)
        return sock

    def held(self) -> list[int]:
        return sorted(self._held)

    def release(self, port: int) -> None:
        """Lets go of `port` (its process binds it now)."""
        sock = self._held.pop(port, None)
        if sock is not None:
            sock.close()

    def close(self) -> None:
        for port in list(self._held):
            self.release(port)

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
    """A port free on 127.0.0.1 now, not held, for a tool that binds it itself right after.

    It comes from below the OS's ephemeral range: a port from that range can be taken by any
    outgoing connection (its source port) between this check and the tool's bind, which then
    fails with "address already in use". Ports below the range are only ever bound on purpose.
    """
    low, high = _candidate_range()
    span = high - low
    for _ in range(min(span, 4096) if span >= 256 else 0):
        port = low + next(_next_candidate) % span
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((HOST, port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # no room below, or all taken: the OS's
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


#: Where the ephemeral range starts when the OS does not say (Linux's default).
_DEFAULT_EPHEMERAL_LOW = 32768
#: How many ports below the ephemeral range free_port chooses among, at most.
_CANDIDATES = 12000


def _candidate_range() -> tuple[int, int]:
    """[low, high): the ports just below the ephemeral range, above the well-known ones."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as fh:
            ephemeral_low = int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = _DEFAULT_EPHEMERAL_LOW
    return max(1024, ephemeral_low - _CANDIDATES), max(1024, ephemeral_low)


# Each process walks the candidates from its own random start, so that two test runs (or two
# tools) that check at the same moment are unlikely to pick the same port.
_next_candidate = itertools.count(random.randrange(1 << 16))
