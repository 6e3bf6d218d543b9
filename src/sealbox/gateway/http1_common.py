"""Limits, errors, field parsing and the chunked-body reader shared by the HTTP/1.1 relay and tracker.

Both sides are sans-IO: they take bytes and return events. They never buffer
more than one head, one chunk-size line or one trailer section, except for a
body rewrite that the caller requests.
"""

from __future__ import annotations

import http
import re
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """Size limits of the HTTP/1.1 parsers."""

    max_request_line: int = 8192
    """Maximum request line in bytes, without CRLF. A longer one is rejected with 414."""
    max_head_bytes: int = 65536
    """Maximum head in bytes, including the final CRLF CRLF. A larger one is rejected with 431."""
    max_headers: int = 128
    """Maximum number of header lines in a head or trailer section. More are rejected with 431."""
    max_chunk_line: int = 4096
    """Maximum chunk-size line in bytes, without CRLF. A longer one is rejected with 400."""
    max_body_buffer: int = 64 * 1024 * 1024
    """Maximum body in bytes held in memory for a body rewrite. A larger body goes through unchanged."""


class HttpProtocolError(ValueError):
    """A message violates HTTP/1.1 framing or syntax, and status is the response status to send."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Header:
    """One header field line of a head."""

    name: bytes
    """Field name as sent, case preserved."""
    value: bytes
    """Field value without leading and trailing whitespace."""
    value_start: int
    """Offset of the value in the head's raw bytes."""
    value_end: int
    """Offset just after the value in the head's raw bytes."""


@dataclass(frozen=True)
class Tunnel:
    """From this event on, every byte of the connection is passed through raw."""


TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Field values may contain VCHAR, obs-text, SP and HTAB (RFC 9110 section 5.5).
_INVALID_VALUE_BYTE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_DECIMAL = re.compile(rb"[0-9]+")
_MAX_DECIMAL_DIGITS = 18
_QUOTED_STRING = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
_CHUNK_EXTENSION = (
    rb"[ \t]*;[ \t]*" + TOKEN.pattern + rb"(?:[ \t]*=[ \t]*(?:" + TOKEN.pattern + rb"|" + _QUOTED_STRING + rb"))?"
)
_CHUNK_SIZE_LINE = re.compile(rb"([0-9A-Fa-f]+)(?:" + _CHUNK_EXTENSION + rb")*")
_MAX_CHUNK_SIZE_DIGITS = 15


def quote(data: bytes | bytearray, limit: int = 40) -> str:
    """Return repr() of the first limit bytes, with "..." when truncated, for error messages."""
    text = repr(bytes(data[:limit]))
    return text + "..." if len(data) > limit else text


def parse_field_line(line: bytes, offset: int) -> Header:
    """Parse a "name: value" line (without CRLF) that starts at offset in its head.

    Raises HttpProtocolError(400) for a missing colon, whitespace before the
    colon, a name that is not a token, or a control character other than HTAB
    in the value.
    """
    colon = line.find(b":")
    if colon < 0:
        raise HttpProtocolError(400, f"header line {quote(line)} has no colon; expected 'name: value'")
    name = line[:colon]
    if name[-1:] in (b" ", b"\t"):
        raise HttpProtocolError(400, f"whitespace between header name and colon in {quote(line)}")
    if not TOKEN.fullmatch(name):
        raise HttpProtocolError(
            400, f"invalid header name {quote(name)}; expected a token of letters, digits and !#$%&'*+-.^_`|~"
        )

    start = colon + 1
    end = len(line)
    while start < end and line[start] in b" \t":
        start += 1
    while end > start and line[end - 1] in b" \t":
        end -= 1
    value = line[start:end]
    invalid = _INVALID_VALUE_BYTE.search(value)
    if invalid:
        raise HttpProtocolError(
            400,
            f"invalid byte {invalid.group()!r} in value of header {quote(name)}: {quote(value)}; "
            f"control characters other than HTAB are not allowed",
        )
    return Header(name=name, value=value, value_start=offset + start, value_end=offset + end)


def parse_content_length(values: list[bytes]) -> int | None:
    """Return the body length from all Content-Length values, or None if there are none.

    Identical duplicates, in separate fields or as a comma list ("5, 5"), are
    collapsed to one value, as RFC 9112 section 6.3 allows. Different values,
    or a value that is not a decimal number, raise HttpProtocolError(400).
    """
    if not values:
        return None
    lengths = set()
    for value in values:
        for element in value.split(b","):
            element = element.strip(b" \t")
            if not _DECIMAL.fullmatch(element) or len(element) > _MAX_DECIMAL_DIGITS:
                raise HttpProtocolError(
                    400,
                    f"invalid Content-Length {quote(value)}; expected a decimal number of at most "
                    f"{_MAX_DECIMAL_DIGITS} digits",
                )
            lengths.add(int(element))
    if len(lengths) > 1:
        raise HttpProtocolError(400, f"conflicting Content-Length values {quote(b', '.join(values))}")
    return lengths.pop()


def parse_chunk_size_line(line: bytes) -> int:
    """Return the chunk size of a chunk-size line without CRLF (RFC 9112 section 7.1).

    Chunk extensions are checked for syntax and otherwise ignored.
    """
    match = _CHUNK_SIZE_LINE.fullmatch(line)
    if not match:
        raise HttpProtocolError(
            400,
            f"invalid chunk size line {quote(line)}; expected a hexadecimal size and optional "
            f"';name=value' extensions",
        )
    digits = match.group(1).lstrip(b"0")
    if len(digits) > _MAX_CHUNK_SIZE_DIGITS:
        raise HttpProtocolError(400, f"chunk size {quote(match.group(1))} is too large")
    return int(digits or b"0", 16)


def connection_tokens(values: list[bytes]) -> set[bytes]:
    """Return the lower-cased options of all Connection header values."""
    tokens = set()
    for value in values:
        for element in value.split(b","):
            element = element.strip(b" \t").lower()
            if element:
                tokens.add(element)
    return tokens


def host_name(host: str) -> str:
    """Return the name of a Host header value: without the port or IPv6 brackets, lower-case, no trailing dot."""
    if host.startswith("["):
        name = host[1 : host.find("]")] if "]" in host else host
    else:
        before, _, port = host.rpartition(":")
        name = before if before and port.isdigit() else host
    return name.lower().rstrip(".")


def render_error_response(status: int, body: bytes) -> bytes:
    """Return a complete HTTP/1.1 response with a plain-text body that closes the connection."""
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    head = (
        f"HTTP/1.1 {status} {phrase}\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Connection: close\r\n"
        f"\r\n"
    )
    return head.encode("ascii") + body


class ChunkedReader:
    """Incremental reader of one chunked body that passes every wire byte on.

    feed() calls on_wire with the body's bytes in order, each exactly once, and
    on_data with the chunk data only. A chunk-size line, the CRLF after chunk
    data and trailer lines are passed on once complete; chunk data is passed on
    as it arrives. After the last chunk, `trailer_section` holds the trailer
    lines and the final CRLF. Chunk-size lines and the CRLF after chunk data
    must use CRLF. With lenient_fields, trailer lines may end with a bare LF and
    are not checked for field syntax, as RFC 9112 allows recipients of
    responses.
    """

    def __init__(self, limits: Limits, *, lenient_fields: bool = False) -> None:
        self._limits = limits
        self._lenient_fields = lenient_fields
        self._state = "size"
        self._line = bytearray()
        self._remaining = 0
        self._trailer = bytearray()
        self._trailer_lines = 0
        self.done = False

    @property
    def trailer_section(self) -> bytes:
        """Trailer lines and the final CRLF received after the last chunk."""
        return bytes(self._trailer)

    def pending(self) -> bytes:
        """Return the bytes of an incomplete line, which on_wire has not received yet."""
        return bytes(self._line)

    def feed(
        self,
        data: bytes,
        position: int,
        on_wire: Callable[[bytes], None],
        on_data: Callable[[bytes], None] | None = None,
    ) -> int:
        """Consume data from position until the body ends or data runs out; return the new position."""
        while position < len(data) and not self.done:
            if self._state == "data":
                size = min(self._remaining, len(data) - position)
                piece = data[position : position + size]
                position += size
                self._remaining -= size
                on_wire(piece)
                if on_data is not None:
                    on_data(piece)
                if self._remaining == 0:
                    self._state = "data_end"
            elif self._state == "data_end":
                position = self._read_data_end(data, position, on_wire)
            elif self._state == "size":
                line, position = self._take_line(data, position, self._limits.max_chunk_line, 400, "chunk size line")
                if line is None:
                    continue
                self._check_crlf(line, "chunk size line")
                self._remaining = parse_chunk_size_line(line[:-2])
                on_wire(line)
                self._state = "data" if self._remaining else "trailer"
            else:
                budget = self._limits.max_head_bytes - len(self._trailer)
                line, position = self._take_line(data, position, budget, 431, "trailer section")
                if line is None:
                    continue
                self._read_trailer_line(line)
                self._trailer += line
                on_wire(line)
        return position

    def _read_data_end(self, data: bytes, position: int, on_wire: Callable[[bytes], None]) -> int:
        crlf_part = data[position : position + 2 - len(self._line)]
        self._line += crlf_part
        position += len(crlf_part)
        received = bytes(self._line)
        if not b"\r\n".startswith(received):
            raise HttpProtocolError(400, f"missing CRLF after chunk data: received {quote(received)}")
        if len(received) == 2:
            self._line.clear()
            on_wire(received)
            self._state = "size"
        return position

    def _read_trailer_line(self, line: bytes) -> None:
        if not self._lenient_fields:
            self._check_crlf(line, "trailer line")
        content = line[:-1].removesuffix(b"\r")
        if not content:
            self.done = True
            return
        self._trailer_lines += 1
        if self._trailer_lines > self._limits.max_headers:
            raise HttpProtocolError(431, f"more than {self._limits.max_headers} trailer fields")
        if self._lenient_fields:
            return
        if content[:1] in (b" ", b"\t"):
            raise HttpProtocolError(400, f"obsolete line folding in trailer line {quote(content)}")
        parse_field_line(content, 0)

    def _take_line(
        self, data: bytes, position: int, max_size: int, status: int, line_kind: str
    ) -> tuple[bytes | None, int]:
        """Return a complete line including its LF, or None after buffering the rest of data."""
        newline = data.find(b"\n", position)
        end = len(data) if newline < 0 else newline + 1
        self._line += data[position:end]
        # The limit counts the line without its CRLF.
        content_size = len(self._line)
        if newline >= 0:
            content_size -= 1
        if content_size and self._line[content_size - 1] == 0x0D:
            content_size -= 1
        if content_size > max_size:
            raise HttpProtocolError(status, f"{line_kind} {quote(self._line)} is longer than {max_size} bytes")
        if newline < 0:
            return None, end
        line = bytes(self._line)
        self._line.clear()
        return line, end

    @staticmethod
    def _check_crlf(line: bytes, line_kind: str) -> None:
        if line[-2:-1] != b"\r":
            raise HttpProtocolError(400, f"bare LF at the end of {line_kind} {quote(line)}; expected CRLF")
