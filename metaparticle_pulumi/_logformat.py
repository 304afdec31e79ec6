"""How `metaparticle run` prints log lines: `text` (a line per record, readable) or `json` (one
object per line: time, level, pattern, role, replica, trace_id when known, message)."""

from __future__ import annotations

import json
import time
from typing import Any, Optional

FORMATS = ("text", "json")
#: Keys of a runtime record that the text format does not repeat (the replica prefixes the line).
_TEXT_HIDDEN = ("ts", "level", "msg", "role", "replica", "pattern", "name")


def now() -> str:
    """The time as the runtime writes it (UTC, milliseconds)."""
    moment = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(moment)) + f".{int(moment % 1 * 1000):03d}Z"


def _runtime_record(line: str) -> Optional[dict[str, Any]]:
    try:
        doc = json.loads(line)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) and "msg" in doc else None


def text(line: str) -> str:
    """A runtime JSON log line as `level msg key=value ...`; other lines unchanged."""
    doc = _runtime_record(line)
    if doc is None:
        return line
    extras = " ".join(f"{k}={v}" for k, v in doc.items() if k not in _TEXT_HIDDEN)
    return f"{doc.get('level', 'info'):<7} {doc['msg']}" + (f"  {extras}" if extras else "")


def record(line: str, replica: str, pattern: Optional[str] = None, role: Optional[str] = None) -> dict[str, Any]:
    """One output line of `replica` as a log record: the runtime's own records keep their fields;
    any other line (a print, a traceback line, the supervisor's note) becomes the message."""
    doc = _runtime_record(line)
    if doc is None:
        # The supervisor's notes on a replica that exited are the only output lines with a level.
        level = "warning" if line.startswith("exited with code") else "info"
        return {"time": now(), "level": level, "pattern": pattern, "role": role, "replica": replica, "message": line}
    out: dict[str, Any] = {
        "time": doc.pop("ts", None) or now(),
        "level": doc.pop("level", "info"),
        "pattern": doc.pop("pattern", pattern),
        "role": doc.pop("role", role),
        "replica": doc.pop("replica", replica),
    }
    trace_id = doc.pop("trace_id", None)
    if trace_id:
        out["trace_id"] = trace_id
    out["message"] = doc.pop("msg")
    out.update(doc)  # the record's own fields (name, grpc, exception...)
    return out


def own(level: str, message: str, **fields: Any) -> dict[str, Any]:
    """A record of `metaparticle run` itself (no pattern, role or replica of its own)."""
    return {"time": now(), "level": level, "pattern": None, "role": None, "replica": None, "message": message,
            "source": "metaparticle run", **fields}
