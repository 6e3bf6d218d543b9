"""Tests of the upstream response tracker: bodies, interim responses, tunnels and errors."""

from __future__ import annotations

import pytest

from sealbox.gateway.http1 import (
    Header,
    Limits,
    ResponseEnded,
    ResponseError,
    ResponseStarted,
    ResponseTracker,
    Tunnel,
)


def track(methods: list[bytes], data: bytes, step: int | None = None, eof: bool = False) -> list[object]:
    tracker = ResponseTracker()
    for method in methods:
        tracker.expect(method)
    events: list[object] = []
    if step is None:
        events += tracker.receive_data(data)
    else:
        for start in range(0, len(data), step):
            events += tracker.receive_data(data[start : start + step])
    if eof:
        events += tracker.receive_eof()
    return events


def summary(events: list[object]) -> list[object]:
    """Return (status, informational) for starts, body sizes for ends, and other events as they are."""
    out: list[object] = []
    for event in events:
        if isinstance(event, ResponseStarted):
            out.append((event.status, event.informational))
        elif isinstance(event, ResponseEnded):
            out.append(event.body_bytes)
        else:
            out.append(event)
    return out


OK_5 = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"


@pytest.mark.parametrize("step", [None, 1, 4])
def test_content_length_response(step: int | None) -> None:
    events = track([b"GET"], OK_5, step=step)
    assert summary(events) == [(200, False), 5]


def test_started_fields() -> None:
    events = track([b"GET"], b"HTTP/1.1 404 Not Found\r\nServer:  test \r\nContent-Length: 0\r\n\r\n")
    assert events[0] == ResponseStarted(
        status=404,
        reason=b"Not Found",
        headers=(Header(b"Server", b"test", 33, 37), Header(b"Content-Length", b"0", 56, 57)),
        informational=False,
    )


def test_head_response_has_no_body() -> None:
    data = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + OK_5
    events = track([b"HEAD", b"GET"], data)
    assert summary(events) == [(200, False), 0, (200, False), 5]


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_statuses(status: int) -> None:
    data = b"HTTP/1.1 %d X\r\nContent-Length: 10\r\n\r\n" % status + OK_5
    events = track([b"GET", b"GET"], data)
    assert summary(events) == [(status, False), 0, (200, False), 5]


def test_continue_then_final() -> None:
    data = b"HTTP/1.1 100 Continue\r\n\r\n" + OK_5
    events = track([b"POST"], data, step=3)
    assert summary(events) == [(100, True), (200, False), 5]


def test_several_interim_responses() -> None:
    data = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n" + OK_5 + OK_5
    events = track([b"POST", b"GET"], data)
    assert summary(events) == [(100, True), (103, True), (200, False), 5, (200, False), 5]


def test_switching_protocols_tunnel() -> None:
    tracker = ResponseTracker()
    tracker.expect(b"GET")
    data = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x05hello"
    events = tracker.receive_data(data)
    assert summary(events) == [(101, False), 0, Tunnel()]
    assert tracker.receive_data(b"HTTP/1.1 200 OK\r\n\r\n") == []
    assert tracker.receive_eof() == []


def test_connect_success_tunnel() -> None:
    events = track([b"CONNECT"], b"HTTP/1.1 200 Connection Established\r\n\r\n\x16\x03\x03")
    assert summary(events) == [(200, False), 0, Tunnel()]


def test_connect_failure_has_body() -> None:
    events = track([b"CONNECT"], b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno")
    assert summary(events) == [(403, False), 2]


def test_chunked_with_trailers() -> None:
    body = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Checksum: abc\r\n\r\n"
    data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body + OK_5
    events = track([b"GET", b"GET"], data, step=2)
    assert summary(events) == [(200, False), len(body), (200, False), 5]


def test_chunked_after_other_coding() -> None:
    body = b"3\r\nabc\r\n0\r\n\r\n"
    data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 99\r\n\r\n" + body
    events = track([b"GET"], data)
    assert summary(events) == [(200, False), len(body)]


def test_read_until_close() -> None:
    events = track([b"GET"], b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of this", eof=False)
    assert summary(events) == [(200, False)]
    events = track([b"GET"], b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of this", eof=True)
    assert summary(events) == [(200, False), 11]


def test_coding_without_chunked_reads_until_close() -> None:
    events = track([b"GET"], b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nabcdef", eof=True)
    assert summary(events) == [(200, False), 6]


def test_http10_chunked_reads_until_close() -> None:
    data = b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    events = track([b"GET"], data, eof=True)
    assert summary(events) == [(200, False), len(data) - data.index(b"\r\n\r\n") - 4]


def test_pipelined_responses() -> None:
    chunked = b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
    empty = b"HTTP/1.1 204 No Content\r\n\r\n"
    data = OK_5 + chunked + empty + OK_5
    events = track([b"GET", b"POST", b"DELETE", b"GET"], data, step=1)
    assert summary(events) == [(200, False), 5, (201, False), 12, (204, False), 0, (200, False), 5]


def test_lenient_status_line_and_lf() -> None:
    data = b"HTTP/1.1 200\nContent-Length: 2\n\nokHTTP/1.0 404 Nicht gefunden \xe4\r\nContent-Length: 0\r\n\r\n"
    events = track([b"GET", b"GET"], data)
    assert summary(events) == [(200, False), 2, (404, False), 0]
    assert events[0].reason == b""  # type: ignore[attr-defined]
    assert events[2].reason == b"Nicht gefunden \xe4"  # type: ignore[attr-defined]


def test_obs_fold_joined() -> None:
    raw = b"HTTP/1.1 200 OK\r\nX-Long: one\r\n  two\r\nContent-Length: 0\r\n\r\n"
    events = track([b"GET"], raw)
    header = events[0].headers[0]  # type: ignore[attr-defined]
    assert header.value == b"one two"
    assert raw[header.value_start : header.value_end] == b"one\r\n  two"


def test_empty_lines_before_status() -> None:
    events = track([b"GET", b"GET"], OK_5 + b"\r\n" + OK_5)
    assert summary(events) == [(200, False), 5, (200, False), 5]


def test_unsolicited_response() -> None:
    events = track([], b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    assert summary(events) == [(408, False), 0]


ERRORS = {
    "invalid status line": (b"HTTP/1.1 OK\r\n\r\n", "invalid status line b'HTTP/1.1 OK'"),
    "version 2": (b"HTTP/2.0 200 OK\r\n\r\n", "unsupported HTTP version"),
    "not http": (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "invalid status line b'SSH-2.0-OpenSSH_9.2'"),
    "conflicting lengths": (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "b'1, 2'"),
    "invalid length": (b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n", "invalid Content-Length b'abc'"),
    "invalid chunk size": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nxyz\r\n", "b'xyz'"),
    "missing CRLF after chunk": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\naXY",
        "missing CRLF after chunk data",
    ),
    "header without colon": (b"HTTP/1.1 200 OK\r\nBroken\r\n\r\n", "b'Broken'"),
    "fold before first header": (b"HTTP/1.1 200 OK\r\n folded\r\n\r\n", "b' folded'"),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_error_reported_once(case: str) -> None:
    data, expected = ERRORS[case]
    tracker = ResponseTracker()
    tracker.expect(b"GET")
    events = tracker.receive_data(data)
    errors = [event for event in events if isinstance(event, ResponseError)]
    assert len(errors) == 1
    assert expected in errors[0].reason
    assert tracker.receive_data(OK_5) == []
    assert tracker.receive_eof() == []


def test_head_too_large() -> None:
    tracker = ResponseTracker(Limits(max_head_bytes=64))
    tracker.expect(b"GET")
    events = tracker.receive_data(b"HTTP/1.1 200 OK\r\nX-Pad: " + b"p" * 64)
    assert len(events) == 1
    assert isinstance(events[0], ResponseError)
    assert "larger than 64 bytes" in events[0].reason


def test_eof_in_body() -> None:
    events = track([b"GET"], OK_5[:-2], eof=True)
    assert summary(events) == [(200, False), ResponseError("connection closed after 3 of 5 body bytes")]


def test_eof_in_chunked_body() -> None:
    data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel"
    events = track([b"GET"], data, eof=True)
    assert events[-1] == ResponseError("connection closed in the middle of a chunked body")


def test_eof_in_head() -> None:
    events = track([b"GET"], b"HTTP/1.1 200 OK\r\nContent-", eof=True)
    assert len(events) == 1
    assert isinstance(events[0], ResponseError)
    assert events[0].reason.startswith("connection closed in the middle of a response head")


def test_eof_with_unanswered_requests() -> None:
    events = track([b"GET", b"GET"], OK_5, eof=True)
    assert summary(events) == [(200, False), 5, ResponseError("connection closed before the responses to 1 requests")]


def test_eof_after_all_responses() -> None:
    events = track([b"GET"], OK_5, eof=True)
    assert summary(events) == [(200, False), 5]
