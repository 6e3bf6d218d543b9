"""Byte exactness: upstream receives the client's bytes, except the substituted values.

One sandbox serves the module. Its secret API_TOKEN is scoped to echo.test,
and BODY_TOKEN, with body injection on, to api.github.com. Both names are
mapped to the test world's recording server, which keeps every decrypted
byte of each connection. A raw HTTP/1.1 client (python3 ``ssl`` and ``socket``) inside the
sandbox sends the exact bytes that each test builds. The expected upstream
bytes are the sent bytes with the placeholder replaced by the value. Each test
finds its connection's recording by a random marker in the request target.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import json
import os
import zlib
from collections.abc import Iterator
from typing import Any

import pytest

from sealbox import Action, Network, NetworkPolicy, Rule, Sandbox, SandboxNotFoundError, Secret, SecretInjection
from sealbox.testworld.recording import Recording
from sealbox.testworld.world import TestWorld

world_network = TestWorld.sandbox_network

API_VALUE = "sk-exact-" + "7f3a9c1e5b" * 4
BODY_VALUE = "sk-body-" + "0d4e8b2a6c" * 4
# A body of more than 100 MiB, made of a 1 MiB block that the client script
# and pattern_digest() build the same way.
LARGE_BODY_SIZE = 100 * 1024 * 1024 + 12345
PATTERN_BLOCK_SIZE = 32768 * 32

# The raw client that runs inside the sandbox. It reads a JSON spec on stdin:
# host, port, sni, cafile and a list of steps, each one of {"send": base64},
# {"pattern": size} (the deterministic large body), {"sleep": seconds} or
# {"response": true} (read one response head and its Content-Length body) or
# {"eof": true} (read until the connection closes, or fail after 10 s).
# It prints {"responses": [{"status", "head", "body"}, ...], "after": text},
# where after is what the eof step read.
RAW_CLIENT = r'''
import base64, hashlib, json, socket, ssl, sys, time

spec = json.load(sys.stdin)
sock = socket.create_connection((spec["host"], spec["port"]), timeout=120)
sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
if spec.get("sni"):
    context = ssl.create_default_context(cafile=spec.get("cafile"))
    context.set_alpn_protocols(["http/1.1"])
    sock = context.wrap_socket(sock, server_hostname=spec["sni"])

def pattern(size):
    block = b"".join(hashlib.sha256(b"%d" % i).digest() for i in range(32768))
    while size > 0:
        piece = block[:size]
        sock.sendall(piece)
        size -= len(piece)

buffer = b""
def read_more():
    global buffer
    data = sock.recv(1 << 16)
    if not data:
        raise SystemExit("connection closed after %d bytes: %r" % (len(buffer), buffer[:300]))
    buffer += data

def read_response():
    global buffer
    while b"\r\n\r\n" not in buffer:
        read_more()
    head, _, buffer = buffer.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if status < 200:
        length = 0
    while len(buffer) < length:
        read_more()
    body, buffer = buffer[:length], buffer[length:]
    return {"status": status, "head": head.decode("latin-1"), "body": body.decode("latin-1")}

responses = []
after = b""
for step in spec["steps"]:
    if "send" in step:
        sock.sendall(base64.b64decode(step["send"]))
    elif "pattern" in step:
        pattern(step["pattern"])
    elif "sleep" in step:
        time.sleep(step["sleep"])
    elif "response" in step:
        responses.append(read_response())
    elif "eof" in step:
        sock.settimeout(10)
        after = buffer
        while data := sock.recv(1 << 16):
            after += data
sock.close()
print(json.dumps({"responses": responses, "after": after.decode("latin-1")}))
'''


@pytest.fixture(autouse=True)
def no_leftovers() -> Iterator[None]:
    """Replace the suite's per-test leak check, which counts the module's live sandbox as a leak.

    The ``box`` fixture removes that sandbox and checks that it is gone.
    """
    yield


@pytest.fixture(scope="module")
def box(testworld: TestWorld) -> Iterator[Sandbox]:
    secrets = [
        Secret.env("API_TOKEN", value=API_VALUE, allow_hosts=["echo.test"]),
        Secret.env("BODY_TOKEN", value=BODY_VALUE, allow_hosts=["api.github.com"],
                   inject=SecretInjection(body=True)),
    ]
    sandbox = asyncio.run(Sandbox.create(
        "secrets-exact", network=world_network(testworld), secrets=secrets,
        upstream_ca=[str(testworld.ca.cert_path)],
    ))
    try:
        yield sandbox
    finally:
        asyncio.run(sandbox.remove())
        with pytest.raises(SandboxNotFoundError):
            asyncio.run(Sandbox.get("secrets-exact"))


def send(data: bytes) -> dict[str, Any]:
    return {"send": base64.b64encode(data).decode()}


def run_client(sandbox: Sandbox, steps: list[dict[str, Any]], host: str = "echo.test") -> dict[str, Any]:
    """Run the raw client in the sandbox against host:443 and return its JSON report."""
    spec = {"host": host, "port": 443, "sni": host, "steps": steps}
    output = asyncio.run(sandbox.exec("python3", ["-c", RAW_CLIENT], stdin=json.dumps(spec).encode(), timeout=300))
    assert output.exit_code == 0, output.stderr_text[-2000:]
    return json.loads(output.stdout_text)


def exchange(sandbox: Sandbox, steps: list[dict[str, Any]], host: str = "echo.test") -> list[dict[str, Any]]:
    """Run the raw client in the sandbox against host:443 and return the responses it read."""
    return run_client(sandbox, steps, host)["responses"]


def recording_with(world: TestWorld, marker: bytes) -> Recording:
    """Return the one recording of the recording server whose bytes contain marker."""
    found = [recording for recording in world.recordings("https") if marker in recording.received]
    assert len(found) == 1, f"{len(found)} recordings contain the marker {marker!r}"
    return found[0]


def new_marker() -> bytes:
    return os.urandom(8).hex().encode()


def api_placeholder(sandbox: Sandbox) -> bytes:
    return sandbox.placeholders["API_TOKEN"].encode()


def expected_bytes(sent: bytes, sandbox: Sandbox) -> bytes:
    return sent.replace(api_placeholder(sandbox), API_VALUE.encode())


def post(marker: bytes, token: bytes, headers: bytes, body: bytes, host: bytes = b"echo.test") -> bytes:
    return (b"POST /upload?m=" + marker + b" HTTP/1.1\r\nHost: " + host + b"\r\nAuthorization: Bearer " + token
            + b"\r\n" + headers + b"Content-Length: %d\r\n\r\n" % len(body) + body)


def upload_result(response: dict[str, Any]) -> dict[str, Any]:
    assert response["status"] == 200, response
    return json.loads(response["body"])


def pattern_digest(prefix: bytes, size: int) -> str:
    """Return the SHA-256 hex of prefix followed by size bytes of the client's repeated pattern block."""
    block = b"".join(hashlib.sha256(b"%d" % index).digest() for index in range(32768))
    assert len(block) == PATTERN_BLOCK_SIZE
    digest = hashlib.sha256(prefix)
    remaining = size
    while remaining > 0:
        piece = block[:remaining]
        digest.update(piece)
        remaining -= len(piece)
    return digest.hexdigest()


def test_gzip_body_exact(box: Sandbox, testworld: TestWorld) -> None:
    marker = new_marker()
    body = gzip.compress(b"".join(b"line %d of a compressible request body\n" % index for index in range(20000)))
    request = post(marker, api_placeholder(box), b"Content-Type: application/json\r\nContent-Encoding: gzip\r\n", body)

    responses = exchange(box, [send(request), {"response": True}])

    assert upload_result(responses[0])["length"] == len(body)
    assert recording_with(testworld, marker).received == expected_bytes(request, box)


def test_deflate_body_exact(box: Sandbox, testworld: TestWorld) -> None:
    marker = new_marker()
    body = zlib.compress(b"deflate me, " * 50000)
    request = post(marker, api_placeholder(box), b"Content-Encoding: deflate\r\n", body)

    responses = exchange(box, [send(request), {"response": True}])

    assert upload_result(responses[0])["length"] == len(body)
    assert recording_with(testworld, marker).received == expected_bytes(request, box)


def test_binary_body_exact(box: Sandbox, testworld: TestWorld) -> None:
    marker = new_marker()
    # Every byte value, plus bytes that look like a request head and a placeholder prefix.
    body = bytes(range(256)) * 512 + b"\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\nsk-" + os.urandom(65536)
    request = post(marker, api_placeholder(box), b"Content-Type: application/octet-stream\r\n", body)

    responses = exchange(box, [send(request), {"response": True}])

    assert upload_result(responses[0])["sha256"] == hashlib.sha256(body).hexdigest()
    assert recording_with(testworld, marker).received == expected_bytes(request, box)


def test_chunked_extensions_trailers_exact(box: Sandbox, testworld: TestWorld) -> None:
    marker = new_marker()
    chunks = (b"5;name=value\r\nhello\r\n"
              b'1a ; quoted="a \\"b\\" c";flag\r\n' + bytes(range(26)) + b"\r\n"
              b"10\r\n" + b"\r\n0\r\n\r\n0\r\n\r\n\r\n\r\n" + b"\r\n"
              b"0;final=yes\r\nX-Checksum: 8d4f\r\nX-Other-Trailer: two words\r\n\r\n")
    request = (b"POST /upload?m=" + marker + b" HTTP/1.1\r\nHost: echo.test\r\nX-Api-Key: " + api_placeholder(box)
               + b"\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum, X-Other-Trailer\r\n\r\n" + chunks)

    responses = exchange(box, [send(request), {"response": True}])

    assert upload_result(responses[0])["length"] == 5 + 26 + 16
    assert recording_with(testworld, marker).received == expected_bytes(request, box)


def test_pipelined_requests_exact(box: Sandbox, testworld: TestWorld) -> None:
    marker = new_marker()
    token = api_placeholder(box)
    first = b"GET /?m=" + marker + b" HTTP/1.1\r\nHost: echo.test\r\nAuthorization: Bearer " + token + b"\r\n\r\n"
    second = post(marker, token, b"", b"second request body\r\n\r\nGET / HTTP/1.1\r\n\r\n")
    third = (b"GET /?m=" + marker + b"&token=" + token + b" HTTP/1.1\r\nHost: echo.test\r\n"
             b"Connection: close\r\n\r\n")
    request = first + second + third

    responses = exchange(box, [send(request), {"response": True}, {"response": True}, {"response": True}])

    assert [response["status"] for response in responses] == [200, 200, 200]
    assert recording_with(testworld, marker).received == expected_bytes(request, box)


def test_expect_continue_exact(box: Sandbox, testworld: TestWorld) -> None:
    marker = new_marker()
    body = os.urandom(300_000)
    head = (b"PUT /upload?m=" + marker + b" HTTP/1.1\r\nHost: echo.test\r\nAuthorization: Bearer "
            + api_placeholder(box) + b"\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))

    responses = exchange(box, [send(head), {"response": True}, send(body), {"response": True}])

    assert [response["status"] for response in responses] == [100, 200]
    assert upload_result(responses[1])["length"] == len(body)
    assert recording_with(testworld, marker).received == expected_bytes(head + body, box)


def test_placeholder_split_across_segments_exact(box: Sandbox, testworld: TestWorld) -> None:
    marker = new_marker()
    request = post(marker, api_placeholder(box), b"", b"split")
    cut = request.index(api_placeholder(box)) + 7

    responses = exchange(box, [send(request[:cut]), {"sleep": 0.3}, send(request[cut:]), {"response": True}])

    assert upload_result(responses[0])["length"] == 5
    assert recording_with(testworld, marker).received == expected_bytes(request, box)


def test_basic_auth_placeholder_exact(box: Sandbox, testworld: TestWorld) -> None:
    marker = new_marker()
    credentials = base64.b64encode(b"x-access-token:" + api_placeholder(box))
    request = (b"GET /?m=" + marker + b" HTTP/1.1\r\nHost: echo.test\r\nAuthorization: Basic " + credentials
               + b"\r\n\r\n")
    expected = request.replace(credentials, base64.b64encode(b"x-access-token:" + API_VALUE.encode()))

    exchange(box, [send(request), {"response": True}])

    assert recording_with(testworld, marker).received == expected


def test_head_layout_kept(box: Sandbox, testworld: TestWorld) -> None:
    marker = new_marker()
    token = api_placeholder(box)
    # Header name case, whitespace around values, repeated fields and order are all the client's.
    request = (b"GET /?m=" + marker + b" HTTP/1.1\r\nhOsT:echo.test\r\nx-API-key:\t " + token + b" \t\r\n"
               b"X-Repeated: a\r\nX-Repeated: b, " + token + b"\r\nX-Empty:\r\n\r\n")

    exchange(box, [send(request), {"response": True}])

    assert recording_with(testworld, marker).received == expected_bytes(request, box)


def test_request_without_placeholder_exact(box: Sandbox, testworld: TestWorld) -> None:
    marker = new_marker()
    body = gzip.compress(os.urandom(4096) + b"no secret here")
    request = (b"POST /upload?m=" + marker + b" HTTP/1.1\r\nHost: echo.test\r\nContent-Encoding: gzip\r\n"
               b"Content-Length: %d\r\n\r\n" % len(body) + body)

    exchange(box, [send(request), {"response": True}])

    assert recording_with(testworld, marker).received == request


def test_body_injection_gzip_without_placeholder_exact(box: Sandbox, testworld: TestWorld) -> None:
    marker = new_marker()
    body = gzip.compress(b"".join(b"want %040x\n" % index for index in range(5000)))
    request = post(marker, box.placeholders["BODY_TOKEN"].encode(), b"Content-Encoding: gzip\r\n", body,
                   host=b"api.github.com")

    responses = exchange(box, [send(request), {"response": True}], host="api.github.com")

    assert upload_result(responses[0])["length"] == len(body)
    expected = request.replace(box.placeholders["BODY_TOKEN"].encode(), BODY_VALUE.encode())
    assert recording_with(testworld, marker).received == expected


def test_body_injection_gzip_reencoded(box: Sandbox, testworld: TestWorld) -> None:
    marker = new_marker()
    token = box.placeholders["BODY_TOKEN"].encode()
    plain = b'{"token": "' + token + b'", "padding": "' + b"x" * 10000 + b'"}'
    request = post(marker, b"none", b"Content-Encoding: gzip\r\n", gzip.compress(plain), host=b"api.github.com")

    responses = exchange(box, [send(request), {"response": True}], host="api.github.com")

    assert responses[0]["status"] == 200
    received = recording_with(testworld, marker).received
    head, _, body = received.partition(b"\r\n\r\n")
    assert gzip.decompress(body) == plain.replace(token, BODY_VALUE.encode())
    assert b"\r\nContent-Length: %d" % len(body) in head


def test_upstream_close_reaches_client(box: Sandbox, testworld: TestWorld) -> None:
    # TLS has no half-close, so the client learns that upstream closed only when its own connection closes.
    marker = new_marker()
    request = (b"GET /?m=" + marker + b" HTTP/1.1\r\nHost: echo.test\r\nAuthorization: Bearer "
               + api_placeholder(box) + b"\r\nConnection: close\r\n\r\n")

    report = run_client(box, [send(request), {"eof": True}])

    assert report["after"].startswith("HTTP/1.1 200 OK\r\n")
    assert report["after"].endswith("\r\n\r\nok")
    assert recording_with(testworld, marker).received == expected_bytes(request, box)


def test_body_over_100mib_exact(box: Sandbox, testworld: TestWorld) -> None:
    marker = new_marker()
    head = (b"POST /upload?m=" + marker + b" HTTP/1.1\r\nHost: echo.test\r\nAuthorization: Bearer "
            + api_placeholder(box) + b"\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Length: %d\r\n\r\n" % LARGE_BODY_SIZE)
    expected_head = expected_bytes(head, box)

    try:
        responses = exchange(box, [send(head), {"pattern": LARGE_BODY_SIZE}, {"response": True}])

        result = upload_result(responses[0])
        assert result == {"length": LARGE_BODY_SIZE, "sha256": pattern_digest(b"", LARGE_BODY_SIZE)}
        recording = recording_with(testworld, marker)
        assert recording.received_total == len(expected_head) + LARGE_BODY_SIZE
        assert recording.received_sha256 == pattern_digest(expected_head, LARGE_BODY_SIZE)
    finally:
        # The server keeps 64 MiB of this recording in memory until cleared.
        testworld.clear_recordings()
