"""Structured logs: one JSON object per line on stderr, tagged with the pattern, role and replica,
and with the trace id of the request being worked on when tracing is on."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Optional

from . import tracing


class JsonFormatter(logging.Formatter):
    def __init__(self, role: str, replica: str, pattern: Optional[str] = None, name: Optional[str] = None) -> None:
        super().__init__()
        self.role = role
        self.replica = replica
        self.pattern = pattern
        self.name = name

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
        }
        if self.pattern is not None:
            doc.update(pattern=self.pattern, name=self.name)
        doc.update(role=self.role, replica=self.replica)
        trace_id = tracing.current_trace_id()
        if trace_id is not None:
            doc["trace_id"] = trace_id
        doc["msg"] = record.getMessage()
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            doc.update(fields)
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def configure(role: str, replica: str, level: str = "INFO", *, pattern: Optional[str] = None, name: Optional[str] = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(role, replica, pattern, name))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
