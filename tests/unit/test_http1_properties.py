"""Property tests of the HTTP/1.1 request relay and response tracker over random splits."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from sealbox.gateway.http1 import (
    BodyNotRewritten,
    Forward,
    RequestEnded,
    RequestHead,
    RequestRelay,
    RequestStarted,
    RespondAndClose,
    ResponseEnded,
    ResponseError,
    ResponseStarted,
    ResponseTracker,
    SendUpstream,
)

TOKEN_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~"
VALUE_ALPHABET = st.sampled_from([bytes([byte]) for byte in range(0x21, 0x7F)] + [b" ", b"\t", b"\x80", b"\xff"])

tokens = st.text(TOKEN_ALPHABET, min_size=1, max_size=8).map(str.encode)
field_values = st.lists(VALUE_ALPHABET, max_size=12).map(b"".join).map(lambda value: value.strip(b" \t"))
whitespace = st.sampled_from([b"", b" ", b"\t", b"  "])
targets = st.text("abcdefghijklmnopqrstuvwxyz0123456789/?=&%-._~", min_size=0, max_size=16).map(
    lambda text: b"/" + text.encode()
)
extra_headers = st.lists(
    st.tuples(tokens, whitespace, field_values, whitespace).filter(
        lambda header: header[0].lower()
        not in (b"host", b"content-length", b"transfer-encoding", b"connection", b"upgrade", b"expect", b"x-secret")
    ),
    max_size=4,
)
chunk_extensions = st.lists(
    st.tuples(whitespace, tokens, st.one_of(st.just(b""), tokens, st.just(b'"q s;"'))).map(
        lambda ext: ext[0] + b";" + ext[1] + (b"=" + ext[2] if ext[2] else b"")
    ),
    max_size=2,
).map(b"".join)
chunks = st.lists(st.tuples(st.binary(min_size=1, max_size=40), chunk_extensions, st.booleans()), max_size=4)
trailers = st.lists(st.tuples(tokens, field_values), max_size=2)


@dataclass(frozen=True)
class Request:
    """A generated request that renders itself with a chosen target and secret header value."""

    method: bytes
    target: bytes
    secret: bytes
    headers: tuple[tuple[bytes, bytes, bytes, bytes], ...]
    framing: str
    body: bytes
    chunks: tuple[tuple[bytes, bytes, bool], ...]
    last_extension: bytes
    trailers: tuple[tuple[bytes, bytes], ...]

    def head(self, target: bytes | None = None, secret: bytes | None = None) -> bytes:
        lines = [self.method + b" " + (target or self.target) + b" HTTP/1.1", b"Host: example.com"]
        lines.append(b"X-Secret: " + (secret or self.secret))
        for name, before, value, after in self.headers:
            lines.append(name + b":" + before + value + after)
        if self.framing == "length":
            lines.append(b"Content-Length: %d" % len(self.body))
        elif self.framing == "chunked":
            lines.append(b"Transfer-Encoding: chunked")
        return b"\r\n".join(lines) + b"\r\n\r\n"

    def wire_body(self) -> bytes:
        if self.framing == "length":
            return self.body
        if self.framing != "chunked":
            return b""
        out = []
        for data, extension, upper in self.chunks:
            size = b"%x" % len(data)
            out.append((size.upper() if upper else size) + extension + b"\r\n" + data + b"\r\n")
        out.append(b"0" + self.last_extension + b"\r\n")
        for name, value in self.trailers:
            out.append(name + b": " + value + b"\r\n")
        out.append(b"\r\n")
        return b"".join(out)

    def render(self, target: bytes | None = None, secret: bytes | None = None) -> bytes:
        return self.head(target, secret) + self.wire_body()


@st.composite
def requests(draw: st.DrawFn) -> Request:
    framing = draw(st.sampled_from(["none", "length", "chunked"]))
    return Request(
        method=draw(st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"PATCH"])),
        target=draw(targets),
        secret=b"PLACEHOLDER-" + draw(st.text("ABCDEF0123", min_size=4, max_size=8)).encode(),
        headers=tuple(draw(extra_headers)),
        framing=framing,
        body=draw(st.binary(max_size=64)),
        chunks=tuple(draw(chunks)),
        last_extension=draw(chunk_extensions),
        trailers=tuple(draw(trailers)),
    )


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    pieces = []
    previous = 0
    for point in points + [len(data)]:
        pieces.append(data[previous:point])
        previous = point
    return pieces


def run(relay: RequestRelay, pieces: list[bytes]) -> list[object]:
    events: list[object] = []
    for piece in pieces:
        events += relay.receive_data(piece)
    events += relay.receive_eof()
    return events


def upstream(events: list[object]) -> bytes:
    return b"".join(event.data for event in events if isinstance(event, SendUpstream))


cut_lists = st.lists(st.integers(min_value=0, max_value=10_000), max_size=30)


@settings(max_examples=200, deadline=None)
@given(st.lists(requests(), min_size=1, max_size=5), cut_lists)
def test_relay_is_byte_exact(pipeline: list[Request], cuts: list[int]) -> None:
    data = b"".join(request.render() for request in pipeline)
    events = run(RequestRelay(lambda head: Forward(head.raw)), split(data, cuts))
    assert upstream(events) == data
    assert not any(isinstance(event, RespondAndClose) for event in events)


@settings(max_examples=200, deadline=None)
@given(st.lists(requests(), min_size=1, max_size=5), cut_lists)
def test_relay_starts_each_request(pipeline: list[Request], cuts: list[int]) -> None:
    data = b"".join(request.render() for request in pipeline)
    events = run(RequestRelay(lambda head: Forward(head.raw)), split(data, cuts))
    started = [event.head.raw for event in events if isinstance(event, RequestStarted)]
    assert started == [request.head() for request in pipeline]
    ended = [event.body_bytes for event in events if isinstance(event, RequestEnded)]
    assert ended == [len(request.wire_body()) for request in pipeline]
    # Each RequestStarted comes before the RequestEnded of the same request.
    order = [type(event) for event in events if isinstance(event, (RequestStarted, RequestEnded))]
    assert order == [RequestStarted, RequestEnded] * len(pipeline)


def rewrite_placeholders(head: RequestHead) -> Forward:
    index = [header.name for header in head.headers].index(b"X-Secret")
    secret = head.headers[index].value.replace(b"PLACEHOLDER", b"real-secret-value")
    return Forward(head.rebuild(target=head.target + b"&rewritten", values={index: secret}))


@settings(max_examples=200, deadline=None)
@given(st.lists(requests(), min_size=1, max_size=5), cut_lists)
def test_rewrite_changes_only_values(pipeline: list[Request], cuts: list[int]) -> None:
    data = b"".join(request.render() for request in pipeline)
    events = run(RequestRelay(rewrite_placeholders), split(data, cuts))
    expected = b"".join(
        request.render(
            target=request.target + b"&rewritten",
            secret=request.secret.replace(b"PLACEHOLDER", b"real-secret-value"),
        )
        for request in pipeline
    )
    assert upstream(events) == expected


@settings(max_examples=200, deadline=None)
@given(st.lists(requests(), min_size=1, max_size=4), cut_lists)
def test_identity_body_rewrite_exact(pipeline: list[Request], cuts: list[int]) -> None:
    data = b"".join(request.render() for request in pipeline)
    relay = RequestRelay(lambda head: Forward(head.raw, body_rewrite=lambda body: body))
    events = run(relay, split(data, cuts))
    assert upstream(events) == data
    assert not any(isinstance(event, BodyNotRewritten) for event in events)


@settings(max_examples=200, deadline=None)
@given(st.lists(requests(), min_size=1, max_size=4), cut_lists)
def test_body_rewrite_reframes(pipeline: list[Request], cuts: list[int]) -> None:
    data = b"".join(request.render() for request in pipeline)
    relay = RequestRelay(lambda head: Forward(head.raw, body_rewrite=lambda body: body + b"+"))
    events = run(relay, split(data, cuts))

    expected = []
    for request in pipeline:
        if request.framing == "length":
            new_body = request.body + b"+"
            head = request.head().replace(b"Content-Length: %d" % len(request.body), b"Content-Length: %d" % len(new_body))
            expected.append(head + new_body)
        elif request.framing == "chunked":
            new_body = b"".join(chunk[0] for chunk in request.chunks) + b"+"
            trailer = b"".join(name + b": " + value + b"\r\n" for name, value in request.trailers) + b"\r\n"
            expected.append(request.head() + b"%x\r\n" % len(new_body) + new_body + b"\r\n0\r\n" + trailer)
        else:
            expected.append(request.render())
    assert upstream(events) == b"".join(expected)


# Response tracker


@dataclass(frozen=True)
class Response:
    """A generated response and the method of the request it responds to."""

    method: bytes
    interim: int
    status: int
    framing: str
    body: bytes
    chunk_sizes: tuple[int, ...]

    def render(self) -> bytes:
        out = [b"HTTP/1.1 100 Continue\r\n\r\n"] * self.interim
        headers = b"Server: test\r\n"
        has_body = self.method != b"HEAD" and self.status not in (204, 304)
        if self.framing == "length":
            headers += b"Content-Length: %d\r\n" % len(self.body)
        else:
            headers += b"Transfer-Encoding: chunked\r\n"
        out.append(b"HTTP/1.1 %d Reason\r\n" % self.status + headers + b"\r\n")
        if has_body:
            out.append(self.wire_body())
        return b"".join(out)

    def wire_body(self) -> bytes:
        if self.framing == "length":
            return self.body
        out = []
        position = 0
        for size in self.chunk_sizes:
            piece = self.body[position : position + size]
            position += size
            if piece:
                out.append(b"%x\r\n" % len(piece) + piece + b"\r\n")
        if position < len(self.body):
            out.append(b"%x\r\n" % (len(self.body) - position) + self.body[position:] + b"\r\n")
        out.append(b"0\r\nX-Trailer: t\r\n\r\n")
        return b"".join(out)

    def body_bytes(self) -> int:
        has_body = self.method != b"HEAD" and self.status not in (204, 304)
        return len(self.wire_body()) if has_body else 0


@st.composite
def responses(draw: st.DrawFn) -> Response:
    return Response(
        method=draw(st.sampled_from([b"GET", b"HEAD", b"POST"])),
        interim=draw(st.integers(min_value=0, max_value=2)),
        status=draw(st.sampled_from([200, 201, 204, 304, 404, 500])),
        framing=draw(st.sampled_from(["length", "chunked"])),
        body=draw(st.binary(max_size=50)),
        chunk_sizes=tuple(draw(st.lists(st.integers(min_value=1, max_value=20), max_size=3))),
    )


@settings(max_examples=200, deadline=None)
@given(st.lists(responses(), min_size=1, max_size=5), cut_lists)
def test_tracker_finds_boundaries(pipeline: list[Response], cuts: list[int]) -> None:
    tracker = ResponseTracker()
    for response in pipeline:
        tracker.expect(response.method)
    data = b"".join(response.render() for response in pipeline)
    events: list[object] = []
    for piece in split(data, cuts):
        events += tracker.receive_data(piece)
    events += tracker.receive_eof()

    assert not any(isinstance(event, ResponseError) for event in events)
    finals = [event.status for event in events if isinstance(event, ResponseStarted) and not event.informational]
    assert finals == [response.status for response in pipeline]
    interim = sum(isinstance(event, ResponseStarted) and event.informational for event in events)
    assert interim == sum(response.interim for response in pipeline)
    ended = [event.body_bytes for event in events if isinstance(event, ResponseEnded)]
    assert ended == [response.body_bytes() for response in pipeline]
