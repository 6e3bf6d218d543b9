"""Observe upstream HTTP/1.1 responses to find their status lines and boundaries.

The caller relays the upstream bytes to the client unchanged. ResponseTracker
only reads the same bytes to report where each response starts and ends, so
the gateway can audit status codes, pair responses with pipelined requests and
notice a protocol switch.

Like a user agent, it is lenient where RFC 9112 allows recipients to be: bare
LF line ends in heads and trailers, obs-fold, any reason phrase, whitespace
before a header colon. It is strict on framing, so invalid or conflicting
Content-Length values and malformed chunk-size lines are errors. After the
first error it stops parsing and reports nothing more.
"""

from __future__ import annotations

import collections
import enum
import logging
import re
from dataclasses import dataclass

from sealbox.gateway.http1_common import (
    ChunkedReader,
    Header,
    HttpProtocolError,
    Limits,
    Tunnel,
    parse_content_length,
    quote,
)

logger = logging.getLogger(__name__)

_CR = 0x0D
# The reason phrase is optional, and a missing SP before it is tolerated.
_STATUS_LINE = re.compile(rb"HTTP/([0-9])\.([0-9]) ([0-9]{3})(?: (.*))?", re.DOTALL)


@dataclass(frozen=True)
class ResponseStarted:
    """A response head was received."""

    status: int
    reason: bytes
    headers: tuple[Header, ...]
    """Header fields. An obs-fold continuation is joined to its field with one SP."""
    informational: bool
    """True for a 1xx interim response other than 101: another response to the same request follows."""


@dataclass(frozen=True)
class ResponseEnded:
    """The final response to a request ended."""

    body_bytes: int
    """Body bytes received, chunk framing included."""


@dataclass(frozen=True)
class ResponseError:
    """The upstream bytes are not valid HTTP/1.1, so the tracker reports nothing after this event."""

    reason: str


Event = ResponseStarted | ResponseEnded | ResponseError | Tunnel


class _State(enum.Enum):
    HEAD = "head"
    BODY = "body"
    CHUNKED = "chunked"
    UNTIL_CLOSE = "until_close"
    TUNNEL = "tunnel"
    STOPPED = "stopped"
    FINISHED = "finished"


@dataclass(frozen=True)
class _ResponseHead:
    version: bytes
    status: int
    reason: bytes
    headers: tuple[Header, ...]

    def get_all(self, name: bytes) -> list[bytes]:
        lowered_name = name.lower()
        return [header.value for header in self.headers if header.name.lower() == lowered_name]


class ResponseTracker:
    """Tracker of the responses on one upstream connection.

    Call expect() once per request sent upstream, in order, before its response
    arrives. The request method decides whether a response has a body (HEAD)
    and whether a 2xx starts a tunnel (CONNECT).
    """

    def __init__(self, limits: Limits = Limits()) -> None:
        self._limits = limits
        self._methods: collections.deque[bytes] = collections.deque()
        self._state = _State.HEAD
        self._reset_head_scan()
        self._remaining = 0
        self._content_length = 0
        self._body_bytes = 0
        self._chunks: ChunkedReader | None = None

    def expect(self, method: bytes) -> None:
        """Queue the method of a request sent upstream."""
        self._methods.append(method)

    def receive_data(self, data: bytes) -> list[Event]:
        """Read upstream bytes and return the resulting events."""
        if self._state in (_State.STOPPED, _State.FINISHED, _State.TUNNEL) or not data:
            return []
        data = bytes(data)
        if self._pending:
            data = bytes(self._pending) + data
            self._pending.clear()

        events: list[Event] = []
        position = 0
        try:
            while position < len(data) and self._state not in (_State.STOPPED, _State.FINISHED, _State.TUNNEL):
                position = self._step(data, position, events)
        except HttpProtocolError as error:
            self._stop(error.reason, events)
        return events

    def receive_eof(self) -> list[Event]:
        """Handle the upstream's close and return the final events."""
        events: list[Event] = []
        state = self._state
        self._state = _State.FINISHED
        if state == _State.UNTIL_CLOSE:
            events.append(ResponseEnded(self._body_bytes))
        elif state == _State.BODY:
            events.append(
                ResponseError(
                    f"connection closed after {self._content_length - self._remaining} of "
                    f"{self._content_length} body bytes"
                )
            )
        elif state == _State.CHUNKED:
            events.append(ResponseError("connection closed in the middle of a chunked body"))
        elif state == _State.HEAD and self._pending:
            events.append(ResponseError(f"connection closed in the middle of a response head {quote(self._pending)}"))
        elif state == _State.HEAD and self._methods:
            events.append(ResponseError(f"connection closed before the responses to {len(self._methods)} requests"))
        return events

    def _step(self, data: bytes, position: int, events: list[Event]) -> int:
        if self._state == _State.HEAD:
            return self._read_head(data, position, events)
        if self._state == _State.BODY:
            size = min(self._remaining, len(data) - position)
            self._remaining -= size
            self._body_bytes += size
            if self._remaining == 0:
                self._end_response(events)
            return position + size
        if self._state == _State.CHUNKED:
            assert self._chunks is not None
            position = self._chunks.feed(data, position, self._count_body_bytes)
            if self._chunks.done:
                self._end_response(events)
            return position
        # Read until close: everything belongs to the body.
        self._body_bytes += len(data) - position
        return len(data)

    def _count_body_bytes(self, piece: bytes) -> None:
        self._body_bytes += len(piece)

    def _reset_head_scan(self) -> None:
        self._pending = bytearray()
        self._scanned = 0
        self._line_start = 0
        self._head_start = 0
        self._lines = 0

    def _read_head(self, data: bytes, position: int, events: list[Event]) -> int:
        limits = self._limits
        start = position
        end = None
        search_from = start + self._scanned
        while end is None:
            newline = data.find(b"\n", search_from)
            if newline < 0:
                break
            line_start = start + self._line_start
            content_end = newline - 1 if newline > line_start and data[newline - 1] == _CR else newline
            search_from = newline + 1
            self._line_start = newline + 1 - start
            if content_end > line_start:
                self._lines += 1
                if self._lines > limits.max_headers + 1:
                    raise HttpProtocolError(502, f"response head has more than {limits.max_headers} headers")
            elif self._lines == 0:
                # Tolerate empty lines before the status line.
                self._head_start = self._line_start
            else:
                end = newline + 1

        head_size = (len(data) if end is None else end) - start - self._head_start
        if head_size > limits.max_head_bytes:
            size_text = f"{head_size} or more" if end is None else str(head_size)
            raise HttpProtocolError(502, f"response head of {size_text} bytes is larger than {limits.max_head_bytes} bytes")
        if end is None:
            self._pending += data[start:]
            self._scanned = len(data) - start
            return len(data)

        raw = data[start + self._head_start : end]
        self._reset_head_scan()
        self._start_response(_parse_response_head(raw), events)
        return end

    def _start_response(self, head: _ResponseHead, events: list[Event]) -> None:
        informational = 100 <= head.status < 200 and head.status != 101
        events.append(ResponseStarted(head.status, head.reason, head.headers, informational))
        if informational:
            return

        if self._methods:
            method = self._methods.popleft()
        else:
            logger.debug("response %d arrived without a request; framing it as a response to GET", head.status)
            method = b"GET"

        self._body_bytes = 0
        if head.status == 101 or (method == b"CONNECT" and 200 <= head.status < 300):
            events.append(ResponseEnded(0))
            events.append(Tunnel())
            self._state = _State.TUNNEL
            return
        if method == b"HEAD" or head.status in (204, 304):
            self._end_response(events)
            return

        transfer_encodings = head.get_all(b"transfer-encoding")
        if transfer_encodings:
            codings = [coding.strip(b" \t").lower() for value in transfer_encodings for coding in value.split(b",")]
            # RFC 9112 section 6.3: without a final "chunked", and for any
            # Transfer-Encoding in HTTP/1.0, the body ends when the connection closes.
            if head.version == b"HTTP/1.1" and codings[-1] == b"chunked":
                self._chunks = ChunkedReader(self._limits, lenient_fields=True)
                self._state = _State.CHUNKED
            else:
                self._state = _State.UNTIL_CLOSE
            return

        content_length = parse_content_length(head.get_all(b"content-length"))
        if content_length is None:
            self._state = _State.UNTIL_CLOSE
        elif content_length == 0:
            self._end_response(events)
        else:
            self._content_length = content_length
            self._remaining = content_length
            self._state = _State.BODY

    def _end_response(self, events: list[Event]) -> None:
        events.append(ResponseEnded(self._body_bytes))
        self._chunks = None
        self._state = _State.HEAD

    def _stop(self, reason: str, events: list[Event]) -> None:
        logger.info("stopped tracking upstream responses: %s", reason)
        self._state = _State.STOPPED
        self._pending.clear()
        events.append(ResponseError(reason))


def _parse_response_head(raw: bytes) -> _ResponseHead:
    """Parse a complete response head whose lines end with LF or CRLF."""
    lines: list[tuple[int, bytes]] = []
    offset = 0
    while offset < len(raw):
        newline = raw.index(b"\n", offset)
        content_end = newline - 1 if newline > offset and raw[newline - 1] == _CR else newline
        lines.append((offset, raw[offset:content_end]))
        offset = newline + 1

    status_line = lines[0][1]
    match = _STATUS_LINE.fullmatch(status_line)
    if not match:
        raise HttpProtocolError(502, f"invalid status line {quote(status_line)}; expected 'HTTP/1.1 200 OK'")
    if match.group(1) != b"1":
        raise HttpProtocolError(502, f"unsupported HTTP version in status line {quote(status_line)}; expected HTTP/1.x")

    headers: list[Header] = []
    for line_offset, line in lines[1:-1]:
        if line[:1] in (b" ", b"\t"):
            if not headers:
                raise HttpProtocolError(502, f"continuation line {quote(line)} before the first header")
            previous = headers[-1]
            stripped = line.strip(b" \t")
            value_end = line_offset + len(line.rstrip(b" \t")) if stripped else previous.value_end
            value = previous.value + b" " + stripped if stripped else previous.value
            headers[-1] = Header(previous.name, value, previous.value_start, value_end)
            continue
        colon = line.find(b":")
        name = line[:colon].rstrip(b" \t")
        if colon < 0 or not name:
            raise HttpProtocolError(502, f"invalid response header line {quote(line)}; expected 'name: value'")
        value_start = colon + 1
        while value_start < len(line) and line[value_start] in b" \t":
            value_start += 1
        value = line[value_start:].rstrip(b" \t")
        headers.append(
            Header(name, value, line_offset + value_start, line_offset + value_start + len(value))
        )

    version = status_line[:8]
    return _ResponseHead(version=version, status=int(match.group(3)), reason=match.group(4) or b"", headers=tuple(headers))
