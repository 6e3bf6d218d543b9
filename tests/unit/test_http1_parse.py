"""Tests of strict request head parsing, rejects and byte-exact head rebuilding."""

from __future__ import annotations

import pytest

from sealbox.gateway.http1 import (
    Forward,
    HttpProtocolError,
    Limits,
    RequestRelay,
    RespondAndClose,
    SendUpstream,
    parse_request_head,
)

HOST = b"Host: example.com\r\n"

# Each case: request bytes, expected status, bytes the reason must quote.
REJECTS: dict[str, tuple[bytes, int, bytes]] = {
    "obs-fold": (b"GET / HTTP/1.1\r\n" + HOST + b"X-A: a\r\n folded\r\n\r\n", 400, b" folded"),
    "obs-fold tab": (b"GET / HTTP/1.1\r\n" + HOST + b"X-A: a\r\n\tfolded\r\n\r\n", 400, b"\tfolded"),
    "bare LF in header": (b"GET / HTTP/1.1\r\nHost: a\nX-A: b\r\n\r\n", 400, b"Host: a\n"),
    "bare LF request line": (b"GET / HTTP/1.1\nHost: a\r\n\r\n", 400, b"GET / HTTP/1.1\n"),
    "bare LF ends head": (b"GET / HTTP/1.1\r\nHost: a\r\n\n", 400, b"\n"),
    "NUL in value": (b"GET / HTTP/1.1\r\n" + HOST + b"X-A: a\x00b\r\n\r\n", 400, b"a\x00b"),
    "CR in value": (b"GET / HTTP/1.1\r\n" + HOST + b"X-A: a\rb\r\n\r\n", 400, b"a\rb"),
    "DEL in value": (b"GET / HTTP/1.1\r\n" + HOST + b"X-A: a\x7fb\r\n\r\n", 400, b"a\x7fb"),
    "escape in value": (b"GET / HTTP/1.1\r\n" + HOST + b"X-A: \x1b[0m\r\n\r\n", 400, b"\x1b[0m"),
    "space in name": (b"GET / HTTP/1.1\r\n" + HOST + b"Bad Name: x\r\n\r\n", 400, b"Bad Name"),
    "slash in name": (b"GET / HTTP/1.1\r\n" + HOST + b"X/Y: x\r\n\r\n", 400, b"X/Y"),
    "space before colon": (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400, b"Host : a"),
    "tab before colon": (b"GET / HTTP/1.1\r\n" + HOST + b"X-A\t: a\r\n\r\n", 400, b"X-A\t: a"),
    "missing colon": (b"GET / HTTP/1.1\r\n" + HOST + b"NoColon\r\n\r\n", 400, b"NoColon"),
    "empty name": (b"GET / HTTP/1.1\r\n" + HOST + b": x\r\n\r\n", 400, b"''"),
    "invalid method": (b"G(T / HTTP/1.1\r\n" + HOST + b"\r\n", 400, b"G(T"),
    "two spaces": (b"GET  / HTTP/1.1\r\n" + HOST + b"\r\n", 400, b"GET  / HTTP/1.1"),
    "two parts": (b"GET /\r\n" + HOST + b"\r\n", 400, b"GET /"),
    "non-ASCII target": (b"GET /\xc3\xa9 HTTP/1.1\r\n" + HOST + b"\r\n", 400, b"/\xc3\xa9"),
    "lowercase version": (b"GET / http/1.1\r\n" + HOST + b"\r\n", 400, b"http/1.1"),
    "short version": (b"GET / HTTP/1\r\n" + HOST + b"\r\n", 400, b"HTTP/1"),
    "http 2 version": (b"GET / HTTP/2.0\r\n" + HOST + b"\r\n", 505, b"HTTP/2.0"),
    "http 1.2 version": (b"GET / HTTP/1.2\r\n" + HOST + b"\r\n", 505, b"HTTP/1.2"),
    "conflicting lengths": (
        b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        400,
        b"5, 6",
    ),
    "conflicting length list": (b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 5, 6\r\n\r\nhello", 400, b"5, 6"),
    "hex length": (b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 0x10\r\n\r\n", 400, b"0x10"),
    "negative length": (b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: -1\r\n\r\n", 400, b"-1"),
    "plus length": (b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: +1\r\n\r\n", 400, b"+1"),
    "empty length": (b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length:\r\n\r\n", 400, b"''"),
    "huge length": (
        b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 1234567890123456789\r\n\r\n",
        400,
        b"1234567890123456789",
    ),
    "length and chunked": (
        b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        400,
        b"chunked",
    ),
    "gzip then chunked": (
        b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: gzip, chunked\r\n\r\n",
        400,
        b"gzip, chunked",
    ),
    "identity coding": (b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: identity\r\n\r\n", 400, b"identity"),
    "chunked twice": (
        b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        400,
        b"chunked, chunked",
    ),
    "chunked in HTTP/1.0": (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400, b"chunked"),
    "no host": (b"GET /path HTTP/1.1\r\nAccept: */*\r\n\r\n", 400, b"GET /path"),
    "two hosts": (b"GET / HTTP/1.1\r\nHost: a\r\nHOST: b\r\n\r\n", 400, b"a, b"),
    "invalid chunk size": (
        b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
        400,
        b"zz",
    ),
    "chunk size with space": (
        b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n1 a\r\n",
        400,
        b"1 a",
    ),
    "negative chunk size": (
        b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n-1\r\n",
        400,
        b"-1",
    ),
    "bad chunk extension": (
        b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n3;a b\r\nabc\r\n0\r\n\r\n",
        400,
        b"3;a b",
    ),
    "huge chunk size": (
        b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n1000000000000000\r\n",
        400,
        b"1000000000000000",
    ),
    "bare LF after chunk size": (
        b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n3\nabc\r\n",
        400,
        b"3\n",
    ),
    "missing CRLF after data": (
        b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabcXY",
        400,
        b"X",
    ),
    "LF only after data": (
        b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\n0\r\n\r\n",
        400,
        b"\n",
    ),
    "obs-fold in trailer": (
        b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n0\r\nX-T: a\r\n b\r\n\r\n",
        400,
        b" b",
    ),
    "bare LF in trailer": (
        b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n0\r\nX-T: a\n\r\n",
        400,
        b"X-T: a\n",
    ),
    "invalid trailer name": (
        b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n0\r\nX T: a\r\n\r\n",
        400,
        b"X T",
    ),
}

SMALL = Limits(max_request_line=32, max_head_bytes=128, max_headers=4, max_chunk_line=8)

LIMIT_REJECTS: dict[str, tuple[bytes, int, bytes]] = {
    "long request line": (b"GET /" + b"a" * 40 + b" HTTP/1.1\r\n" + HOST + b"\r\n", 414, b"GET /aaaa"),
    "long partial request line": (b"GET /" + b"a" * 40, 414, b"GET /aaaa"),
    "too many headers": (b"GET / HTTP/1.1\r\n" + HOST + b"A: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n", 431, b""),
    "head too large": (b"GET / HTTP/1.1\r\n" + HOST + b"X-Long: " + b"v" * 120 + b"\r\n\r\n", 431, b""),
    "partial head too large": (b"GET / HTTP/1.1\r\n" + HOST + b"X-Long: " + b"v" * 120, 431, b""),
    "long chunk line": (
        b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n1;ab=cdef\r\n",
        400,
        b"1;ab=cdef",
    ),
    "many trailers": (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\n\r\n",
        431,
        b"",
    ),
}


def run_relay(data: bytes, limits: Limits = Limits(), step: int | None = None) -> list[object]:
    relay = RequestRelay(lambda head: Forward(head.raw), limits)
    events: list[object] = []
    if step is None:
        events += relay.receive_data(data)
    else:
        for start in range(0, len(data), step):
            events += relay.receive_data(data[start : start + step])
    return events


def sent_upstream(events: list[object]) -> bytes:
    return b"".join(event.data for event in events if isinstance(event, SendUpstream))


def assert_rejected(events: list[object], status: int, quoted: bytes) -> None:
    closes = [event for event in events if isinstance(event, RespondAndClose)]
    assert len(closes) == 1
    assert closes[0].status == status
    assert repr(quoted)[2:-1] in closes[0].reason
    assert closes[0].body == closes[0].reason.encode() + b"\n"


@pytest.mark.parametrize("case", sorted(REJECTS))
def test_reject_status_and_quote(case: str) -> None:
    data, status, quoted = REJECTS[case]
    assert_rejected(run_relay(data), status, quoted)


@pytest.mark.parametrize("case", sorted(REJECTS))
def test_reject_byte_by_byte(case: str) -> None:
    data, status, quoted = REJECTS[case]
    assert_rejected(run_relay(data, step=1), status, quoted)


@pytest.mark.parametrize("case", sorted(LIMIT_REJECTS))
def test_limit_reject_status(case: str) -> None:
    data, status, quoted = LIMIT_REJECTS[case]
    assert_rejected(run_relay(data, SMALL), status, quoted)


@pytest.mark.parametrize("case", sorted(LIMIT_REJECTS))
def test_limit_reject_byte_by_byte(case: str) -> None:
    data, status, quoted = LIMIT_REJECTS[case]
    assert_rejected(run_relay(data, SMALL, step=1), status, quoted)


def test_head_reject_sends_nothing() -> None:
    for case in sorted(REJECTS):
        data, _, _ = REJECTS[case]
        if b"Transfer-Encoding: chunked\r\n\r\n" in data and b"Content-Length" not in data and b"HTTP/1.0" not in data:
            continue  # body errors: the valid head was already sent
        assert sent_upstream(run_relay(data)) == b"", case


def test_chunk_error_sends_head_first() -> None:
    data, _, _ = REJECTS["invalid chunk size"]
    assert sent_upstream(run_relay(data)) == data[: data.index(b"\r\n\r\n") + 4]


def test_request_line_at_limit_accepted() -> None:
    line = b"GET /" + b"a" * (32 - len(b"GET / HTTP/1.1")) + b" HTTP/1.1"
    assert len(line) == 32
    data = line + b"\r\n" + HOST + b"\r\n"
    assert sent_upstream(run_relay(data, SMALL, step=1)) == data


def test_identical_lengths_collapse() -> None:
    head = parse_request_head(b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 3\r\ncontent-length: 3, 3\r\n\r\n")
    assert head.content_length == 3


def test_identical_lengths_relayed() -> None:
    data = b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 3\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\n" + HOST + b"\r\n"
    assert sent_upstream(run_relay(data)) == data


def test_chunked_is_case_insensitive() -> None:
    head = parse_request_head(b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: Chunked\r\n\r\n")
    assert head.chunked is True
    assert head.content_length is None


def test_http10_without_host() -> None:
    head = parse_request_head(b"GET / HTTP/1.0\r\n\r\n")
    assert head.version == b"HTTP/1.0"
    assert head.get(b"host") is None


def test_parse_error_is_value_error() -> None:
    with pytest.raises(HttpProtocolError) as caught:
        parse_request_head(b"GET / HTTP/1.1\r\n\r\n")
    assert isinstance(caught.value, ValueError)
    assert caught.value.status == 400


def test_parse_fields() -> None:
    raw = b"PUT /a?b=c HTTP/1.1\r\nHost:  example.com \r\nX-Multi: 1\r\nx-multi:\t2\r\nEmpty:\r\n\r\n"
    head = parse_request_head(raw)
    assert head.method == b"PUT"
    assert head.target == b"/a?b=c"
    assert head.version == b"HTTP/1.1"
    assert [header.name for header in head.headers] == [b"Host", b"X-Multi", b"x-multi", b"Empty"]
    assert head.get(b"HOST") == b"example.com"
    assert head.get_all(b"x-multi") == [b"1", b"2"]
    assert head.get(b"X-Multi") == b"1, 2"
    assert head.get(b"empty") == b""
    assert head.get(b"missing") is None
    assert head.raw == raw


def test_header_offsets_point_at_values() -> None:
    raw = b"GET / HTTP/1.1\r\nHost:  example.com \r\nX-A:\tv a l\t\r\nX-B:\r\n\r\n"
    head = parse_request_head(raw)
    for header in head.headers:
        assert raw[header.value_start : header.value_end] == header.value


def test_upgrade_and_expect_flags() -> None:
    head = parse_request_head(
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n"
        b"Expect: 100-Continue\r\n\r\n"
    )
    assert head.upgrade is True
    assert head.expects_continue is True


def test_upgrade_needs_connection_token() -> None:
    head = parse_request_head(b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n")
    assert head.upgrade is False


def test_connect_is_upgrade() -> None:
    head = parse_request_head(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
    assert head.upgrade is True


REBUILD_RAW = (
    b"POST /v1/repos?token=PLACEHOLDER HTTP/1.1\r\n"
    b"host: api.example.com\r\n"
    b"Authorization:   Bearer PLACEHOLDER  \r\n"
    b"X-Empty:\r\n"
    b"X-Tab:\tone\t\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)


def test_rebuild_unchanged_is_raw() -> None:
    head = parse_request_head(REBUILD_RAW)
    assert head.rebuild() == REBUILD_RAW


def test_rebuild_target() -> None:
    head = parse_request_head(REBUILD_RAW)
    expected = REBUILD_RAW.replace(b"/v1/repos?token=PLACEHOLDER", b"/v1/repos?token=real-value-longer")
    assert head.rebuild(target=b"/v1/repos?token=real-value-longer") == expected


def test_rebuild_values_keep_whitespace() -> None:
    head = parse_request_head(REBUILD_RAW)
    rebuilt = head.rebuild(values={1: b"Bearer ghp_real", 2: b"now-set", 3: b"two"})
    expected = (
        b"POST /v1/repos?token=PLACEHOLDER HTTP/1.1\r\n"
        b"host: api.example.com\r\n"
        b"Authorization:   Bearer ghp_real  \r\n"
        b"X-Empty:now-set\r\n"
        b"X-Tab:\ttwo\t\r\n"
        b"Content-Length: 0\r\n"
        b"\r\n"
    )
    assert rebuilt == expected


def test_rebuild_target_and_value() -> None:
    head = parse_request_head(REBUILD_RAW)
    rebuilt = head.rebuild(target=b"/", values={0: b"other.example.com"})
    assert rebuilt == REBUILD_RAW.replace(b"/v1/repos?token=PLACEHOLDER", b"/").replace(
        b"api.example.com", b"other.example.com"
    )


def test_rebuild_rejects_line_break() -> None:
    head = parse_request_head(REBUILD_RAW)
    with pytest.raises(ValueError) as caught:
        head.rebuild(values={1: b"Bearer secret\r\nX-Injected: 1"})
    assert "secret" not in str(caught.value)
    assert "control character at offset 13" in str(caught.value)


def test_rebuild_rejects_bad_target() -> None:
    head = parse_request_head(REBUILD_RAW)
    with pytest.raises(ValueError):
        head.rebuild(target=b"/a b")


def test_rebuild_rejects_outer_whitespace() -> None:
    head = parse_request_head(REBUILD_RAW)
    with pytest.raises(ValueError):
        head.rebuild(values={1: b" padded"})


def test_rebuild_rejects_bad_index() -> None:
    head = parse_request_head(REBUILD_RAW)
    with pytest.raises(ValueError):
        head.rebuild(values={5: b"x"})
