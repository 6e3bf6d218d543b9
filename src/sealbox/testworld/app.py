"""Routes of the recording HTTP server, shared by its HTTP/1.1 and HTTP/2 sides.

The routes are plain objects with no I/O: a RequestHandler is created for each
request head, receives the body slices, and returns a Response at the end.

- ``GET /bytes/<n>``: n bytes of ``pattern_bytes`` (application/octet-stream).
- ``POST|PUT /upload``: JSON ``{"length": N, "sha256": "<hex>"}`` of the body.
- ``/echo`` (any method): JSON with the method, target, protocol, headers,
  trailers, body length and body SHA-256 as received.
- ``GET /redirect?to=URL``: 302 with ``Location: URL``.
- anything else: 200 with the body ``ok``.
"""

from __future__ import annotations

import hashlib
import json
import urllib.parse
from dataclasses import dataclass, field

Headers = tuple[tuple[bytes, bytes], ...]

SERVER_NAME = b"sealbox-testworld"


@dataclass(frozen=True)
class Response:
    """A response whose body is either ``body`` or the first ``pattern_length`` pattern bytes."""

    status: int
    reason: bytes
    headers: Headers
    body: bytes = b""
    pattern_length: int | None = None

    @property
    def content_length(self) -> int:
        """Length of the body that a GET of this response carries."""
        if self.pattern_length is not None:
            return self.pattern_length
        return len(self.body)


def _text(status: int, reason: bytes, text: bytes, extra: Headers = ()) -> Response:
    headers = ((b"content-type", b"text/plain; charset=utf-8"),) + extra
    return Response(status, reason, headers, text)


def _json(payload: dict[str, object]) -> Response:
    body = json.dumps(payload, sort_keys=True).encode() + b"\n"
    return Response(200, b"OK", ((b"content-type", b"application/json"),), body)


def _latin1(value: bytes) -> str:
    return value.decode("latin-1")


@dataclass
class RequestHandler:
    """Collect one request's body and build its response."""

    method: bytes
    target: bytes
    protocol: str  # "HTTP/1.1", "HTTP/1.0" or "HTTP/2"
    headers: Headers
    body_length: int = 0
    _digest: hashlib._Hash = field(default_factory=hashlib.sha256)

    def receive(self, data: bytes) -> None:
        """Account for a slice of the request body."""
        self.body_length += len(data)
        self._digest.update(data)

    def finish(self, trailers: Headers = ()) -> Response:
        """Return the response, once the whole body was received."""
        path, _, query = self.target.partition(b"?")

        if path.startswith(b"/bytes/"):
            return self._bytes(path[len(b"/bytes/") :])
        if path == b"/upload":
            if self.method not in (b"POST", b"PUT"):
                return _text(405, b"Method Not Allowed", b"use POST or PUT\n", ((b"allow", b"POST, PUT"),))
            return _json({"length": self.body_length, "sha256": self._digest.hexdigest()})
        if path == b"/echo":
            return _json(
                {
                    "method": _latin1(self.method),
                    "target": _latin1(self.target),
                    "protocol": self.protocol,
                    "headers": [[_latin1(name), _latin1(value)] for name, value in self.headers],
                    "trailers": [[_latin1(name), _latin1(value)] for name, value in trailers],
                    "body_length": self.body_length,
                    "body_sha256": self._digest.hexdigest(),
                }
            )
        if path == b"/redirect":
            return self._redirect(query)
        return _text(200, b"OK", b"ok")

    def _bytes(self, count: bytes) -> Response:
        if not count.isdigit() or len(count) > 15:
            return _text(400, b"Bad Request", b"invalid length in /bytes/<n>: expected a decimal byte count\n")
        headers = ((b"content-type", b"application/octet-stream"),)
        return Response(200, b"OK", headers, pattern_length=int(count))

    def _redirect(self, query: bytes) -> Response:
        values = urllib.parse.parse_qs(_latin1(query)).get("to")
        if not values:
            return _text(400, b"Bad Request", b"missing query parameter 'to' in /redirect?to=URL\n")
        location = values[0].encode("latin-1", errors="replace")
        if b"\r" in location or b"\n" in location:
            return _text(400, b"Bad Request", b"invalid 'to' URL: line breaks are not allowed\n")
        return _text(302, b"Found", b"redirect\n", ((b"location", location),))
