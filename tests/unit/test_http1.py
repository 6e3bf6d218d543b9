"""Tests of the HTTP/1.1 request relay: framing, pipelining, tunnels, EOF and body rewrites."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sealbox.gateway.http1 import (
    BodyNotRewritten,
    EndOfStream,
    Forward,
    Limits,
    Reject,
    RequestEnded,
    RequestHead,
    RequestRelay,
    RequestStarted,
    RespondAndClose,
    SendUpstream,
    Tunnel,
    render_error_response,
)

GET = b"GET /info/refs?service=git-upload-pack HTTP/1.1\r\nHost: github.com\r\nUser-Agent: git/2.39\r\n\r\n"
POST_HEAD = b"POST /git-upload-pack HTTP/1.1\r\nHost: github.com\r\nContent-Type: application/x-git-upload-pack-request\r\nContent-Length: 11\r\n\r\n"
POST = POST_HEAD + b"hello world"
CHUNKED_HEAD = b"PUT /upload HTTP/1.1\r\nHost: github.com\r\nTransfer-Encoding: chunked\r\n\r\n"
CHUNKED_BODY = b"5;name=value\r\nhello\r\n1a\r\nabcdefghijklmnopqrstuvwxyz\r\n0;last=\"q\"\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n"
CHUNKED = CHUNKED_HEAD + CHUNKED_BODY


def forward_raw(head: RequestHead) -> Forward:
    return Forward(head.raw)


def feed(relay: RequestRelay, data: bytes, step: int | None = None, eof: bool = False) -> list[object]:
    events: list[object] = []
    if step is None:
        events += relay.receive_data(data)
    else:
        for start in range(0, len(data), step):
            events += relay.receive_data(data[start : start + step])
    if eof:
        events += relay.receive_eof()
    return events


def upstream(events: list[object]) -> bytes:
    return b"".join(event.data for event in events if isinstance(event, SendUpstream))


def kinds(events: list[object]) -> list[str]:
    return [type(event).__name__ for event in events]


def non_send(events: list[object]) -> list[object]:
    return [event for event in events if not isinstance(event, SendUpstream)]


def test_pipelined_get_post_chunked() -> None:
    data = GET + POST + CHUNKED
    relay = RequestRelay(forward_raw)
    events = feed(relay, data, eof=True)
    assert upstream(events) == data
    assert kinds(non_send(events)) == [
        "RequestStarted",
        "RequestEnded",
        "RequestStarted",
        "RequestEnded",
        "RequestStarted",
        "RequestEnded",
        "EndOfStream",
    ]
    started = [event.head.method for event in events if isinstance(event, RequestStarted)]
    assert started == [b"GET", b"POST", b"PUT"]
    ended = [event.body_bytes for event in events if isinstance(event, RequestEnded)]
    assert ended == [0, 11, len(CHUNKED_BODY)]


def test_event_order_single_request() -> None:
    relay = RequestRelay(forward_raw)
    events = feed(relay, POST)
    assert len(events) == 4
    assert events[0] == SendUpstream(POST_HEAD)
    assert isinstance(events[1], RequestStarted)
    assert events[1].head.raw == POST_HEAD
    assert events[2:] == [SendUpstream(b"hello world"), RequestEnded(11)]


@pytest.mark.parametrize("step", [1, 2, 3, 7, 64])
def test_pipelined_small_segments(step: int) -> None:
    data = CHUNKED + GET + POST + CHUNKED
    relay = RequestRelay(forward_raw)
    events = feed(relay, data, step=step, eof=True)
    assert upstream(events) == data
    assert sum(isinstance(event, RequestEnded) for event in events) == 4


def test_trailers_passed_through() -> None:
    relay = RequestRelay(forward_raw)
    events = feed(relay, CHUNKED, step=5)
    assert upstream(events).endswith(b"0;last=\"q\"\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n")
    assert isinstance(events[-1], RequestEnded)


def test_body_not_buffered() -> None:
    relay = RequestRelay(forward_raw)
    events = feed(relay, POST_HEAD + b"hello")
    assert upstream(events) == POST_HEAD + b"hello"
    assert not any(isinstance(event, RequestEnded) for event in events)
    assert relay.receive_data(b" world") == [SendUpstream(b" world"), RequestEnded(11)]


def test_chunk_data_not_buffered() -> None:
    relay = RequestRelay(forward_raw)
    events = feed(relay, CHUNKED_HEAD + b"10\r\nabc")
    assert upstream(events) == CHUNKED_HEAD + b"10\r\nabc"


def test_partial_chunk_line_held() -> None:
    relay = RequestRelay(forward_raw)
    events = feed(relay, CHUNKED_HEAD + b"1")
    assert upstream(events) == CHUNKED_HEAD
    assert relay.receive_data(b"0\r\n") == [SendUpstream(b"10\r\n")]


def test_leading_empty_lines_forwarded() -> None:
    data = POST + b"\r\n\r\n" + GET
    relay = RequestRelay(forward_raw)
    events = feed(relay, data, step=1)
    assert upstream(events) == data
    heads = [event.head.raw for event in events if isinstance(event, RequestStarted)]
    assert heads == [POST_HEAD, GET]


def test_head_rewrite_sent_upstream() -> None:
    def rewrite(head: RequestHead) -> Forward:
        index = [header.name for header in head.headers].index(b"User-Agent")
        return Forward(head.rebuild(target=b"/info/refs", values={index: b"sealbox"}))

    relay = RequestRelay(rewrite)
    events = feed(relay, GET + GET)
    expected = GET.replace(b"/info/refs?service=git-upload-pack", b"/info/refs").replace(b"git/2.39", b"sealbox")
    assert upstream(events) == expected + expected


def test_reject_from_callback() -> None:
    def reject_second(head: RequestHead) -> Forward | Reject:
        if head.method == b"POST":
            return Reject(403, "placeholder of secret GH_TOKEN is not allowed for evil.example")
        return Forward(head.raw)

    relay = RequestRelay(reject_second)
    events = feed(relay, GET + POST + GET)
    assert upstream(events) == GET
    assert events[-1] == RespondAndClose(
        403,
        "placeholder of secret GH_TOKEN is not allowed for evil.example",
        b"placeholder of secret GH_TOKEN is not allowed for evil.example\n",
    )
    assert relay.receive_data(GET) == []
    assert relay.receive_eof() == []


def test_error_ignores_later_input() -> None:
    relay = RequestRelay(forward_raw)
    events = feed(relay, b"GET / HTTP/1.1\r\nHost: a\nB: c\r\n\r\n")
    assert kinds(events) == ["RespondAndClose"]
    assert relay.receive_data(GET) == []


def test_callback_must_return_decision() -> None:
    relay = RequestRelay(lambda head: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError):
        relay.receive_data(GET)


def test_eof_at_boundary() -> None:
    relay = RequestRelay(forward_raw)
    events = feed(relay, GET, eof=True)
    assert kinds(events) == ["SendUpstream", "RequestStarted", "RequestEnded", "EndOfStream"]


def test_eof_without_data() -> None:
    relay = RequestRelay(forward_raw)
    assert relay.receive_eof() == [EndOfStream()]
    assert relay.receive_data(GET) == []


def test_eof_in_head_sends_nothing() -> None:
    relay = RequestRelay(forward_raw)
    events = feed(relay, GET[:20], eof=True)
    assert events == [EndOfStream()]


def test_eof_in_body_passes_partial() -> None:
    relay = RequestRelay(forward_raw)
    events = feed(relay, POST[:-3], eof=True)
    assert upstream(events) == POST[:-3]
    assert kinds(non_send(events)) == ["RequestStarted", "EndOfStream"]


def test_eof_in_chunk_line_passes_partial() -> None:
    relay = RequestRelay(forward_raw)
    data = CHUNKED_HEAD + b"5;name=va"
    events = feed(relay, data, eof=True)
    assert upstream(events) == data
    assert events[-1] == EndOfStream()


def test_upgrade_tunnel() -> None:
    head = b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    frames = b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58GET / HTTP/1.1\r\n\n\n"
    relay = RequestRelay(forward_raw)
    events = feed(relay, head + frames[:4])
    assert kinds(events) == ["SendUpstream", "RequestStarted", "RequestEnded", "Tunnel", "SendUpstream"]
    assert upstream(events) == head + frames[:4]
    assert relay.receive_data(frames[4:]) == [SendUpstream(frames[4:])]
    assert relay.receive_eof() == [EndOfStream()]


def test_upgrade_after_body() -> None:
    head = b"POST /h2c HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: h2c\r\nContent-Length: 3\r\n\r\n"
    relay = RequestRelay(forward_raw)
    events = feed(relay, head + b"abcPRI * HTTP/2.0")
    assert upstream(events) == head + b"abcPRI * HTTP/2.0"
    assert kinds(non_send(events)) == ["RequestStarted", "RequestEnded", "Tunnel"]


def test_connect_tunnel() -> None:
    head = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"
    client_hello = b"\x16\x03\x01\x00\x05hello"
    relay = RequestRelay(forward_raw)
    events = feed(relay, head + client_hello, step=3)
    assert upstream(events) == head + client_hello
    assert Tunnel() in events


def test_expect_continue_forwards_head() -> None:
    head = POST_HEAD.replace(b"\r\n\r\n", b"\r\nExpect: 100-continue\r\n\r\n")
    relay = RequestRelay(forward_raw)
    events = feed(relay, head)
    assert upstream(events) == head
    assert kinds(events) == ["SendUpstream", "RequestStarted"]
    assert relay.receive_data(b"hello world") == [SendUpstream(b"hello world"), RequestEnded(11)]


def test_large_body_passes_through() -> None:
    body = bytes(range(256)) * 4096
    head = b"POST /big HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % len(body)
    relay = RequestRelay(forward_raw)
    events = feed(relay, head + body + GET, step=65536)
    assert upstream(events) == head + body + GET


def test_render_error_response() -> None:
    assert render_error_response(400, b"bad\n") == (
        b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: 4\r\nConnection: close\r\n\r\nbad\n"
    )


# Body rewrites


def forward_with(rewrite: Callable[[bytes], bytes]) -> Callable[[RequestHead], Forward]:
    return lambda head: Forward(head.raw, body_rewrite=rewrite)


class CountingRewrite:
    """Body rewrite that replaces one byte string and counts its calls."""

    def __init__(self, old: bytes, new: bytes) -> None:
        self.old = old
        self.new = new
        self.calls: list[bytes] = []

    def __call__(self, body: bytes) -> bytes:
        self.calls.append(body)
        return body.replace(self.old, self.new)


def test_rewrite_length_updates_header() -> None:
    rewrite = CountingRewrite(b"world", b"wide world")
    relay = RequestRelay(forward_with(rewrite))
    events = feed(relay, POST + GET, step=4)
    expected_post = POST_HEAD.replace(b"Content-Length: 11", b"Content-Length: 16") + b"hello wide world"
    assert upstream(events) == expected_post + GET
    assert rewrite.calls == [b"hello world"]
    assert [event.body_bytes for event in events if isinstance(event, RequestEnded)] == [16, 0]


def test_rewrite_length_keeps_rebuilt_head() -> None:
    def on_head(head: RequestHead) -> Forward:
        index = [header.name for header in head.headers].index(b"Content-Type")
        return Forward(head.rebuild(values={index: b"text/plain"}), body_rewrite=lambda body: body + b"!")

    relay = RequestRelay(on_head)
    events = feed(relay, POST)
    expected = (
        POST_HEAD.replace(b"application/x-git-upload-pack-request", b"text/plain").replace(
            b"Content-Length: 11", b"Content-Length: 12"
        )
        + b"hello world!"
    )
    assert upstream(events) == expected


def test_rewrite_duplicate_lengths() -> None:
    data = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\ncontent-length:  3, 3 \r\n\r\nabc"
    relay = RequestRelay(forward_with(lambda body: b"abcd"))
    events = feed(relay, data)
    expected = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\ncontent-length:  4 \r\n\r\nabcd"
    assert upstream(events) == expected


def test_rewrite_holds_head_until_body() -> None:
    relay = RequestRelay(forward_with(lambda body: body.upper()))
    assert relay.receive_data(POST_HEAD + b"hello") == []
    events = relay.receive_data(b" world")
    assert kinds(events) == ["SendUpstream", "RequestStarted", "SendUpstream", "RequestEnded"]
    assert upstream(events) == POST_HEAD + b"HELLO WORLD"


def test_rewrite_equal_body_keeps_bytes() -> None:
    rewrite = CountingRewrite(b"absent", b"x")
    relay = RequestRelay(forward_with(rewrite))
    data = POST + CHUNKED
    events = feed(relay, data, step=3)
    assert upstream(events) == data
    assert rewrite.calls == [b"hello world", b"helloabcdefghijklmnopqrstuvwxyz"]
    assert not any(isinstance(event, BodyNotRewritten) for event in events)


def test_rewrite_chunked_rechunks() -> None:
    relay = RequestRelay(forward_with(CountingRewrite(b"hello", b"HELLO!")))
    events = feed(relay, CHUNKED + GET, step=2)
    expected = (
        CHUNKED_HEAD
        + b"20\r\nHELLO!abcdefghijklmnopqrstuvwxyz\r\n"
        + b"0\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n"
    )
    assert upstream(events) == expected + GET


def test_rewrite_chunked_to_empty() -> None:
    relay = RequestRelay(forward_with(lambda body: b""))
    events = feed(relay, CHUNKED)
    assert upstream(events) == CHUNKED_HEAD + b"0\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n"


def test_rewrite_zero_length_body() -> None:
    data = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"
    relay = RequestRelay(forward_with(lambda body: b"added"))
    events = feed(relay, data)
    assert upstream(events) == data.replace(b"Content-Length: 0", b"Content-Length: 5") + b"added"


def test_rewrite_skipped_without_body() -> None:
    rewrite = CountingRewrite(b"", b"x")
    relay = RequestRelay(forward_with(rewrite))
    events = feed(relay, GET)
    assert upstream(events) == GET
    assert rewrite.calls == []


def test_rewrite_over_limit_length() -> None:
    rewrite = CountingRewrite(b"hello", b"bye")
    relay = RequestRelay(forward_with(rewrite), Limits(max_body_buffer=10))
    events = feed(relay, POST + GET, step=3)
    assert upstream(events) == POST + GET
    assert BodyNotRewritten("body larger than 10 bytes") in events
    assert rewrite.calls == []


def test_rewrite_over_limit_chunked() -> None:
    rewrite = CountingRewrite(b"hello", b"bye")
    relay = RequestRelay(forward_with(rewrite), Limits(max_body_buffer=10))
    events = feed(relay, CHUNKED + GET, step=3)
    assert upstream(events) == CHUNKED + GET
    assert [event for event in events if isinstance(event, BodyNotRewritten)] == [
        BodyNotRewritten("body larger than 10 bytes")
    ]
    assert rewrite.calls == []
    assert sum(isinstance(event, RequestStarted) for event in events) == 2


def test_rewrite_over_limit_order() -> None:
    relay = RequestRelay(forward_with(lambda body: body), Limits(max_body_buffer=10))
    events = feed(relay, CHUNKED_HEAD + b"5\r\nhello\r\n6\r\n world\r\n")
    assert kinds(events) == ["BodyNotRewritten", "SendUpstream", "RequestStarted", "SendUpstream"]
    assert upstream(events) == CHUNKED_HEAD + b"5\r\nhello\r\n6\r\n world\r\n"


def test_rewrite_eof_mid_body() -> None:
    relay = RequestRelay(forward_with(lambda body: body.upper()))
    events = feed(relay, POST[:-4], eof=True)
    assert upstream(events) == POST[:-4]
    assert events[0] == BodyNotRewritten("connection closed before the body was complete")
    assert events[-1] == EndOfStream()


def test_rewrite_error_sends_nothing() -> None:
    relay = RequestRelay(forward_with(lambda body: body))
    events = feed(relay, CHUNKED_HEAD + b"5\r\nhelloXX")
    assert kinds(events) == ["RespondAndClose"]


CONTINUE_POST_HEAD = POST_HEAD.replace(b"\r\n\r\n", b"\r\nExpect: 100-continue\r\n\r\n")
CONTINUE_CHUNKED_HEAD = CHUNKED_HEAD.replace(b"\r\n\r\n", b"\r\nExpect: 100-continue\r\n\r\n")


def test_continue_same_length_rewritten() -> None:
    relay = RequestRelay(forward_with(lambda body: body.upper()))
    head_events = relay.receive_data(CONTINUE_POST_HEAD)
    assert upstream(head_events) == CONTINUE_POST_HEAD
    events = relay.receive_data(b"hello world")
    assert upstream(events) == b"HELLO WORLD"
    assert not any(isinstance(event, BodyNotRewritten) for event in events)


def test_continue_length_change_not_rewritten() -> None:
    relay = RequestRelay(forward_with(lambda body: body + b"!"))
    events = feed(relay, CONTINUE_POST_HEAD + b"hello world")
    assert upstream(events) == CONTINUE_POST_HEAD + b"hello world"
    assert BodyNotRewritten("Expect: 100-continue with a body whose length changed") in events


def test_continue_chunked_rechunked() -> None:
    relay = RequestRelay(forward_with(CountingRewrite(b"hello", b"hi")))
    head_events = relay.receive_data(CONTINUE_CHUNKED_HEAD)
    assert upstream(head_events) == CONTINUE_CHUNKED_HEAD
    events = relay.receive_data(CHUNKED_BODY)
    assert upstream(events) == b"1c\r\nhiabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n"
