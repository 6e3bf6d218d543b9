"""Tests of connection classification from the first bytes a client sends."""

from __future__ import annotations

import ssl
import struct

import pytest

from sealbox.gateway.clienthello import (
    MAX_PEEK,
    ClientHello,
    ClientHelloError,
    classify,
    parse_client_hello,
)


def real_client_hello(server_hostname: str | None = "github.com", alpn: list[str] | None = None) -> bytes:
    """Return the first flight of a real TLS client (Python's ssl module), without a socket."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if server_hostname is None or not server_hostname[0].isalpha():
        context.check_hostname = False
    context.set_alpn_protocols(alpn if alpn is not None else ["h2", "http/1.1"])
    outgoing = ssl.MemoryBIO()
    connection = context.wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname=server_hostname)
    with pytest.raises(ssl.SSLWantReadError):
        connection.do_handshake()
    return outgoing.read()


def reframe(records: bytes, sizes: list[int]) -> bytes:
    """Return the handshake bytes of records re-framed into records of the given fragment sizes.

    The last record takes whatever is left.
    """
    handshake = _handshake_bytes(records)
    out = []
    position = 0
    for size in sizes + [len(handshake)]:
        fragment = handshake[position : position + size]
        if not fragment:
            break
        out.append(b"\x16\x03\x01" + struct.pack(">H", len(fragment)) + fragment)
        position += len(fragment)
    return b"".join(out)


def _handshake_bytes(records: bytes) -> bytes:
    out = []
    position = 0
    while position < len(records):
        size = struct.unpack(">H", records[position + 3 : position + 5])[0]
        out.append(records[position + 5 : position + 5 + size])
        position += 5 + size
    return b"".join(out)


def vector(length_size: int, data: bytes) -> bytes:
    return len(data).to_bytes(length_size, "big") + data


def extension(extension_type: int, data: bytes) -> bytes:
    return struct.pack(">H", extension_type) + vector(2, data)


def sni_extension(name: bytes) -> bytes:
    return extension(0, vector(2, b"\x00" + vector(2, name)))


def build_hello(
    extensions: list[bytes] | None = None,
    *,
    session_id: bytes = b"",
    cipher_suites: bytes = b"\x13\x01",
    compression: bytes = b"\x00",
    legacy_version: int = 0x0303,
) -> bytes:
    """Return one handshake record carrying a hand-built ClientHello."""
    body = (
        struct.pack(">H", legacy_version)
        + bytes(32)
        + vector(1, session_id)
        + vector(2, cipher_suites)
        + vector(1, compression)
    )
    if extensions is not None:
        body += vector(2, b"".join(extensions))
    message = b"\x01" + vector(3, body)
    return b"\x16\x03\x01" + vector(2, message)


@pytest.fixture(scope="module")
def github_hello() -> bytes:
    return real_client_hello()


def test_real_hello_sni_and_alpn(github_hello: bytes) -> None:
    result = classify(github_hello)
    assert result is not None
    assert result.kind == "tls"
    assert result.client_hello is not None
    assert result.client_hello.sni == "github.com"
    assert result.client_hello.alpn == ("h2", "http/1.1")
    assert result.error is None


def test_real_hello_versions(github_hello: bytes) -> None:
    hello = parse_client_hello(github_hello)
    assert hello is not None
    assert hello.legacy_version == 0x0303
    assert 0x0304 in hello.supported_versions
    assert hello.has_encrypted_client_hello is False


def test_real_hello_split_at_every_byte(github_hello: bytes) -> None:
    for size in range(len(github_hello)):
        assert classify(github_hello[:size]) is None, size
    assert classify(github_hello).kind == "tls"  # type: ignore[union-attr]


def test_hello_over_two_records(github_hello: bytes) -> None:
    two_records = reframe(github_hello, [100])
    assert two_records.count(b"\x16\x03\x01") >= 2
    result = classify(two_records)
    assert result is not None
    assert result.client_hello == parse_client_hello(github_hello)


def test_hello_over_records_split_every_byte(github_hello: bytes) -> None:
    records = reframe(github_hello, [2, 1, 300])
    for size in range(len(records)):
        assert classify(records[:size]) is None, size
    result = classify(records)
    assert result is not None
    assert result.client_hello is not None
    assert result.client_hello.sni == "github.com"


def test_large_hello_over_records() -> None:
    # A 20000-byte extension stands in for large post-quantum key shares,
    # which do not fit one 16384-byte record.
    big = build_hello([sni_extension(b"example.com"), extension(0x4444, bytes(20000))])
    records = reframe(big, [16384])
    result = classify(records)
    assert result is not None
    assert result.kind == "tls"
    assert result.client_hello is not None
    assert result.client_hello.sni == "example.com"


def test_ip_literal_sends_no_sni() -> None:
    result = classify(real_client_hello("127.0.0.1"))
    assert result is not None
    assert result.kind == "tls"
    assert result.client_hello is not None
    assert result.client_hello.sni is None


def test_no_alpn_is_empty_tuple() -> None:
    result = classify(real_client_hello("example.org", alpn=[]))
    assert result is not None
    assert result.client_hello is not None
    assert result.client_hello.alpn == ()


def test_sni_lowercased_without_dot() -> None:
    hello = parse_client_hello(build_hello([sni_extension(b"API.GitHub.COM.")]))
    assert hello is not None
    assert hello.sni == "api.github.com"


def test_encrypted_client_hello_flag() -> None:
    hello = parse_client_hello(build_hello([sni_extension(b"public.example"), extension(0xFE0D, b"\x00\x01")]))
    assert hello == ClientHello(
        sni="public.example",
        alpn=(),
        legacy_version=0x0303,
        supported_versions=(),
        has_encrypted_client_hello=True,
    )


def test_hello_without_extensions() -> None:
    hello = parse_client_hello(build_hello(None))
    assert hello is not None
    assert hello.sni is None


def test_trailing_bytes_after_hello_ignored(github_hello: bytes) -> None:
    result = classify(github_hello + b"\x14\x03\x03\x00\x01\x01")
    assert result is not None
    assert result.kind == "tls"


def _with_length(data: bytes, offset: int, size: int, value: int) -> bytes:
    return data[:offset] + value.to_bytes(size, "big") + data[offset + size :]


# Offsets in a build_hello record with an empty session id: 5 record header,
# 4 handshake header, 2 version, 32 random, session id length at 43, cipher
# suites length at 44, compression methods length at 48, extensions length at 50.
MALFORMED = {
    "sni list longer than extension": (
        build_hello([extension(0, b"\x00\x50\x00\x00\x03abc")]),
        "server_name_list",
    ),
    "sni name longer than list": (
        build_hello([extension(0, vector(2, b"\x00\x00\x40abc"))]),
        "server name",
    ),
    "extension longer than block": (
        build_hello([b"\x00\x00\x01\x00abc"]),
        "extension 0x0000",
    ),
    "extensions block longer than hello": (
        _with_length(build_hello([sni_extension(b"a.example")]), 50, 2, 0x0FFF),
        "extensions needs 4095 bytes",
    ),
    "session id too long": (build_hello([], session_id=bytes(33)), "legacy_session_id"),
    "odd cipher suites": (build_hello([], cipher_suites=b"\x13\x01\x13"), "cipher_suites"),
    "no compression methods": (build_hello([], compression=b""), "legacy_compression_methods"),
    "duplicate extension": (
        build_hello([sni_extension(b"a.example"), sni_extension(b"b.example")]),
        "appears twice",
    ),
    "empty sni list": (build_hello([extension(0, vector(2, b""))]), "server_name_list is empty"),
    "sni with space": (build_hello([sni_extension(b"bad host")]), "invalid server_name b'bad host'"),
    "empty alpn name": (build_hello([extension(16, vector(2, b"\x00"))]), "empty ALPN protocol name"),
    "odd supported versions": (build_hello([extension(43, vector(1, b"\x03"))]), "supported_versions"),
    "wrong legacy version": (build_hello([], legacy_version=0x0200), "legacy_version 0x0200"),
    "server hello type": (b"\x16\x03\x03\x00\x04\x02\x00\x00\x00", "handshake message type 2"),
    "record version 2": (b"\x16\x02\x00\x00\x04\x01\x00\x00\x00", "record version"),
    "empty record": (b"\x16\x03\x01\x00\x00", "empty handshake record"),
    "record too long": (b"\x16\x03\x01\x40\x01\x01", "larger than the maximum of 16384"),
    "alert before hello complete": (
        b"\x16\x03\x01\x00\x02\x01\x00" + b"\x15\x03\x03\x00\x02\x02\x28",
        "content type 21",
    ),
    "hello larger than peek limit": (b"\x16\x03\x01\x00\x04\x01\x01\x00\x00", "peek limit"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_hello_is_other(case: str) -> None:
    data, expected = MALFORMED[case]
    result = classify(data)
    assert result is not None
    assert result.kind == "other"
    assert result.error is not None
    assert expected in result.error


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_hello_raises(case: str) -> None:
    data, expected = MALFORMED[case]
    with pytest.raises(ClientHelloError) as caught:
        parse_client_hello(data)
    assert expected in str(caught.value)


def test_handshake_length_too_short(github_hello: bytes) -> None:
    # Shrinking the handshake length by one cuts the last extension short.
    declared = int.from_bytes(github_hello[6:9], "big")
    data = _with_length(github_hello, 6, 3, declared - 1)
    result = classify(data)
    assert result is not None
    assert result.kind == "other"
    assert result.error is not None
    assert "only" in result.error


def test_partial_hello_at_eof(github_hello: bytes) -> None:
    result = classify(github_hello[:100], eof=True)
    assert result is not None
    assert result.kind == "other"
    assert result.error is not None
    assert result.error.startswith("incomplete TLS ClientHello")


def test_tls_header_only_waits() -> None:
    assert classify(b"\x16") is None
    assert classify(b"\x16\x03") is None


def test_empty_buffer_waits() -> None:
    assert classify(b"") is None


def test_empty_buffer_at_eof() -> None:
    result = classify(b"", eof=True)
    assert result is not None
    assert result.kind == "other"
    assert result.error is None


def test_ssh_banner_is_other() -> None:
    result = classify(b"SSH-2.0-OpenSSH")
    assert result is not None
    assert result.kind == "other"


def test_binary_first_byte_is_other() -> None:
    for first in (b"\x00", b"\x80", b"\x05", b"g"):
        result = classify(first)
        assert result is not None, first
        assert result.kind == "other", first
        assert result.error is None, first


def test_http_with_host() -> None:
    result = classify(b"GET /path?q=1 HTTP/1.1\r\nUser-Agent: curl\r\nHOST: example.com:8080\r\n\r\n")
    assert result is not None
    assert result.kind == "http"
    assert result.http is not None
    assert result.http.method == "GET"
    assert result.http.target == "/path?q=1"
    assert result.http.host == "example.com:8080"
    assert result.http.version == "HTTP/1.1"


def test_http_without_host() -> None:
    result = classify(b"GET / HTTP/1.0\r\nAccept: */*\r\n\r\n")
    assert result is not None
    assert result.kind == "http"
    assert result.http is not None
    assert result.http.host is None


def test_http_connect_and_extension_method() -> None:
    for method in ("CONNECT", "M-SEARCH", "PROPFIND"):
        data = f"{method} example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n".encode()
        result = classify(data)
        assert result is not None, method
        assert result.http is not None, method
        assert result.http.method == method


def test_http_split_at_every_byte() -> None:
    data = b"POST /upload HTTP/1.1\r\nHost: example.com\r\nContent-Length: 3\r\n\r\n"
    for size in range(len(data)):
        assert classify(data[:size]) is None, size
    result = classify(data)
    assert result is not None
    assert result.kind == "http"


def test_http_body_after_head_ignored() -> None:
    result = classify(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc")
    assert result is not None
    assert result.kind == "http"


def test_http_incomplete_head_at_eof() -> None:
    result = classify(b"GET / HTTP/1.1\r\nHost: a", eof=True)
    assert result is not None
    assert result.kind == "other"
    assert result.error is not None
    assert result.error.startswith("incomplete HTTP request head")


def test_http_incomplete_head_at_peek_limit() -> None:
    data = b"GET / HTTP/1.1\r\nX-Padding: " + b"a" * MAX_PEEK
    result = classify(data)
    assert result is not None
    assert result.kind == "other"


INVALID_HTTP = {
    "lowercase method": (b"GEt / HTTP/1.1\r\n", "expected an uppercase method token"),
    "two spaces": (b"GET  / HTTP/1.1\r\n", "invalid HTTP request target"),
    "http 2 version": (b"GET / HTTP/2.0\r\n", "invalid HTTP version b'HTTP/2"),
    "no version": (b"GET /\r\n", "invalid HTTP request target"),
    "lowercase version": (b"GET / http/1.1\r\n", "invalid HTTP version"),
    "bare LF ends line": (b"GET / HTTP/1.1\n", "invalid end of HTTP request line"),
    "bare LF in header": (b"GET / HTTP/1.1\r\nHost: a\n\r\n", "bare LF"),
    "two hosts": (b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n", "more than one Host"),
    "obs-fold": (b"GET / HTTP/1.1\r\nHost: a\r\n b\r\n\r\n", "obsolete line folding"),
    "no colon": (b"GET / HTTP/1.1\r\nHost a\r\n\r\n", "has no colon"),
    "long method": (b"A" * 33, "longer than 32"),
}


@pytest.mark.parametrize("case", sorted(INVALID_HTTP))
def test_invalid_http_is_other(case: str) -> None:
    data, expected = INVALID_HTTP[case]
    result = classify(data)
    assert result is not None
    assert result.kind == "other"
    assert result.error is not None
    assert expected in result.error


def test_invalid_prefix_decides_early() -> None:
    # The version is already wrong, although the request line is incomplete.
    result = classify(b"GET / HTTP/2")
    assert result is not None
    assert result.kind == "other"
