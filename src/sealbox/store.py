"""Where sealbox keeps its state: the `$SEALBOX_HOME` layout and the registry.

Layout (default home `/var/lib/sealbox`):

    registry.db                 SQLite registry of sandboxes (WAL, safe across processes)
    locks/NAME.lock             flock held while a sandbox is created, stopped or removed
    images/host/VERSION/        generated skeleton of the `host` image, shared read-only
    sandboxes/NAME/             per-sandbox state: overlay upper layers, bundle, logs, audit log
    run/runc/                   state directory of the OCI runtime (`runc --root`)

Secret values are never written here.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

DEFAULT_HOME = Path("/var/lib/sealbox")

STATUS_CREATING = "creating"
STATUS_RUNNING = "running"
STATUS_STOPPED = "stopped"
STATUS_CRASHED = "crashed"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sandboxes (
    name TEXT PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    spec TEXT NOT NULL,
    created_at REAL NOT NULL,
    supervisor_pid INTEGER,
    supervisor_start TEXT,
    container_pid INTEGER,
    placeholders TEXT NOT NULL DEFAULT '{}',
    detail TEXT NOT NULL DEFAULT ''
)
"""


def sealbox_home() -> Path:
    return Path(os.environ.get("SEALBOX_HOME") or DEFAULT_HOME)


@dataclass(frozen=True)
class Paths:
    """Paths below one `$SEALBOX_HOME`."""

    home: Path

    @classmethod
    def default(cls) -> Paths:
        return cls(sealbox_home())

    @property
    def registry(self) -> Path:
        return self.home / "registry.db"

    @property
    def runc_root(self) -> Path:
        return self.home / "run" / "runc"

    @property
    def runsc_root(self) -> Path:
        return self.home / "run" / "runsc"

    def image_dir(self, kind: str, version: str) -> Path:
        return self.home / "images" / kind / version

    def sandbox_dir(self, name: str) -> Path:
        return self.home / "sandboxes" / name

    def lock_file(self, name: str) -> Path:
        return self.home / "locks" / f"{name}.lock"

    def ensure(self) -> None:
        for directory in (self.home, self.home / "locks", self.home / "sandboxes", self.runc_root, self.runsc_root):
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)


@contextlib.contextmanager
def name_lock(paths: Paths, name: str, timeout: float = 60.0) -> Iterator[None]:
    """Hold the per-name lock so create, stop and remove of one sandbox never interleave."""
    path = paths.lock_file(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"timed out after {timeout:g} s waiting for the lock {path}") from None
                time.sleep(0.01)
        yield
    finally:
        os.close(fd)


@dataclass(frozen=True)
class SandboxRecord:
    """One row of the registry."""

    name: str
    id: str
    status: str
    spec: dict[str, Any]
    created_at: float
    supervisor_pid: int | None
    supervisor_start: str | None
    container_pid: int | None
    placeholders: dict[str, str]
    detail: str


# SQLite keeps per-process lock bookkeeping that a forked child inherits, and a
# child that opens the database while the parent held a connection fails with
# "locking protocol". Connections therefore live only inside this lock, and the
# supervisor is forked while holding it.
FORK_LOCK = threading.RLock()


class Registry:
    """The SQLite registry of sandboxes; every call uses its own short-lived connection."""

    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        paths.ensure()
        with self._connect() as connection:
            connection.execute(_SCHEMA)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        with FORK_LOCK:
            connection = sqlite3.connect(self.paths.registry, timeout=30.0, isolation_level=None)
            try:
                connection.execute("PRAGMA journal_mode=WAL")
                connection.execute("PRAGMA synchronous=NORMAL")
                yield connection
            finally:
                connection.close()

    def close(self) -> None:
        """Kept for symmetry; connections are already closed after each call."""

    def insert(self, name: str, sandbox_id: str, spec: dict[str, Any], placeholders: dict[str, str]) -> None:
        with self._connect() as connection:
            connection.execute(
                "INSERT INTO sandboxes (name, id, status, spec, created_at, placeholders) VALUES (?, ?, ?, ?, ?, ?)",
                (name, sandbox_id, STATUS_CREATING, json.dumps(spec), time.time(), json.dumps(placeholders)),
            )

    def update(self, name: str, **fields: Any) -> None:
        allowed = {"status", "supervisor_pid", "supervisor_start", "container_pid", "detail"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"unknown registry fields: {sorted(unknown)}")
        assignments = ", ".join(f"{key} = ?" for key in fields)
        with self._connect() as connection:
            connection.execute(f"UPDATE sandboxes SET {assignments} WHERE name = ?", (*fields.values(), name))

    def delete(self, name: str) -> None:
        with self._connect() as connection:
            connection.execute("DELETE FROM sandboxes WHERE name = ?", (name,))

    def get(self, name: str) -> SandboxRecord | None:
        with self._connect() as connection:
            row = connection.execute("SELECT * FROM sandboxes WHERE name = ?", (name,)).fetchone()
        return None if row is None else _record(row)

    def all(self) -> list[SandboxRecord]:
        with self._connect() as connection:
            rows = connection.execute("SELECT * FROM sandboxes ORDER BY created_at").fetchall()
        return [_record(row) for row in rows]


def _record(row: tuple[Any, ...]) -> SandboxRecord:
    name, sandbox_id, status, spec, created_at, pid, start, container_pid, placeholders, detail = row
    return SandboxRecord(
        name=name,
        id=sandbox_id,
        status=status,
        spec=json.loads(spec),
        created_at=created_at,
        supervisor_pid=pid,
        supervisor_start=start,
        container_pid=container_pid,
        placeholders=json.loads(placeholders),
        detail=detail,
    )


def process_start_time(pid: int) -> str | None:
    """Return the kernel start time of a process (field 22 of /proc/PID/stat), or None if it is gone.

    Stored beside a PID so that a reused PID is never mistaken for the original process.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat_file:
            data = stat_file.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may contain spaces and parentheses, so split after the last ')'.
    fields = data[data.rindex(b")") + 2 :].split()
    if fields[0] == b"Z":
        return None
    return fields[19].decode()


def process_alive(pid: int | None, start_time: str | None) -> bool:
    return pid is not None and start_time is not None and process_start_time(pid) == start_time
