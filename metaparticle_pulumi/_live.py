"""The live view of `metaparticle run` in a terminal: per role, what two scrapes of its processes'
(or containers') Prometheus metrics a second apart say (req/s, p50/p99, errors, in flight) and its
restarts.

`rows` is a pure function of two `Scrape`s and the runner's restart counts; `scrape` reads the
`metrics_url`s of the endpoints document; `table` draws the rows with rich.
"""

from __future__ import annotations

import math
import time
import urllib.request
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional

from prometheus_client.parser import text_string_to_metric_families
from rich.table import Table

#: (sample name, sorted labels) -> value: one process's metrics.
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
_REQUESTS = "metaparticle_requests_total"
_BUCKET = "metaparticle_request_duration_seconds_bucket"
_IN_FLIGHT = "metaparticle_in_flight"


@dataclass(frozen=True)
class Scrape:
    """Every process's samples at one moment (`at`, monotonic seconds); None: it did not answer."""

    at: float
    processes: Mapping[str, Optional[Samples]]


@dataclass(frozen=True)
class RoleGroup:
    """A role and the names of its processes (as the endpoints document lists them)."""

    pattern: str
    role: str
    processes: tuple[str, ...]


@dataclass(frozen=True)
class Row:
    pattern: str
    role: str
    up: int
    replicas: int
    rps: float
    p50: Optional[float]
    p99: Optional[float]
    errors: int
    in_flight: int
    restarts: int


def parse(text: str) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(urls: Mapping[str, str], timeout: float = 0.5) -> Scrape:
    """Scrapes every process's `metrics_url` (a process that does not answer counts as down)."""
    processes: dict[str, Optional[Samples]] = {}
    for name, url in urls.items():
        try:
            with urllib.request.urlopen(url, timeout=timeout) as reply:
                processes[name] = parse(reply.read().decode())
        except (OSError, ValueError):
            processes[name] = None
    return Scrape(time.monotonic(), processes)


def _members(role: Mapping[str, object]) -> list[Mapping[str, object]]:
    """A role's processes (local target) or containers (`replicas`, docker target)."""
    return list(role.get("processes") or role.get("replicas") or [])  # type: ignore[call-overload]


def groups(endpoints: Mapping[str, object]) -> list[RoleGroup]:
    """Every role of an endpoints document with its processes or containers."""
    found = []
    for pattern in endpoints["patterns"]:  # type: ignore[attr-defined]
        for role in pattern["roles"]:
            found.append(RoleGroup(pattern["name"], role["name"], tuple(str(p["name"]) for p in _members(role))))
    return found


def metrics_urls(endpoints: Mapping[str, object]) -> dict[str, str]:
    """Where each process or container serves its metrics (one with none published is left out)."""
    return {
        str(member["name"]): str(member["metrics_url"])
        for pattern in endpoints["patterns"]  # type: ignore[attr-defined]
        for role in pattern["roles"]
        for member in _members(role)
        if member.get("metrics_url")
    }


def _sum(samples: Optional[Samples], name: str, **match: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The series of `name` whose labels include `match`, by labels."""
    if not samples:
        return {}
    return {
        labels: value
        for (sample, labels), value in samples.items()
        if sample == name and all((k, v) in labels for k, v in match.items())
    }


def _increase(before: Optional[Samples], after: Optional[Samples], name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """How much each series of counter `name` grew (a series that went down was reset: a restart)."""
    old = _sum(before, name)
    grown = {}
    for labels, value in _sum(after, name).items():
        previous = old.get(labels, 0.0)
        grown[labels] = value - previous if value >= previous else value
    return grown


def quantile(q: float, buckets: Iterable[tuple[float, float]]) -> Optional[float]:
    """The q-quantile of a histogram given as (upper bound, cumulative count), as Prometheus'
    histogram_quantile estimates it (linear within a bucket); None without observations."""
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in ordered:
        if count >= rank:
            if math.isinf(upper):
                return lower
            if count == below:
                return upper
            return lower + (upper - lower) * (rank - below) / (count - below)
        lower, below = upper, count
    return lower


def rows(before: Scrape, after: Scrape, roles: Iterable[RoleGroup], restarts: Mapping[str, int]) -> list[Row]:
    """One row per role: rates over the time between the scrapes, the rest as of `after`."""
    seconds = max(after.at - before.at, 1e-9)
    table = []
    for group in roles:
        requests = 0.0
        buckets: dict[float, float] = {}
        errors = in_flight = up = 0
        for name in group.processes:
            old, new = before.processes.get(name), after.processes.get(name)
            if new is None:
                continue
            up += 1
            requests += sum(_increase(old, new, _REQUESTS).values())
            for labels, grown in _increase(old, new, _BUCKET).items():
                le = float(dict(labels)["le"])
                buckets[le] = buckets.get(le, 0.0) + grown
            errors += int(sum(v for labels, v in _sum(new, _REQUESTS).items() if dict(labels).get("code") != "OK"))
            in_flight += int(sum(_sum(new, _IN_FLIGHT).values()))
        table.append(
            Row(
                pattern=group.pattern,
                role=group.role,
                up=up,
                replicas=len(group.processes),
                rps=requests / seconds,
                p50=quantile(0.5, buckets.items()),
                p99=quantile(0.99, buckets.items()),
                errors=errors,
                in_flight=in_flight,
                restarts=sum(restarts.get(name, 0) for name in group.processes),
            )
        )
    return table


def _ms(seconds: Optional[float]) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def table(rows_: Iterable[Row], title: str = "") -> Table:
    """The rows as a rich table (errors and restarts in red when there are any)."""
    view = Table(title=title or None, title_justify="left")
    for column in ("pattern", "role", "up", "req/s", "p50", "p99", "errors", "in flight", "restarts"):
        view.add_column(column, justify="left" if column in ("pattern", "role") else "right", no_wrap=True)
    for row in rows_:
        view.add_row(
            row.pattern,
            row.role,
            f"{row.up}/{row.replicas}",
            f"{row.rps:.1f}",
            _ms(row.p50),
            _ms(row.p99),
            f"[red]{row.errors}[/]" if row.errors else "0",
            str(row.in_flight),
            f"[red]{row.restarts}[/]" if row.restarts else "0",
        )
    return view
