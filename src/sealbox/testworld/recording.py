"""Records of the bytes that the test world's servers received on each connection."""

from __future__ import annotations

import hashlib
import itertools
import threading
from dataclasses import dataclass

# Bytes kept per connection. Digest and total also cover the bytes beyond this.
# NOTE: records stay in the server process's memory until clear_recordings(),
# so a benchmark that makes many large uploads should clear between rounds.
MAX_KEPT_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Recording:
    """The bytes one server received on one connection, up to the moment of the query."""

    connection_id: int
    tls: bool
    sni: str | None
    alpn: str | None
    received: bytes  # exact bytes received (decrypted for TLS), at most MAX_KEPT_BYTES
    received_total: int  # every byte received, also beyond MAX_KEPT_BYTES
    received_sha256: str  # SHA-256 hex of every byte received


class ConnectionRecord:
    """The growing record of one connection, kept by the server process."""

    def __init__(self, connection_id: int, tls: bool, sni: str | None, alpn: str | None) -> None:
        self.connection_id = connection_id
        self.tls = tls
        self.sni = sni
        self.alpn = alpn
        self.kept_bytes = bytearray()
        self.total = 0
        self._digest = hashlib.sha256()

    def add(self, data: bytes) -> None:
        """Append received bytes."""
        self.total += len(data)
        self._digest.update(data)
        room = MAX_KEPT_BYTES - len(self.kept_bytes)
        if room > 0:
            self.kept_bytes += data[:room]

    def snapshot(self) -> Recording:
        """Return an immutable copy of the record so far."""
        return Recording(
            connection_id=self.connection_id,
            tls=self.tls,
            sni=self.sni,
            alpn=self.alpn,
            received=bytes(self.kept_bytes),
            received_total=self.total,
            received_sha256=self._digest.hexdigest(),
        )


class RecordingStore:
    """The connection records of every recording server, by server name."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._records: dict[str, list[ConnectionRecord]] = {}

    def open(self, server: str, *, tls: bool, sni: str | None, alpn: str | None) -> ConnectionRecord:
        """Start the record of a new connection to server."""
        with self._lock:
            record = ConnectionRecord(next(self._ids), tls, sni, alpn)
            self._records.setdefault(server, []).append(record)
            return record

    def snapshot(self, server: str) -> list[Recording]:
        """Return the records of server, oldest connection first."""
        with self._lock:
            records = list(self._records.get(server, ()))
        return [record.snapshot() for record in records]

    def clear(self) -> None:
        """Forget every record. Connection ids keep counting up."""
        with self._lock:
            self._records.clear()
