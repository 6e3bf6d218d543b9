"""The per-sandbox audit log: one JSON object per line.

Every event carries the time, the sandbox name and the event kind (dns,
connect, deny, intercept, request, substitute, violation, upstream_error,
ingress, close). Secret names appear, secret values never do: the writer
only receives names.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class AuditLog:
    """Append-only JSON-lines writer; each event is one write(2), so readers never see half a line."""

    def __init__(self, path: Path, sandbox: str) -> None:
        self.path = path
        self.sandbox = sandbox
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._failures = 0

    def write(self, event: str, **fields: Any) -> None:
        record = {"time": round(time.time(), 6), "sandbox": self.sandbox, "event": event}
        record.update({key: value for key, value in fields.items() if value is not None})
        line = json.dumps(record, separators=(",", ":"), default=str) + "\n"
        try:
            os.write(self._fd, line.encode())
        except OSError as exc:
            self._failures += 1
            if self._failures in (1, 10, 100, 1000):
                log.error("sandbox %s: writing the audit log %s failed (%d times): %s",
                          self.sandbox, self.path, self._failures, exc)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def read_events(path: Path) -> list[dict[str, Any]]:
    """Return the events of an audit log, skipping a torn last line."""
    events = []
    try:
        with open(path, "rb") as audit_file:
            for line in audit_file:
                try:
                    events.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    except FileNotFoundError:
        pass
    return events
