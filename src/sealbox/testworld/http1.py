"""Incremental HTTP/1.1 request parser for the test world's servers (sans-IO).

Strategy: the caller feeds received bytes with ``feed()`` and pulls events with
``next_event()`` until it returns ``NEED_DATA``. One parser reads every request
of a connection in order, so keep-alive and pipelined requests come out as a
sequence of RequestHead, BodyData..., EndOfRequest. Body bytes are returned in
the largest slices the buffer holds, so a 1 GiB body costs one event per read
from the socket, never work per byte in Python.

Heads are parsed strictly, like a careful origin server: CRLF line endings
only, no obs-fold, token header names, one consistent Content-Length, no
Content-Length together with Transfer-Encoding, and ``chunked`` as the only
transfer coding. Chunk extensions and trailers are accepted and validated.
Errors raise ProtocolError with the offending bytes quoted.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

MAX_HEAD_SIZE = 64 * 1024
MAX_HEADERS = 256
MAX_CHUNK_LINE = 4096
MAX_TRAILER_SIZE = 64 * 1024
# RFC 9112 section 2.2: a server should ignore empty lines before a request line.
MAX_LEADING_EMPTY_LINES = 8

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([^\x00-\x20\x7f]+) HTTP/([0-9])\.([0-9])")
_HEADER_LINE = re.compile(rb"(" + _TOKEN + rb"):[ \t]*([^\x00-\x08\x0a-\x1f\x7f]*?)[ \t]*")
_QUOTED_STRING = rb'"(?:[^"\\\x00-\x08\x0a-\x1f\x7f]|\\[^\x00-\x08\x0a-\x1f\x7f])*"'
_CHUNK_EXTENSION = (
    rb"(?:[ \t]*;[ \t]*" + _TOKEN + rb"(?:[ \t]*=[ \t]*(?:" + _TOKEN + rb"|" + _QUOTED_STRING + rb"))?)*"
)
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})(" + _CHUNK_EXTENSION + rb")[ \t]*")

Headers = tuple[tuple[bytes, bytes], ...]


class ProtocolError(Exception):
    """The bytes received are not a valid HTTP/1.1 request stream."""


def _quote(data: bytes | bytearray | memoryview, limit: int = 80) -> str:
    """Quote bytes for an error message, truncated to limit bytes."""
    raw = bytes(data[:limit])
    suffix = "..." if len(data) > limit else ""
    return repr(raw) + suffix


def _comma_values(headers: Headers, name: bytes) -> list[bytes]:
    """Return the comma-separated elements of every header called name, lowercased."""
    values: list[bytes] = []
    for header_name, value in headers:
        if header_name.lower() == name:
            values.extend(part.strip().lower() for part in value.split(b",") if part.strip())
    return values


@dataclass(frozen=True)
class RequestHead:
    """A parsed request line and header section."""

    method: bytes
    target: bytes
    version: bytes  # b"1.1" or b"1.0"
    headers: Headers
    content_length: int | None  # None when the body is chunked
    chunked: bool
    keep_alive: bool
    expects_continue: bool

    def header(self, name: bytes) -> bytes | None:
        """Return the first value of the header called name (case-insensitive)."""
        lowered = name.lower()
        for header_name, value in self.headers:
            if header_name.lower() == lowered:
                return value
        return None

    @property
    def has_body(self) -> bool:
        """Whether body bytes follow the head (chunked or a positive length)."""
        return self.chunked or bool(self.content_length)


@dataclass(frozen=True)
class BodyData:
    """A slice of a request body (decoded from chunked framing when chunked)."""

    data: bytes


@dataclass(frozen=True)
class EndOfRequest:
    """The end of the current request's body, with its trailer fields."""

    trailers: Headers


@dataclass(frozen=True)
class ConnectionClosed:
    """The client closed its sending side between requests."""


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = _NeedData()

Event = RequestHead | BodyData | EndOfRequest | ConnectionClosed | _NeedData


class _State(enum.Enum):
    HEAD = enum.auto()
    LENGTH_BODY = enum.auto()
    CHUNK_SIZE = enum.auto()
    CHUNK_DATA = enum.auto()
    CHUNK_END = enum.auto()
    TRAILERS = enum.auto()
    CLOSED = enum.auto()


def parse_head(head: bytes) -> RequestHead:
    """Parse a request head (without its final empty line) into a RequestHead."""
    lines = head.split(b"\r\n")
    for line in lines:
        if b"\n" in line or b"\r" in line:
            raise ProtocolError(f"invalid line ending in request head line {_quote(line)}: expected CRLF")

    match = _REQUEST_LINE.fullmatch(lines[0])
    if match is None:
        raise ProtocolError(f"invalid request line {_quote(lines[0])}: expected 'METHOD target HTTP/1.1'")
    method, target, major, minor = match.groups()
    if major != b"1":
        raise ProtocolError(f"unsupported HTTP version in {_quote(lines[0])}: expected HTTP/1.x")
    version = b"1." + minor

    if len(lines) - 1 > MAX_HEADERS:
        raise ProtocolError(f"too many header fields ({len(lines) - 1}): expected at most {MAX_HEADERS}")
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):
            raise ProtocolError(f"obsolete line folding in header line {_quote(line)}: expected no leading whitespace")
        field = _HEADER_LINE.fullmatch(line)
        if field is None:
            raise ProtocolError(f"invalid header line {_quote(line)}: expected 'name: value'")
        headers.append((field.group(1), field.group(2)))
    header_tuple = tuple(headers)

    transfer_codings = _comma_values(header_tuple, b"transfer-encoding")
    length_values = _comma_values(header_tuple, b"content-length")
    chunked = False
    content_length: int | None = 0
    if transfer_codings:
        if length_values:
            raise ProtocolError("request has both Content-Length and Transfer-Encoding: expected only one")
        if transfer_codings != [b"chunked"]:
            raise ProtocolError(
                f"unsupported Transfer-Encoding {_quote(b', '.join(transfer_codings))}: expected 'chunked'"
            )
        chunked = True
        content_length = None
    elif length_values:
        if len(set(length_values)) != 1 or not length_values[0].isdigit():
            raise ProtocolError(
                f"invalid Content-Length {_quote(b', '.join(length_values))}: expected one decimal length"
            )
        content_length = int(length_values[0])

    connection = _comma_values(header_tuple, b"connection")
    if version == b"1.1":
        keep_alive = b"close" not in connection
    else:
        keep_alive = b"keep-alive" in connection and b"close" not in connection
    expect = _comma_values(header_tuple, b"expect")
    expects_continue = version == b"1.1" and expect == [b"100-continue"]

    return RequestHead(
        method=method,
        target=target,
        version=version,
        headers=header_tuple,
        content_length=content_length,
        chunked=chunked,
        keep_alive=keep_alive,
        expects_continue=expects_continue,
    )


class RequestParser:
    """Turn the bytes of one client connection into request events."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._state = _State.HEAD
        self._remaining = 0
        self._trailers: list[tuple[bytes, bytes]] = []
        self._trailer_size = 0
        self._eof = False
        self._body_received = 0

    def feed(self, data: bytes) -> None:
        """Append received bytes."""
        if self._eof:
            raise ProtocolError("data fed after end of input")
        self._buffer += data

    def feed_eof(self) -> None:
        """Record that the client closed its sending side."""
        self._eof = True

    @property
    def buffered(self) -> int:
        """Number of received bytes not yet returned as events."""
        return len(self._buffer)

    def next_event(self) -> Event:
        """Return the next event, or NEED_DATA when more bytes are required."""
        if self._state is _State.HEAD:
            return self._read_head()
        if self._state is _State.LENGTH_BODY:
            return self._read_length_body()
        if self._state is _State.CHUNK_SIZE:
            return self._read_chunk_size()
        if self._state is _State.CHUNK_DATA:
            return self._read_chunk_data()
        if self._state is _State.CHUNK_END:
            return self._read_chunk_end()
        if self._state is _State.TRAILERS:
            return self._read_trailers()
        return ConnectionClosed()

    def _read_head(self) -> Event:
        buffer = self._buffer
        skipped = 0
        while buffer.startswith(b"\r\n") and skipped < MAX_LEADING_EMPTY_LINES:
            del buffer[:2]
            skipped += 1
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > MAX_HEAD_SIZE:
                raise ProtocolError(
                    f"request head larger than {MAX_HEAD_SIZE} bytes, starting {_quote(buffer)}: "
                    "expected a shorter head"
                )
            if self._eof:
                if buffer:
                    raise ProtocolError(f"connection closed inside request head {_quote(buffer)}")
                self._state = _State.CLOSED
                return ConnectionClosed()
            return NEED_DATA
        if end > MAX_HEAD_SIZE:
            raise ProtocolError(f"request head of {end} bytes: expected at most {MAX_HEAD_SIZE}")
        head = parse_head(bytes(buffer[:end]))
        del buffer[: end + 4]
        self._body_received = 0
        if head.chunked:
            self._state = _State.CHUNK_SIZE
            self._trailers = []
            self._trailer_size = 0
        else:
            self._state = _State.LENGTH_BODY
            self._remaining = head.content_length or 0
        return head

    def _take(self) -> Event:
        """Return up to the remaining body or chunk bytes from the buffer."""
        size = min(self._remaining, len(self._buffer))
        if size == 0:
            if self._eof:
                raise ProtocolError(
                    f"connection closed after {self._body_received} body bytes, {self._remaining} more expected"
                )
            return NEED_DATA
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        self._remaining -= size
        self._body_received += size
        return BodyData(data)

    def _read_length_body(self) -> Event:
        if self._remaining == 0:
            self._state = _State.HEAD
            return EndOfRequest(())
        return self._take()

    def _read_line(self, limit: int, description: str) -> bytes | None:
        end = self._buffer.find(b"\r\n")
        if end < 0:
            if len(self._buffer) > limit:
                raise ProtocolError(f"{description} longer than {limit} bytes: {_quote(self._buffer)}")
            if self._eof:
                raise ProtocolError(f"connection closed inside {description} {_quote(self._buffer)}")
            return None
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 2]
        if b"\n" in line or b"\r" in line:
            raise ProtocolError(f"invalid line ending in {description} {_quote(line)}: expected CRLF")
        return line

    def _read_chunk_size(self) -> Event:
        line = self._read_line(MAX_CHUNK_LINE, "chunk size line")
        if line is None:
            return NEED_DATA
        match = _CHUNK_LINE.fullmatch(line)
        if match is None:
            raise ProtocolError(f"invalid chunk size line {_quote(line)}: expected hex size [; extensions]")
        size = int(match.group(1), 16)
        if size == 0:
            self._state = _State.TRAILERS
        else:
            self._state = _State.CHUNK_DATA
            self._remaining = size
        return self.next_event()

    def _read_chunk_data(self) -> Event:
        if self._remaining == 0:
            self._state = _State.CHUNK_END
            return self.next_event()
        return self._take()

    def _read_chunk_end(self) -> Event:
        if len(self._buffer) < 2:
            if self._eof:
                raise ProtocolError("connection closed before the CRLF that ends a chunk")
            return NEED_DATA
        if self._buffer[:2] != b"\r\n":
            raise ProtocolError(f"invalid chunk ending {_quote(self._buffer[:8])}: expected CRLF after the chunk data")
        del self._buffer[:2]
        self._state = _State.CHUNK_SIZE
        return self.next_event()

    def _read_trailers(self) -> Event:
        while True:
            line = self._read_line(MAX_TRAILER_SIZE, "trailer line")
            if line is None:
                return NEED_DATA
            if line == b"":
                self._state = _State.HEAD
                return EndOfRequest(tuple(self._trailers))
            self._trailer_size += len(line) + 2
            if self._trailer_size > MAX_TRAILER_SIZE or len(self._trailers) >= MAX_HEADERS:
                raise ProtocolError(f"trailer section larger than {MAX_TRAILER_SIZE} bytes or {MAX_HEADERS} fields")
            if line[:1] in (b" ", b"\t"):
                raise ProtocolError(
                    f"obsolete line folding in trailer line {_quote(line)}: expected no leading whitespace"
                )
            field = _HEADER_LINE.fullmatch(line)
            if field is None:
                raise ProtocolError(f"invalid trailer line {_quote(line)}: expected 'name: value'")
            self._trailers.append((field.group(1), field.group(2)))
