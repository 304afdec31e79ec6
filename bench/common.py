"""What every section shares: the run's settings, the log line, the machine's load."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

@dataclass
class Settings:
    quick: bool = False
    repeats: int = 3
    duration: float = 5.0
    warmup: float = 1.0
    #: Each load uses 3 h2load processes of `clients` connections x `streams` streams (66 in all).
    clients: int = 2
    streams: int = 11
    verify_calls: int = 20
    leaves: list[int] = field(default_factory=lambda: [4, 8, 16])
    scatter_duration: float = 5.0
    scatter_warmup_requests: int = 200
    startup_repeats: int = 3
    expansion_counts: list[int] = field(default_factory=lambda: [10, 100, 1000])
    kubernetes_counts: list[int] = field(default_factory=lambda: [10, 100, 1000])
    balance_keys: int = 100_000
    #: Offered load (req/s) of the fixed-rate runs that compare proxies' CPU per request (0: none).
    fixed_rate: int = 900
    #: The Go router binary (or None): adds "Go router" setups next to the Python router's.
    router_binary: str | None = None

    @classmethod
    def make(cls, quick: bool) -> "Settings":
        if not quick:
            return cls()
        return cls(
            quick=True,
            repeats=1,
            duration=0.8,
            warmup=0.4,
            fixed_rate=0,
            verify_calls=3,
            leaves=[4],
            scatter_duration=1.0,
            scatter_warmup_requests=70,
            startup_repeats=1,
            expansion_counts=[10, 100],
            kubernetes_counts=[10],
            balance_keys=10_000,
        )


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def loadavg() -> float:
    try:
        return float(open("/proc/loadavg").read().split()[0])
    except OSError:
        return float("nan")


def uvloop_installed() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True
