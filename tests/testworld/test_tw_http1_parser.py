"""Unit tests of the test world's sans-IO HTTP/1.1 request parser."""

from __future__ import annotations

import pytest

from sealbox.testworld.http1 import (
    NEED_DATA,
    BodyData,
    ConnectionClosed,
    EndOfRequest,
    Event,
    ProtocolError,
    RequestHead,
    RequestParser,
)


def events_of(data: bytes, *, step: int | None = None, eof: bool = True) -> list[Event]:
    """Feed data (in pieces of step bytes, or at once) and return every event, body slices merged."""
    parser = RequestParser()
    events: list[Event] = []
    pieces = [data] if step is None else [data[i : i + step] for i in range(0, len(data), step)]
    for piece in pieces:
        parser.feed(piece)
        while (event := parser.next_event()) is not NEED_DATA:
            events.append(event)
    if eof:
        parser.feed_eof()
        while (event := parser.next_event()) is not NEED_DATA:
            events.append(event)
            if isinstance(event, ConnectionClosed):
                break
    merged: list[Event] = []
    for event in events:
        if isinstance(event, BodyData) and merged and isinstance(merged[-1], BodyData):
            merged[-1] = BodyData(merged[-1].data + event.data)
        else:
            merged.append(event)
    return merged


PIPELINED = (
    b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
    b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
)
CHUNKED = (
    b"PUT /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;name=value;quoted=\"a b\"\r\nhello\r\n"
    b"6\r\n world\r\n"
    b"0\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n"
)


def test_pipelined_requests_in_order() -> None:
    events = events_of(PIPELINED)
    kinds = [type(event).__name__ for event in events]
    assert kinds == ["RequestHead", "BodyData", "EndOfRequest", "RequestHead", "EndOfRequest", "ConnectionClosed"]


def test_pipelined_body_and_targets() -> None:
    events = events_of(PIPELINED)
    heads = [event for event in events if isinstance(event, RequestHead)]
    assert [head.target for head in heads] == [b"/upload", b"/x"]
    assert events[1] == BodyData(b"hello")
    assert heads[1].keep_alive is False


@pytest.mark.parametrize("step", [1, 2, 3, 7, 64])
def test_byte_split_same_events(step: int) -> None:
    assert events_of(PIPELINED + CHUNKED, step=step) == events_of(PIPELINED + CHUNKED)


def test_chunked_body_and_trailers() -> None:
    events = events_of(CHUNKED)
    assert events[1] == BodyData(b"hello world")
    assert events[2] == EndOfRequest(((b"X-Checksum", b"abc"), (b"X-Other", b"1")))


def test_chunked_head_flags() -> None:
    head = events_of(CHUNKED)[0]
    assert isinstance(head, RequestHead)
    assert head.chunked is True
    assert head.content_length is None


def test_expect_continue_flag() -> None:
    head = events_of(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx")[0]
    assert isinstance(head, RequestHead)
    assert head.expects_continue is True


def test_http10_closes_by_default() -> None:
    head = events_of(b"GET / HTTP/1.0\r\n\r\n")[0]
    assert isinstance(head, RequestHead)
    assert head.keep_alive is False


def test_leading_empty_lines_ignored() -> None:
    head = events_of(b"\r\n\r\nGET /a HTTP/1.1\r\n\r\n")[0]
    assert isinstance(head, RequestHead)
    assert head.target == b"/a"


def test_header_value_whitespace_trimmed() -> None:
    head = events_of(b"GET / HTTP/1.1\r\nX-A: \t value with space \t\r\n\r\n")[0]
    assert isinstance(head, RequestHead)
    assert head.header(b"x-a") == b"value with space"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", "both Content-Length"),
        (b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx", "invalid Content-Length"),
        (b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", "invalid Content-Length"),
        (b"GET / HTTP/1.1\r\nX-A: a\r\n folded\r\n\r\n", "obsolete line folding"),
        (b"GET / HTTP/1.1\nHost: a\r\n\r\n", "invalid line ending"),
        (b"GET / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "unsupported Transfer-Encoding"),
        (b"GET / HTTP/2.0\r\n\r\n", "unsupported HTTP version"),
        (b"G@T / HTTP/1.1\r\n\r\n", "invalid request line"),
        (b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", "invalid header line"),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "invalid chunk size line"),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n", "invalid chunk ending"),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;\x01\r\n", "invalid chunk size line"),
    ],
)
def test_invalid_input_rejected(data: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        events_of(data)


def test_error_quotes_offending_bytes() -> None:
    with pytest.raises(ProtocolError, match=r"b'G@T / HTTP/1.1'"):
        events_of(b"G@T / HTTP/1.1\r\n\r\n")


def test_eof_inside_body_rejected() -> None:
    with pytest.raises(ProtocolError, match="connection closed after 2 body bytes, 3 more expected"):
        events_of(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhe")


def test_eof_inside_head_rejected() -> None:
    with pytest.raises(ProtocolError, match="connection closed inside request head"):
        events_of(b"GET / HTTP/1.1\r\nHost")


def test_oversized_head_rejected() -> None:
    with pytest.raises(ProtocolError, match="request head larger than"):
        events_of(b"GET / HTTP/1.1\r\nX-A: " + b"a" * 70000, eof=False)


def test_large_body_few_events() -> None:
    parser = RequestParser()
    parser.feed(b"POST / HTTP/1.1\r\nContent-Length: 4194304\r\n\r\n")
    assert isinstance(parser.next_event(), RequestHead)
    for _ in range(4):
        parser.feed(bytes(1 << 20))
        event = parser.next_event()
        assert isinstance(event, BodyData)
        assert len(event.data) == 1 << 20
    assert parser.next_event() == EndOfRequest(())
