"""Classify the first bytes of a sandbox connection as TLS, plaintext HTTP or other.

The gateway peeks at what the sandbox sends first and calls `classify` with
everything buffered so far. The function never consumes bytes: it returns None
while the prefix could still become a complete TLS ClientHello or HTTP request
head, and a `Classification` as soon as the prefix decides. A first byte that
starts neither a TLS handshake record (0x16) nor an uppercase HTTP method
decides at once.

TLS strategy: read consecutive handshake records (RFC 8446 section 5.1) and
append their fragments. The ClientHello is parsed once the length in the
handshake message header is reached, so a hello split over TCP segments or
over several records (large post-quantum key shares) is found. Every length
field must fit the field that contains it. A malformed hello is classified "other" with the
reason in `Classification.error`, never raised from `classify`.

HTTP strategy: check the request line byte by byte ("METHOD SP target SP
HTTP/1.x CRLF", uppercase method token), then wait for the whole head to read
the Host header.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

MAX_PEEK = 64 * 1024
"""Bytes the gateway buffers before it must decide."""

_CONTENT_TYPE_HANDSHAKE = 0x16
_HANDSHAKE_CLIENT_HELLO = 1
_RECORD_HEADER_SIZE = 5
_HANDSHAKE_HEADER_SIZE = 4
_MAX_RECORD_FRAGMENT = 2**14  # TLSPlaintext.length limit, RFC 8446 section 5.1

_EXT_SERVER_NAME = 0
_EXT_ALPN = 16
_EXT_SUPPORTED_VERSIONS = 43
_EXT_ENCRYPTED_CLIENT_HELLO = 0xFE0D
_SNI_HOST_NAME = 0

_MAX_SNI_LENGTH = 255
# RFC 6066 requires an ASCII host name. Underscores occur in real host names,
# and IDNs arrive as A-labels ("xn--..."), so both are accepted.
_SNI_PATTERN = re.compile(rb"[A-Za-z0-9._-]+")

# RFC 9110 token characters without the lowercase letters: methods are case
# sensitive and every registered method is uppercase.
_METHOD_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~")
_METHOD_FIRST_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")
# The longest registered method, UPDATEREDIRECTREF, has 17 characters.
_MAX_METHOD_LENGTH = 32
_VERSION_PREFIX = b"HTTP/1."
_HEADER_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HOST_VALUE = re.compile(rb"[\x21-\x7e]*")


class ClientHelloError(ValueError):
    """A TLS ClientHello, or the records that carry it, is malformed."""


@dataclass(frozen=True)
class ClientHello:
    """Fields of a TLS ClientHello that the gateway's decisions depend on."""

    sni: str | None
    """server_name host_name, lower-cased and without a trailing dot, or None if absent."""
    alpn: tuple[str, ...]
    """ALPN protocol names in the client's order, or () if absent."""
    legacy_version: int
    supported_versions: tuple[int, ...]
    has_encrypted_client_hello: bool
    """True if the encrypted_client_hello extension (0xfe0d) is present."""


@dataclass(frozen=True)
class HttpRequestPeek:
    """Request line and Host header of a plaintext HTTP request head."""

    method: str
    target: str
    host: str | None
    """Host header value as sent, with the port if any, or None if absent."""
    version: str


@dataclass(frozen=True)
class Classification:
    """Protocol of a connection, decided from its first bytes."""

    kind: Literal["tls", "http", "other"]
    client_hello: ClientHello | None = None
    http: HttpRequestPeek | None = None
    error: str | None = None
    """Reason why a TLS-looking or HTTP-looking prefix was classified "other"."""


def classify(data: bytes, *, eof: bool = False) -> Classification | None:
    """Classify the first bytes a client sent, without consuming them.

    Returns None when more bytes are needed: the caller reads more and calls
    again with the longer buffer. With eof=True, or once len(data) >= MAX_PEEK,
    it always returns a Classification. An empty buffer at EOF is "other"
    without an error.
    """
    data = bytes(data)
    final = eof or len(data) >= MAX_PEEK
    if not data:
        return Classification("other") if eof else None

    if data[0] == _CONTENT_TYPE_HANDSHAKE:
        return _classify_tls(data, final)
    if data[0] in _METHOD_FIRST_BYTES:
        return _classify_http(data, final)
    return Classification("other")


def parse_client_hello(data: bytes) -> ClientHello | None:
    """Parse a ClientHello from the start of a TLS record stream.

    Returns None while the records seen so far are valid but the handshake
    message is incomplete. Raises ClientHelloError for malformed records or a
    malformed hello, and for a hello that cannot fit in MAX_PEEK bytes of
    records. Bytes after the end of the ClientHello are ignored.
    """
    data = bytes(data)
    handshake = bytearray()
    message_size: int | None = None
    position = 0
    while True:
        header = data[position : position + _RECORD_HEADER_SIZE]
        _check_record_header(header, position)
        if len(header) < _RECORD_HEADER_SIZE:
            return None

        fragment_size = int.from_bytes(header[3:5], "big")
        if fragment_size == 0:
            raise ClientHelloError(
                f"empty handshake record at offset {position}: handshake records must not be empty"
            )
        if fragment_size > _MAX_RECORD_FRAGMENT:
            raise ClientHelloError(
                f"record length {fragment_size} at offset {position} is larger than the "
                f"maximum of {_MAX_RECORD_FRAGMENT} bytes"
            )
        fragment_start = position + _RECORD_HEADER_SIZE
        handshake += data[fragment_start : fragment_start + fragment_size]

        if message_size is None and len(handshake) >= _HANDSHAKE_HEADER_SIZE:
            message_size = _check_handshake_header(bytes(handshake[:_HANDSHAKE_HEADER_SIZE]))
        if fragment_start + fragment_size > len(data):
            return None
        position = fragment_start + fragment_size
        if message_size is not None and len(handshake) >= message_size:
            break

    return _parse_client_hello_body(bytes(handshake[_HANDSHAKE_HEADER_SIZE:message_size]))


def _classify_tls(data: bytes, final: bool) -> Classification | None:
    try:
        hello = parse_client_hello(data)
    except ClientHelloError as error:
        return Classification("other", error=str(error))
    if hello is not None:
        return Classification("tls", client_hello=hello)
    if final:
        return Classification(
            "other", error=f"incomplete TLS ClientHello: connection ended or peek limit reached after {len(data)} bytes"
        )
    return None


def _check_record_header(header: bytes, offset: int) -> None:
    """Raise ClientHelloError unless the (possibly partial) record header starts a handshake record."""
    if len(header) >= 1 and header[0] != _CONTENT_TYPE_HANDSHAKE:
        raise ClientHelloError(
            f"record of content type {header[0]} at offset {offset} before the ClientHello was "
            f"complete; expected {_CONTENT_TYPE_HANDSHAKE} (handshake)"
        )
    if len(header) >= 2 and header[1] != 3:
        raise ClientHelloError(
            f"record version {_quote(header[1:3])} at offset {offset}: expected major version 3"
        )


def _check_handshake_header(header: bytes) -> int:
    """Return the size of the whole handshake message, header included."""
    if header[0] != _HANDSHAKE_CLIENT_HELLO:
        raise ClientHelloError(
            f"handshake message type {header[0]}: expected {_HANDSHAKE_CLIENT_HELLO} (client_hello)"
        )
    body_size = int.from_bytes(header[1:4], "big")
    message_size = _HANDSHAKE_HEADER_SIZE + body_size
    records = -(-message_size // _MAX_RECORD_FRAGMENT)
    if message_size + records * _RECORD_HEADER_SIZE > MAX_PEEK:
        raise ClientHelloError(
            f"ClientHello of {body_size} bytes does not fit the peek limit of {MAX_PEEK} bytes"
        )
    return message_size


class _Reader:
    """Cursor over one length-delimited field; running past its end raises ClientHelloError."""

    def __init__(self, data: bytes, name: str) -> None:
        self._data = data
        self._position = 0
        self._name = name

    @property
    def remaining(self) -> int:
        return len(self._data) - self._position

    def take(self, size: int, field: str) -> bytes:
        if size > self.remaining:
            raise ClientHelloError(
                f"{field} needs {size} bytes but only {self.remaining} are left in {self._name}"
            )
        chunk = self._data[self._position : self._position + size]
        self._position += size
        return chunk

    def integer(self, size: int, field: str) -> int:
        return int.from_bytes(self.take(size, field), "big")

    def vector(self, length_size: int, field: str) -> _Reader:
        """Read a field prefixed by a length of length_size bytes."""
        length = self.integer(length_size, f"length of {field}")
        return _Reader(self.take(length, field), field)

    def rest(self) -> bytes:
        return self.take(self.remaining, "the rest")

    def expect_end(self) -> None:
        if self.remaining:
            raise ClientHelloError(
                f"{self.remaining} unexpected bytes after the end of {self._name}: "
                f"{_quote(self._data[self._position :])}"
            )


def _parse_client_hello_body(body: bytes) -> ClientHello:
    reader = _Reader(body, "ClientHello")
    legacy_version = reader.integer(2, "legacy_version")
    if legacy_version >> 8 != 3:
        raise ClientHelloError(f"legacy_version 0x{legacy_version:04x}: expected major version 3")
    reader.take(32, "random")
    session_id = reader.vector(1, "legacy_session_id")
    if session_id.remaining > 32:
        raise ClientHelloError(
            f"legacy_session_id of {session_id.remaining} bytes: expected at most 32"
        )
    cipher_suites = reader.vector(2, "cipher_suites")
    if cipher_suites.remaining == 0 or cipher_suites.remaining % 2:
        raise ClientHelloError(
            f"cipher_suites of {cipher_suites.remaining} bytes: expected a non-zero even length"
        )
    compression_methods = reader.vector(1, "legacy_compression_methods")
    if compression_methods.remaining == 0:
        raise ClientHelloError("legacy_compression_methods is empty: expected at least one method")

    extensions: dict[int, bytes] = {}
    # Hellos before TLS 1.2 may end here without an extensions block.
    if reader.remaining:
        block = reader.vector(2, "extensions")
        reader.expect_end()
        while block.remaining:
            extension_type = block.integer(2, "extension_type")
            extension_data = block.vector(2, f"extension 0x{extension_type:04x}").rest()
            if extension_type in extensions:
                raise ClientHelloError(
                    f"extension 0x{extension_type:04x} appears twice: each extension may appear once"
                )
            extensions[extension_type] = extension_data

    sni = None
    if _EXT_SERVER_NAME in extensions:
        sni = _parse_server_name(extensions[_EXT_SERVER_NAME])
    alpn: tuple[str, ...] = ()
    if _EXT_ALPN in extensions:
        alpn = _parse_alpn(extensions[_EXT_ALPN])
    supported_versions: tuple[int, ...] = ()
    if _EXT_SUPPORTED_VERSIONS in extensions:
        supported_versions = _parse_supported_versions(extensions[_EXT_SUPPORTED_VERSIONS])

    return ClientHello(
        sni=sni,
        alpn=alpn,
        legacy_version=legacy_version,
        supported_versions=supported_versions,
        has_encrypted_client_hello=_EXT_ENCRYPTED_CLIENT_HELLO in extensions,
    )


def _parse_server_name(extension: bytes) -> str | None:
    """Return the host_name entry of a server_name extension (RFC 6066 section 3)."""
    reader = _Reader(extension, "server_name extension")
    names = reader.vector(2, "server_name_list")
    reader.expect_end()
    if names.remaining == 0:
        raise ClientHelloError("server_name_list is empty: expected one host_name")

    host_name: bytes | None = None
    while names.remaining:
        name_type = names.integer(1, "name_type")
        name = names.vector(2, "server name").rest()
        if name_type != _SNI_HOST_NAME:
            continue
        if host_name is not None:
            raise ClientHelloError("server_name_list contains two host_name entries: expected one")
        host_name = name

    if host_name is None:
        return None
    if host_name.endswith(b"."):
        host_name = host_name[:-1]
    if not host_name or len(host_name) > _MAX_SNI_LENGTH or not _SNI_PATTERN.fullmatch(host_name):
        raise ClientHelloError(
            f"invalid server_name {_quote(host_name)}: expected an ASCII DNS host name of at "
            f"most {_MAX_SNI_LENGTH} characters"
        )
    return host_name.decode("ascii").lower()


def _parse_alpn(extension: bytes) -> tuple[str, ...]:
    """Return the protocol names of an ALPN extension (RFC 7301 section 3.1)."""
    reader = _Reader(extension, "application_layer_protocol_negotiation extension")
    names = reader.vector(2, "protocol_name_list")
    reader.expect_end()
    if names.remaining == 0:
        raise ClientHelloError("ALPN protocol_name_list is empty: expected at least one protocol")
    protocols = []
    while names.remaining:
        protocol = names.vector(1, "ProtocolName").rest()
        if not protocol:
            raise ClientHelloError("empty ALPN protocol name: expected 1 to 255 bytes")
        # Latin-1 maps every byte to one character, so the name round-trips exactly.
        protocols.append(protocol.decode("latin-1"))
    return tuple(protocols)


def _parse_supported_versions(extension: bytes) -> tuple[int, ...]:
    reader = _Reader(extension, "supported_versions extension")
    versions = reader.vector(1, "versions")
    reader.expect_end()
    if versions.remaining == 0 or versions.remaining % 2:
        raise ClientHelloError(
            f"supported_versions list of {versions.remaining} bytes: expected a non-zero even length"
        )
    return tuple(versions.integer(2, "version") for _ in range(versions.remaining // 2))


def _classify_http(data: bytes, final: bool) -> Classification | None:
    """Classify a prefix whose first byte is an uppercase letter."""
    try:
        peek = _peek_http_request(data)
    except ValueError as error:
        return Classification("other", error=str(error))
    if peek is not None:
        return Classification("http", http=peek)
    if final:
        return Classification(
            "other", error=f"incomplete HTTP request head: connection ended or peek limit reached after {len(data)} bytes"
        )
    return None


def _peek_http_request(data: bytes) -> HttpRequestPeek | None:
    """Return the request peek, None if the head is incomplete, or raise ValueError."""
    line_end = _check_request_line_prefix(data)
    if line_end is None:
        return None
    method, target, version = data[: line_end - 2].decode("ascii").split(" ")

    host: str | None = None
    position = line_end
    while True:
        newline = data.find(b"\n", position)
        if newline < 0:
            return None
        if newline == position or data[newline - 1] != 0x0D:
            raise ValueError(
                f"bare LF in HTTP header line {_quote(data[position : newline + 1])}: expected CRLF"
            )
        line = data[position : newline - 1]
        position = newline + 1
        if not line:
            return HttpRequestPeek(method=method, target=target, host=host, version=version)
        name, value = _split_header_line(line)
        if name.lower() == b"host":
            if host is not None:
                raise ValueError("HTTP request has more than one Host header: expected one")
            if not _HOST_VALUE.fullmatch(value):
                raise ValueError(f"invalid Host header value {_quote(value)}: expected visible ASCII")
            host = value.decode("ascii")


def _check_request_line_prefix(data: bytes) -> int | None:
    """Return the end of the request line (after CRLF), or None if the prefix may still become one.

    Raises ValueError as soon as the prefix cannot start "METHOD SP target SP HTTP/1.x CRLF".
    """
    method_end = 0
    while method_end < len(data) and data[method_end] in _METHOD_BYTES:
        method_end += 1
    if method_end > _MAX_METHOD_LENGTH:
        raise ValueError(
            f"HTTP method {_quote(data[:method_end])} is longer than {_MAX_METHOD_LENGTH} bytes"
        )
    if method_end == len(data):
        return None
    if data[method_end] != 0x20:
        raise ValueError(
            f"invalid HTTP request line {_quote(data[: method_end + 1])}: expected an uppercase method token and a space"
        )

    target_start = method_end + 1
    target_end = target_start
    while target_end < len(data) and 0x21 <= data[target_end] <= 0x7E:
        target_end += 1
    if target_end == len(data):
        return None
    if target_end == target_start or data[target_end] != 0x20:
        raise ValueError(
            f"invalid HTTP request target in {_quote(data[: target_end + 1])}: expected visible ASCII and a space"
        )

    version_start = target_end + 1
    expected = _VERSION_PREFIX
    received = data[version_start : version_start + len(expected) + 3]
    if not expected.startswith(received[: len(expected)]):
        raise ValueError(
            f"invalid HTTP version {_quote(received)}: expected HTTP/1.0 or HTTP/1.1"
        )
    suffix = received[len(expected) :]
    valid_suffix = (
        (len(suffix) < 1 or 0x30 <= suffix[0] <= 0x39)
        and (len(suffix) < 2 or suffix[1] == 0x0D)
        and (len(suffix) < 3 or suffix[2] == 0x0A)
    )
    if not valid_suffix:
        raise ValueError(
            f"invalid end of HTTP request line {_quote(received)}: expected HTTP/1.x and CRLF"
        )
    if len(suffix) < 3:
        return None
    return version_start + len(expected) + 3


def _split_header_line(line: bytes) -> tuple[bytes, bytes]:
    if line[:1] in (b" ", b"\t"):
        raise ValueError(f"obsolete line folding in HTTP header line {_quote(line)}")
    name, colon, value = line.partition(b":")
    if not colon:
        raise ValueError(f"HTTP header line {_quote(line)} has no colon: expected 'name: value'")
    if not _HEADER_NAME.fullmatch(name):
        raise ValueError(f"invalid HTTP header name {_quote(name)}: expected a token")
    return name, value.strip(b" \t")


def _quote(data: bytes, limit: int = 40) -> str:
    text = repr(bytes(data[:limit]))
    return text + "..." if len(data) > limit else text
