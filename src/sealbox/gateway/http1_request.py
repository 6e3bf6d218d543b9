"""Strict HTTP/1.1 request framing for the client-to-upstream side of an intercepted connection.

RequestRelay reads the decrypted bytes the client sends and returns the bytes
to send upstream, as events. It buffers one request head at a time and parses
it strictly (RFC 9112). A callback then decides what goes upstream in its
place: the head unchanged, a head with rewritten values, or a rejection. The body
then goes through with its original framing, byte for byte, so the next
request on the connection starts exactly where the client put it. Only a
chunk-size line or a trailer line is buffered inside a body, unless the
callback asked for a body rewrite, which holds the whole body in memory up to
Limits.max_body_buffer.

Strictness serves request smuggling defence: anything that two HTTP parsers
could frame differently (bare LF, obs-fold, conflicting Content-Length,
Content-Length with Transfer-Encoding, any coding but "chunked") is rejected
with 400 before a byte of that request goes upstream.
"""

from __future__ import annotations

import enum
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from sealbox.gateway.http1_common import (
    TOKEN,
    ChunkedReader,
    Header,
    HttpProtocolError,
    Limits,
    Tunnel,
    connection_tokens,
    parse_content_length,
    parse_field_line,
    quote,
)

logger = logging.getLogger(__name__)

_CR = 0x0D
_LF = 0x0A
_TARGET = re.compile(rb"[\x21-\x7e]+")
_VERSION = re.compile(rb"HTTP/[0-9]\.[0-9]")
_SUPPORTED_VERSIONS = (b"HTTP/1.0", b"HTTP/1.1")
_INVALID_REPLACEMENT_BYTE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_UNLIMITED = Limits(
    max_request_line=2**62, max_head_bytes=2**62, max_headers=2**62, max_chunk_line=2**62, max_body_buffer=2**62
)


@dataclass(frozen=True)
class RequestHead:
    """A parsed request head, built by parse_request_head."""

    method: bytes
    target: bytes
    version: bytes
    """b"HTTP/1.1" or b"HTTP/1.0"."""
    headers: tuple[Header, ...]
    raw: bytes
    """The exact head bytes received, including the final CRLF CRLF."""
    content_length: int | None = None
    """Body length from Content-Length, or None for a chunked body or no body."""
    chunked: bool = False
    """True when the body uses Transfer-Encoding: chunked."""
    expects_continue: bool = False
    """True when the request carries Expect: 100-continue."""
    upgrade: bool = False
    """True for CONNECT, and for an Upgrade header with "upgrade" listed in Connection."""

    def get_all(self, name: bytes) -> list[bytes]:
        """Return the values of every field with this name (case-insensitive), in order."""
        lowered_name = name.lower()
        return [header.value for header in self.headers if header.name.lower() == lowered_name]

    def get(self, name: bytes) -> bytes | None:
        """Return the field value, several fields joined with ", " (RFC 9110 section 5.3), or None."""
        values = self.get_all(name)
        return b", ".join(values) if values else None

    def rebuild(self, *, target: bytes | None = None, values: Mapping[int, bytes] = {}) -> bytes:
        """Return the head with the request target and the values of the headers at the given indexes replaced.

        Every other byte (name case, whitespace around values, order, line
        endings) is kept, so rebuild() without changes returns raw. Raises
        ValueError for a target that is not visible ASCII or a value with a
        control character other than HTAB; the message never contains the
        replacement, which may be a secret.
        """
        replacements: list[tuple[int, int, bytes]] = []
        if target is not None:
            if not _TARGET.fullmatch(target):
                raise ValueError("replacement request target must be non-empty visible ASCII")
            start = len(self.method) + 1
            replacements.append((start, start + len(self.target), target))
        for index, value in values.items():
            if not 0 <= index < len(self.headers):
                raise ValueError(f"header index {index} out of range; the head has {len(self.headers)} headers")
            header = self.headers[index]
            invalid = _INVALID_REPLACEMENT_BYTE.search(value)
            if invalid:
                raise ValueError(
                    f"replacement value of header {header.name!r} (index {index}) contains a control "
                    f"character at offset {invalid.start()}"
                )
            if value[:1] in (b" ", b"\t") or value[-1:] in (b" ", b"\t"):
                raise ValueError(
                    f"replacement value of header {header.name!r} (index {index}) has leading or "
                    f"trailing whitespace"
                )
            replacements.append((header.value_start, header.value_end, value))

        replacements.sort()
        pieces = []
        position = 0
        for start, end, replacement in replacements:
            pieces.append(self.raw[position:start])
            pieces.append(replacement)
            position = end
        pieces.append(self.raw[position:])
        return b"".join(pieces)


def parse_request_head(raw: bytes, limits: Limits = Limits()) -> RequestHead:
    """Parse and validate a complete request head that ends with CRLF CRLF.

    Raises HttpProtocolError with status 400 for invalid syntax or ambiguous
    framing, 414 or 431 for the size limits, and 505 for a version other than
    HTTP/1.0 and HTTP/1.1.
    """
    raw = bytes(raw)
    if not raw.endswith(b"\r\n\r\n"):
        raise HttpProtocolError(400, f"incomplete request head {quote(raw[-40:])}; expected it to end with CRLF CRLF")
    if len(raw) > limits.max_head_bytes:
        raise HttpProtocolError(431, f"request head of {len(raw)} bytes is larger than {limits.max_head_bytes} bytes")
    _check_no_bare_lf(raw)

    lines = raw[:-4].split(b"\r\n")
    method, target, version = _parse_request_line(lines[0], limits)
    if len(lines) - 1 > limits.max_headers:
        raise HttpProtocolError(431, f"request head has {len(lines) - 1} headers; the limit is {limits.max_headers}")

    headers = []
    offset = len(lines[0]) + 2
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):
            raise HttpProtocolError(400, f"obsolete line folding in header line {quote(line)}")
        headers.append(parse_field_line(line, offset))
        offset += len(line) + 2

    head = RequestHead(method=method, target=target, version=version, headers=tuple(headers), raw=raw)
    return _with_framing(head)


def _check_no_bare_lf(raw: bytes) -> None:
    newline = raw.find(b"\n")
    while newline >= 0:
        if newline == 0 or raw[newline - 1] != _CR:
            line_start = raw.rfind(b"\n", 0, newline) + 1
            raise HttpProtocolError(400, f"bare LF in request head line {quote(raw[line_start : newline + 1])}; expected CRLF")
        newline = raw.find(b"\n", newline + 1)


def _parse_request_line(line: bytes, limits: Limits) -> tuple[bytes, bytes, bytes]:
    if len(line) > limits.max_request_line:
        raise HttpProtocolError(414, f"request line {quote(line)} is longer than {limits.max_request_line} bytes")
    parts = line.split(b" ")
    if len(parts) != 3:
        raise HttpProtocolError(400, f"invalid request line {quote(line)}; expected 'METHOD target HTTP/1.1'")
    method, target, version = parts
    if not TOKEN.fullmatch(method):
        raise HttpProtocolError(400, f"invalid method {quote(method)}; expected a token")
    if not _TARGET.fullmatch(target):
        raise HttpProtocolError(400, f"invalid request target {quote(target)}; expected visible ASCII")
    if not _VERSION.fullmatch(version):
        raise HttpProtocolError(400, f"invalid HTTP version {quote(version)}; expected HTTP/1.1 or HTTP/1.0")
    if version not in _SUPPORTED_VERSIONS:
        raise HttpProtocolError(505, f"unsupported HTTP version {quote(version)}; expected HTTP/1.1 or HTTP/1.0")
    return method, target, version


def _with_framing(head: RequestHead) -> RequestHead:
    """Return head with its framing fields set, after checking Host and the framing headers."""
    transfer_encodings = head.get_all(b"transfer-encoding")
    content_lengths = head.get_all(b"content-length")
    if transfer_encodings and content_lengths:
        raise HttpProtocolError(
            400,
            f"request has both Content-Length {quote(b', '.join(content_lengths))} and "
            f"Transfer-Encoding {quote(b', '.join(transfer_encodings))}",
        )
    chunked = False
    if transfer_encodings:
        joined = b", ".join(transfer_encodings)
        if head.version == b"HTTP/1.0":
            raise HttpProtocolError(400, f"Transfer-Encoding {quote(joined)} in an HTTP/1.0 request")
        if len(transfer_encodings) != 1 or transfer_encodings[0].lower() != b"chunked":
            raise HttpProtocolError(400, f"unsupported Transfer-Encoding {quote(joined)}; expected exactly 'chunked'")
        chunked = True
    content_length = parse_content_length(content_lengths)

    hosts = head.get_all(b"host")
    if len(hosts) > 1:
        raise HttpProtocolError(400, f"request has {len(hosts)} Host headers {quote(b', '.join(hosts))}; expected one")
    if head.version == b"HTTP/1.1" and not hosts:
        raise HttpProtocolError(400, f"HTTP/1.1 request {quote(head.method + b' ' + head.target)} has no Host header")

    upgrade = head.method == b"CONNECT" or (
        b"upgrade" in connection_tokens(head.get_all(b"connection")) and bool(head.get_all(b"upgrade"))
    )
    expects_continue = any(value.lower() == b"100-continue" for value in head.get_all(b"expect"))
    return RequestHead(
        method=head.method,
        target=head.target,
        version=head.version,
        headers=head.headers,
        raw=head.raw,
        content_length=content_length,
        chunked=chunked,
        expects_continue=expects_continue,
        upgrade=upgrade,
    )


@dataclass(frozen=True)
class Forward:
    """Head callback decision: send this head upstream, then the body."""

    head: bytes
    """Bytes to send upstream for this head: RequestHead.raw or RequestHead.rebuild(...)."""
    body_rewrite: Callable[[bytes], bytes] | None = None
    """Called once with the whole body (de-chunked) to return the body to send."""


@dataclass(frozen=True)
class Reject:
    """Head callback decision: respond to the client with this status and close."""

    status: int
    reason: str


@dataclass(frozen=True)
class SendUpstream:
    """Bytes to write upstream, in order."""

    data: bytes


@dataclass(frozen=True)
class RequestStarted:
    """A head was accepted and its replacement sent upstream."""

    head: RequestHead


@dataclass(frozen=True)
class RequestEnded:
    """The request's body was completely sent upstream."""

    body_bytes: int
    """Body bytes sent upstream, chunk framing included."""


@dataclass(frozen=True)
class RespondAndClose:
    """Respond to the client with this status and plain-text body, then close both sides.

    The relay ignores all later input. For a rejected head, and for an error
    while a body rewrite held the head, nothing of the request was sent
    upstream. For an error inside a relayed chunked body, the head and the body
    bytes before the error were already sent. With pipelining, the caller sends
    this response after the responses to the earlier requests.
    """

    status: int
    reason: str
    body: bytes


@dataclass(frozen=True)
class BodyNotRewritten:
    """A requested body rewrite could not be done; the body went upstream unchanged."""

    reason: str


@dataclass(frozen=True)
class EndOfStream:
    """The client closed its sending side; shut down the upstream write side.

    Also emitted after EOF in the middle of a request: a partial head is
    dropped, and a partial body was sent upstream as received.
    """


Event = SendUpstream | RequestStarted | RequestEnded | RespondAndClose | Tunnel | BodyNotRewritten | EndOfStream


class _State(enum.Enum):
    HEAD = "head"
    BODY = "body"
    CHUNKED = "chunked"
    TUNNEL = "tunnel"
    CLOSED = "closed"
    FINISHED = "finished"


class _Output:
    """Event list that merges consecutive SendUpstream data into one event."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._pieces: list[bytes] = []

    def send(self, data: bytes) -> None:
        if data:
            self._pieces.append(data)

    def emit(self, event: Event) -> None:
        self._flush()
        self.events.append(event)

    def finish(self) -> list[Event]:
        self._flush()
        return self.events

    def _flush(self) -> None:
        if self._pieces:
            data = self._pieces[0] if len(self._pieces) == 1 else b"".join(self._pieces)
            self.events.append(SendUpstream(data))
            self._pieces = []


@dataclass
class _HeldBody:
    """A body being buffered for a rewrite."""

    rewrite: Callable[[bytes], bytes]
    head_sent: bool
    wire: bytearray = field(default_factory=bytearray)
    """Body bytes as received, with their framing."""
    data: bytearray = field(default_factory=bytearray)
    """De-chunked data of a chunked body."""


class RequestRelay:
    """Relay of the requests on one client connection to upstream.

    Feed it with receive_data and receive_eof and act on the returned events in
    order. If on_head always returns Forward(head.raw), the concatenated
    SendUpstream data equals the input bytes exactly.
    """

    def __init__(self, on_head: Callable[[RequestHead], Forward | Reject], limits: Limits = Limits()) -> None:
        self._on_head = on_head
        self._limits = limits
        self._state = _State.HEAD
        self._reset_head_scan()
        self._head: RequestHead | None = None
        self._forward: Forward | None = None
        self._leading = b""
        self._remaining = 0
        self._chunks: ChunkedReader | None = None
        self._held_body: _HeldBody | None = None
        self._body_sent = 0

    def receive_data(self, data: bytes) -> list[Event]:
        """Consume bytes from the client and return the resulting events."""
        if self._state in (_State.CLOSED, _State.FINISHED) or not data:
            return []
        data = bytes(data)
        if self._pending:
            data = bytes(self._pending) + data
            self._pending.clear()

        out = _Output()
        position = 0
        try:
            while position < len(data) and self._state not in (_State.CLOSED, _State.FINISHED):
                position = self._step(data, position, out)
        except HttpProtocolError as error:
            self._close_with(error.status, error.reason, out)
        return out.finish()

    def receive_eof(self) -> list[Event]:
        """Handle the client's half-close and return the final events."""
        if self._state in (_State.CLOSED, _State.FINISHED):
            return []
        out = _Output()
        if self._state == _State.HEAD and (self._pending or self._leading_crlf):
            logger.debug("client closed after %d bytes of an incomplete request head", len(self._pending))
        elif self._state in (_State.BODY, _State.CHUNKED):
            if self._chunks is not None:
                self._send_body_wire(self._chunks.pending(), out)
            if self._held_body is not None:
                self._give_up_rewrite("connection closed before the body was complete", out)
        self._pending.clear()
        self._state = _State.FINISHED
        out.emit(EndOfStream())
        return out.finish()

    def _step(self, data: bytes, position: int, out: _Output) -> int:
        if self._state == _State.HEAD:
            return self._read_head(data, position, out)
        if self._state == _State.BODY:
            size = min(self._remaining, len(data) - position)
            self._remaining -= size
            self._send_body_wire(data[position : position + size], out)
            if self._remaining == 0:
                self._end_request(out)
            return position + size
        if self._state == _State.CHUNKED:
            assert self._chunks is not None
            position = self._chunks.feed(
                data,
                position,
                lambda piece: self._send_body_wire(piece, out),
                lambda piece: self._hold_body_data(piece, out),
            )
            if self._chunks.done:
                self._end_request(out)
            return position
        # Tunnel: everything after the upgrade goes through raw.
        out.send(data[position:])
        return len(data)

    def _reset_head_scan(self) -> None:
        self._pending = bytearray()
        self._leading_crlf = 0
        self._scanned = 0
        self._line_start = 0
        self._lines = 0

    def _read_head(self, data: bytes, position: int, out: _Output) -> int:
        """Find the end of the head; on success parse it and start the request.

        Bare LF and the size limits are checked while the head arrives, so a
        client cannot make the relay buffer more than one head.
        """
        limits = self._limits
        if self._scanned == 0:
            # RFC 9112 section 2.2: ignore empty lines before the request line.
            # They are sent upstream with the head, so the upstream bytes match.
            while data.startswith(b"\r\n", position):
                self._leading_crlf += 1
                position += 2
                if self._leading_crlf * 2 > limits.max_head_bytes:
                    raise HttpProtocolError(431, "too many empty lines before the request line")
            if position == len(data) or (position == len(data) - 1 and data[position] == _CR):
                self._pending += data[position:]
                return len(data)
            if data[position] == _LF:
                raise HttpProtocolError(400, "bare LF before the request line; expected CRLF")

        start = position
        end = None
        search_from = start + self._scanned
        while end is None:
            newline = data.find(b"\n", search_from)
            if newline < 0:
                break
            line_start = start + self._line_start
            if newline == start or data[newline - 1] != _CR:
                raise HttpProtocolError(400, f"bare LF in request head line {quote(data[line_start : newline + 1])}; expected CRLF")
            if self._lines == 0 and newline - 1 - line_start > limits.max_request_line:
                raise HttpProtocolError(414, f"request line {quote(data[line_start:newline])} is longer than {limits.max_request_line} bytes")
            if newline - 1 == line_start:
                end = newline + 1
            else:
                self._lines += 1
                if self._lines > limits.max_headers + 1:
                    raise HttpProtocolError(431, f"request head has more than {limits.max_headers} headers")
            self._line_start = newline + 1 - start
            search_from = newline + 1

        head_size = (len(data) if end is None else end) - start
        if head_size > limits.max_head_bytes:
            size_text = f"{head_size} or more" if end is None else str(head_size)
            raise HttpProtocolError(431, f"request head of {size_text} bytes is larger than {limits.max_head_bytes} bytes")
        if end is None:
            if self._lines == 0:
                line = data[start:].removesuffix(b"\r")
                if len(line) > limits.max_request_line:
                    raise HttpProtocolError(414, f"request line {quote(line)} is longer than {limits.max_request_line} bytes")
            self._pending += data[start:]
            self._scanned = len(data) - start
            return len(data)

        leading = b"\r\n" * self._leading_crlf
        self._reset_head_scan()
        head = parse_request_head(data[start:end], limits)
        self._start_request(head, leading, out)
        return end

    def _start_request(self, head: RequestHead, leading: bytes, out: _Output) -> None:
        decision = self._on_head(head)
        if isinstance(decision, Reject):
            self._close_with(decision.status, decision.reason, out)
            return
        if not isinstance(decision, Forward):
            raise TypeError(f"on_head must return Forward or Reject, not {type(decision).__name__}")

        self._head = head
        self._forward = decision
        self._body_sent = 0
        self._leading = leading
        has_body = head.chunked or head.content_length is not None
        rewrite = decision.body_rewrite if has_body else None
        if rewrite is not None and (head.content_length or 0) > self._limits.max_body_buffer:
            out.emit(BodyNotRewritten(f"body larger than {self._limits.max_body_buffer} bytes"))
            rewrite = None

        # A client that sent Expect: 100-continue waits for the upstream's
        # interim response before it sends the body, so its head cannot wait
        # for the body.
        send_head_now = rewrite is None or head.expects_continue
        if send_head_now:
            self._send_head(decision.head, out)
        if rewrite is not None:
            self._held_body = _HeldBody(rewrite=rewrite, head_sent=send_head_now)

        if head.chunked:
            self._chunks = ChunkedReader(self._limits)
            self._state = _State.CHUNKED
        elif head.content_length:
            self._chunks = None
            self._remaining = head.content_length
            self._state = _State.BODY
        else:
            self._chunks = None
            self._end_request(out)

    def _send_head(self, head_bytes: bytes, out: _Output) -> None:
        assert self._head is not None
        out.send(self._leading + head_bytes)
        out.emit(RequestStarted(self._head))

    def _send_body_wire(self, piece: bytes, out: _Output) -> None:
        if self._held_body is not None:
            self._held_body.wire += piece
            return
        out.send(piece)
        self._body_sent += len(piece)

    def _hold_body_data(self, piece: bytes, out: _Output) -> None:
        if self._held_body is None:
            return
        self._held_body.data += piece
        if len(self._held_body.data) > self._limits.max_body_buffer:
            self._give_up_rewrite(f"body larger than {self._limits.max_body_buffer} bytes", out)

    def _give_up_rewrite(self, reason: str, out: _Output) -> None:
        """Send the head and the body received so far unchanged, and relay the rest raw."""
        held_body = self._held_body
        assert held_body is not None and self._forward is not None
        self._held_body = None
        out.emit(BodyNotRewritten(reason))
        if not held_body.head_sent:
            self._send_head(self._forward.head, out)
        self._send_body_wire(bytes(held_body.wire), out)

    def _end_request(self, out: _Output) -> None:
        assert self._head is not None
        if self._held_body is not None:
            self._finish_rewrite(out)
        out.emit(RequestEnded(self._body_sent))
        if self._head.upgrade:
            # NOTE: if the server refuses the upgrade, later requests on this
            # connection are relayed raw and not rewritten.
            out.emit(Tunnel())
            self._state = _State.TUNNEL
        else:
            self._state = _State.HEAD

    def _finish_rewrite(self, out: _Output) -> None:
        held_body = self._held_body
        head = self._head
        assert held_body is not None and head is not None and self._forward is not None
        self._held_body = None
        head_bytes = self._forward.head
        original_wire = bytes(held_body.wire)
        body = bytes(held_body.data) if head.chunked else original_wire
        new_body = bytes(held_body.rewrite(body))

        if new_body == body:
            body_wire = original_wire
        elif head.chunked:
            assert self._chunks is not None
            chunk = b"%x\r\n%b\r\n" % (len(new_body), new_body) if new_body else b""
            body_wire = chunk + b"0\r\n" + self._chunks.trailer_section
        elif not held_body.head_sent:
            head_bytes = _replace_content_length(head_bytes, len(new_body))
            body_wire = new_body
        elif len(new_body) == len(body):
            body_wire = new_body
        else:
            out.emit(BodyNotRewritten("Expect: 100-continue with a body whose length changed"))
            body_wire = original_wire

        if not held_body.head_sent:
            self._send_head(head_bytes, out)
        self._send_body_wire(body_wire, out)

    def _close_with(self, status: int, reason: str, out: _Output) -> None:
        logger.info("rejecting request with %d: %s", status, reason)
        self._held_body = None
        self._pending.clear()
        self._state = _State.CLOSED
        out.emit(RespondAndClose(status=status, reason=reason, body=reason.encode("utf-8") + b"\n"))


def _replace_content_length(head_bytes: bytes, length: int) -> bytes:
    """Return head_bytes with every Content-Length value replaced by length."""
    try:
        head = parse_request_head(head_bytes, _UNLIMITED)
    except HttpProtocolError:
        # The head may contain secret values, so the parser's message is not chained.
        raise ValueError("the forwarded head is not a valid request head; build it with RequestHead.rebuild") from None
    indexes = [index for index, header in enumerate(head.headers) if header.name.lower() == b"content-length"]
    return head.rebuild(values={index: b"%d" % length for index in indexes})
