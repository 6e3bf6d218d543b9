"""Tests of the recording HTTP server and the canary against real clients."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from sealbox.testworld import Recording, TestWorld, pattern_sha256
from sealbox.testworld.recording import MAX_KEPT_BYTES


@pytest.fixture
def tls_connection(world: TestWorld) -> Iterator[ssl.SSLSocket]:
    """A TLS connection to the recording server with SNI api.github.com and ALPN http/1.1."""
    context = ssl.create_default_context(cafile=str(world.ca.cert_path))
    context.set_alpn_protocols(["http/1.1"])
    raw = socket.create_connection((world.https.host, world.https.port), timeout=30)
    connection = context.wrap_socket(raw, server_hostname="api.github.com")
    try:
        yield connection
    finally:
        connection.close()


def read_until_closed(connection: socket.socket) -> bytes:
    received = bytearray()
    while data := connection.recv(1 << 16):
        received += data
    return bytes(received)


def read_exactly_until(connection: socket.socket, marker: bytes) -> bytes:
    received = bytearray()
    while marker not in received:
        data = connection.recv(1)
        if not data:
            break
        received += data
    return bytes(received)


def last_recording(world: TestWorld, server: str) -> Recording:
    return world.recordings(server)[-1]  # type: ignore[arg-type]


PIPELINED = (
    b"POST /upload HTTP/1.1\r\nHost: api.github.com\r\nContent-Length: 5\r\n\r\nhello"
    b"GET /anything HTTP/1.1\r\nHost: api.github.com\r\nConnection: close\r\n\r\n"
)
CHUNKED = (
    b"POST /echo HTTP/1.1\r\nHost: api.github.com\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    b"4;ext=1\r\nwiki\r\n5;name=\"quoted value\"\r\npedia\r\n0\r\nX-Trailer: done\r\n\r\n"
)


def test_pipelined_pair_responses(tls_connection: ssl.SSLSocket) -> None:
    tls_connection.sendall(PIPELINED)
    responses = read_until_closed(tls_connection)
    assert responses.count(b"HTTP/1.1 200 OK\r\n") == 2
    assert responses.endswith(b"\r\n\r\nok")


def test_pipelined_pair_recorded(world: TestWorld, tls_connection: ssl.SSLSocket) -> None:
    tls_connection.sendall(PIPELINED)
    read_until_closed(tls_connection)
    recording = last_recording(world, "https")
    assert recording.received == PIPELINED
    assert recording.received_total == len(PIPELINED)
    assert recording.received_sha256 == hashlib.sha256(PIPELINED).hexdigest()


def test_tls_metadata_recorded(world: TestWorld, tls_connection: ssl.SSLSocket) -> None:
    tls_connection.sendall(PIPELINED)
    read_until_closed(tls_connection)
    recording = last_recording(world, "https")
    assert recording.tls is True
    assert recording.sni == "api.github.com"
    assert recording.alpn == "http/1.1"


def test_chunked_trailers_echoed(tls_connection: ssl.SSLSocket) -> None:
    tls_connection.sendall(CHUNKED)
    response = read_until_closed(tls_connection)
    echoed = json.loads(response.split(b"\r\n\r\n", 1)[1])
    assert echoed["body_length"] == 9
    assert echoed["body_sha256"] == hashlib.sha256(b"wikipedia").hexdigest()
    assert echoed["trailers"] == [["X-Trailer", "done"]]


def test_chunked_trailers_recorded(world: TestWorld, tls_connection: ssl.SSLSocket) -> None:
    tls_connection.sendall(CHUNKED)
    read_until_closed(tls_connection)
    assert last_recording(world, "https").received == CHUNKED


def test_expect_continue_before_body(tls_connection: ssl.SSLSocket) -> None:
    tls_connection.sendall(
        b"PUT /upload HTTP/1.1\r\nHost: api.github.com\r\nExpect: 100-continue\r\n"
        b"Content-Length: 3\r\nConnection: close\r\n\r\n"
    )
    interim = read_exactly_until(tls_connection, b"\r\n\r\n")
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    tls_connection.sendall(b"abc")
    final = read_until_closed(tls_connection)
    assert final.startswith(b"HTTP/1.1 200 OK\r\n")
    assert json.loads(final.split(b"\r\n\r\n", 1)[1])["length"] == 3


def test_invalid_request_gets_400(tls_connection: ssl.SSLSocket) -> None:
    tls_connection.sendall(b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
    response = read_until_closed(tls_connection)
    assert response.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"invalid Content-Length" in response


@pytest.mark.parametrize("version", ["--http1.1", "--http2"])
def test_bytes_digest_tls(world: TestWorld, curl, tmp_path: Path, version: str) -> None:
    size = 5 * 1024 * 1024 + 3
    output = tmp_path / "body"
    result = curl(version, "-o", str(output), f"https://{world.https.addr}/bytes/{size}")
    assert result.returncode == 0, result.stderr
    assert hashlib.sha256(output.read_bytes()).hexdigest() == pattern_sha256(size)


def test_bytes_digest_plain(world: TestWorld, curl, tmp_path: Path) -> None:
    output = tmp_path / "body"
    curl("-o", str(output), f"http://{world.http.addr}/bytes/1000")
    assert hashlib.sha256(output.read_bytes()).hexdigest() == pattern_sha256(1000)


@pytest.mark.parametrize(
    ("scheme", "options"),
    [
        ("https", ["--http1.1"]),
        ("https", ["--http2"]),
        ("https", ["--http1.1", "-H", "Transfer-Encoding: chunked"]),
        ("http", []),
    ],
)
def test_upload_digest_10mb(world: TestWorld, curl, tmp_path: Path, scheme: str, options: list[str]) -> None:
    payload = os.urandom(10 * 1000 * 1000)
    source = tmp_path / "payload"
    source.write_bytes(payload)
    endpoint = world.https if scheme == "https" else world.http
    result = curl(*options, "-T", str(source), f"{scheme}://{endpoint.addr}/upload")
    assert json.loads(result.stdout) == {"length": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}


def test_h2_recorded_as_frames(world: TestWorld, curl) -> None:
    curl("--http2", f"https://{world.https.addr}/echo")
    recording = last_recording(world, "https")
    assert recording.alpn == "h2"
    assert recording.received.startswith(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")


def test_h2_echo_protocol(world: TestWorld, curl) -> None:
    result = curl("--http2", "-d", "x", f"https://{world.https.addr}/echo")
    assert json.loads(result.stdout)["protocol"] == "HTTP/2"


def test_redirect_location(world: TestWorld, curl) -> None:
    result = curl("-o", "/dev/null", "-w", "%{http_code} %{redirect_url}",
                  f"http://{world.http.addr}/redirect?to=https://github.com/org")
    assert result.stdout == b"302 https://github.com/org"


def test_recording_beyond_kept_limit(world: TestWorld) -> None:
    body = os.urandom(MAX_KEPT_BYTES + (3 << 20))
    request = b"POST /upload HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body)
    with socket.create_connection((world.http.host, world.http.port), timeout=60) as connection:
        connection.sendall(request)
        connection.sendall(body)
        read_until_closed(connection)
    recording = last_recording(world, "http")
    assert recording.received_total == len(request) + len(body)
    assert recording.received == (request + body)[:MAX_KEPT_BYTES]
    assert recording.received_sha256 == hashlib.sha256(request + body).hexdigest()


def test_canary_records_tls(world: TestWorld, curl) -> None:
    result = curl("--connect-to", f"canary.test:443:{world.canary.addr}", "-H", "X-Leak: canary-value-1",
                  "https://canary.test/path")
    assert result.stdout == b"ok"
    recording = last_recording(world, "canary")
    assert b"\r\nX-Leak: canary-value-1\r\n" in recording.received
    assert recording.sni == "canary.test"


def test_canary_records_plain(world: TestWorld, curl) -> None:
    curl("-d", "body-value-2", f"http://{world.canary_plain.addr}/submit")
    recording = last_recording(world, "canary_plain")
    assert recording.received.startswith(b"POST /submit HTTP/1.1\r\n")
    assert recording.received.endswith(b"\r\n\r\nbody-value-2")


def test_canary_records_non_http(world: TestWorld) -> None:
    payload = b"\x16\x03\x01 not http at all\r\n\r\n" + os.urandom(1000)
    with socket.create_connection((world.canary_plain.host, world.canary_plain.port), timeout=30) as connection:
        connection.sendall(payload)
        connection.shutdown(socket.SHUT_WR)
        response = read_until_closed(connection)
    assert response.startswith(b"HTTP/1.1 200 OK\r\n")
    assert last_recording(world, "canary_plain").received == payload


def test_clear_recordings(world: TestWorld, curl) -> None:
    curl(f"http://{world.canary_plain.addr}/")
    world.clear_recordings()
    assert world.recordings("canary_plain") == []


def test_recordings_unknown_server(world: TestWorld) -> None:
    with pytest.raises(ValueError, match="invalid recording server 'git'"):
        world.recordings("git")  # type: ignore[arg-type]
