"""The local target's persistent data: `<program>/.metaparticle/state/<pattern>/<role>`, one
directory per shard (leaf, service) with `storage=`, kept across restarts and runs.

A small marker, `<pattern>/layout.json`, records how many shards wrote the data: a Shard whose
`shards=` changed would find about 1/(N+1) of its keys on another shard than the one that now owns
them, so the change is refused unless the pattern says `reshard=True`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional

from metaparticle_runtime.storage import write_durably

from ._errors import PatternError
from ._topology import Topology, dns_name

#: Under the program's directory: the state of every pattern of the local target.
STATE_DIR = Path(".metaparticle") / "state"
LAYOUT = "layout.json"


def pattern_dir(topology: Topology) -> Path:
    """Where the pattern's shards keep their data on the local target."""
    return Path(topology.source_dir).resolve() / STATE_DIR / dns_name(topology.name)


def stateful(topology: Topology) -> bool:
    return any(role.storage is not None for role in topology.roles)


def _shards(topology: Topology) -> Optional[int]:
    """The shard count the data depends on (Shard patterns only)."""
    counts = {role.count for role in topology.roles if role.storage is not None and role.component == "shard"}
    return counts.pop() if len(counts) == 1 else None


def recorded_shards(directory: Path) -> Optional[int]:
    """The shard count of the data in `directory`, or None when there is no (readable) marker."""
    try:
        layout = json.loads((directory / LAYOUT).read_text())
    except (OSError, ValueError):
        return None
    shards = layout.get("shards") if isinstance(layout, dict) else None
    return shards if isinstance(shards, int) else None


def check_layout(topology: Topology, reshard: bool, where: str) -> None:
    """Refuses a changed shard count over existing data unless `reshard` (PatternError)."""
    shards = _shards(topology)
    if shards is None:
        return
    before = recorded_shards(pattern_dir(topology))
    if before is not None and before != shards and not reshard:
        raise PatternError(
            f"{where}: its data was written by {before} shards and it now has {shards}: about 1/{max(before, shards)} "
            f"of the keys would belong to another shard than the one holding their data. Go back to shards={before}, "
            f"or move the data yourself and pass reshard=True (the data stays where it is), or remove it with "
            f"`metaparticle delete DIR --target local`"
        )


def prepare(topology: Topology) -> dict[str, str]:
    """Creates every stateful role's directory and records the layout; role name -> directory."""
    base = pattern_dir(topology)
    dirs = {}
    for role in topology.roles:
        if role.storage is not None:
            path = base / role.name
            path.mkdir(parents=True, exist_ok=True)
            dirs[role.name] = str(path)
    shards = _shards(topology)
    if dirs and shards is not None and recorded_shards(base) != shards:
        write_durably(base / LAYOUT, json.dumps({"pattern": topology.pattern, "shards": shards}) + "\n")
    return dirs


def delete(program: Path) -> list[Path]:
    """Removes the local target's data of every pattern of `program`; the directories removed."""
    root = program.resolve() / STATE_DIR
    if not root.is_dir():
        return []
    removed = sorted(p for p in root.iterdir() if p.is_dir())
    shutil.rmtree(root)
    return removed
