"""Passthrough relaying end to end: exact bytes, large transfers, half-close, audit.

No secret is configured, so the gateway intercepts nothing: a client inside
the sandbox that trusts only the test world's CA completes TLS with the world's
own certificate, and the world's servers record exactly the bytes it sent.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import time
import uuid
from pathlib import Path

from sealbox import Action, Network, NetworkPolicy, Rule, Sandbox
from sealbox.gateway.audit import read_events
from sealbox.testworld import TestWorld, pattern_sha256
from sealbox.testworld.pattern import PATTERN_BLOCK_SIZE, PATTERN_SEED

world_connect_to = TestWorld.connect_to_entries

WORLD_CA = "/etc/world-ca.pem"
GIB = 1 << 30

# Sends the request read from stdin to HOST:PORT, over TLS when a CA file is
# given, reads until the server closes, and prints what it saw as JSON. It
# counts every byte on the TCP socket (TLS records included) in both
# directions, so the counts can be compared with the gateway's.
CLIENT_SCRIPT = """\
import json, socket, ssl, sys
host, port, cafile = sys.argv[1], int(sys.argv[2]), sys.argv[3]
request = sys.stdin.buffer.read()
sock = socket.create_connection((host, port), timeout=20)
peer = sock.getpeername()[0]
counts = {"sent": 0, "received": 0}

def send_raw(data):
    sock.sendall(data)
    counts["sent"] += len(data)

def receive_raw():
    data = sock.recv(65536)
    counts["received"] += len(data)
    return data

response = bytearray()
alpn = None
if cafile:
    context = ssl.create_default_context(cafile=cafile)
    context.set_alpn_protocols(["http/1.1"])
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=host)

    def pump(call):
        while True:
            try:
                result = call()
            except ssl.SSLWantReadError:
                send_raw(outgoing.read())
                data = receive_raw()
                if data:
                    incoming.write(data)
                else:
                    incoming.write_eof()
                continue
            send_raw(outgoing.read())
            return result

    pump(tls.do_handshake)
    alpn = tls.selected_alpn_protocol()
    pump(lambda: tls.write(request))
    while True:
        try:
            chunk = pump(lambda: tls.read(65536))
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            break
        if not chunk:
            break
        response += chunk
else:
    send_raw(request)
    while True:
        chunk = receive_raw()
        if not chunk:
            break
        response += chunk
sock.shutdown(socket.SHUT_WR)
while receive_raw():
    pass
sock.close()
print(json.dumps({"peer": peer, "alpn": alpn, "sent": counts["sent"], "received": counts["received"],
                  "status": response.split(b"\\r\\n", 1)[0].decode()}))
"""

HALF_CLOSE_SCRIPT = """\
import hashlib, socket
data = bytes(range(256)) * 256
sock = socket.create_connection(("echo.test", 7), timeout=20)
sock.sendall(data)
sock.shutdown(socket.SHUT_WR)
received = bytearray()
while True:
    chunk = sock.recv(65536)
    if not chunk:
        break
    received += chunk
print(len(received), hashlib.sha256(received).hexdigest())
"""

UPLOAD_SCRIPT = f"""\
import hashlib, sys
block = hashlib.shake_256({PATTERN_SEED!r}).digest({PATTERN_BLOCK_SIZE})
for _ in range({GIB // PATTERN_BLOCK_SIZE}):
    sys.stdout.buffer.write(block)
"""


@functools.cache
def pattern_digest(size: int) -> str:
    return pattern_sha256(size)


def world_sandbox(world: TestWorld, name: str, policy: NetworkPolicy | None = None):
    network = Network(connect_to=world_connect_to(world), policy=policy or NetworkPolicy.public_only())
    return Sandbox.create(name, network=network, volumes=[f"{world.ca.cert_path}:{WORLD_CA}:ro"])


def events_of(sandbox: Sandbox, kind: str) -> list[dict]:
    return [event for event in read_events(Path(sandbox.audit_path)) if event["event"] == kind]


async def wait_for_close(sandbox: Sandbox, connection: int, timeout: float = 5.0) -> dict:
    """Return the close event of a connection, which the gateway writes just after the relay ends."""
    deadline = time.monotonic() + timeout
    while True:
        for event in events_of(sandbox, "close"):
            if event["conn"] == connection:
                return event
        if time.monotonic() > deadline:
            raise AssertionError(f"no close event for connection {connection} after {timeout:g} s")
        await asyncio.sleep(0.02)


def recording_with(world: TestWorld, server: str, marker: bytes):
    found = [recording for recording in world.recordings(server) if marker in recording.received]
    assert len(found) == 1, f"expected one {server} connection with {marker!r}, found {len(found)}"
    return found[0]


def post_request(marker: bytes) -> bytes:
    """Return an HTTP/1.1 POST to /echo whose body is every byte value once."""
    body = bytes(range(256))
    head = (
        b"POST /echo?marker=" + marker + b" HTTP/1.1\r\n"
        b"Host: echo.test\r\n"
        b"X-Spacing:   kept  as\tsent  \r\n"
        b"Content-Type: application/octet-stream\r\n"
        b"Content-Length: 256\r\n"
        b"Connection: close\r\n"
        b"\r\n"
    )
    return head + body


# ---------------------------------------------------------------------------
# Byte-exact passthrough


def test_tls_passthrough_exact_bytes(run, testworld):
    marker = uuid.uuid4().hex.encode()
    request = post_request(marker)

    async def scenario():
        async with await world_sandbox(testworld, "relay") as sandbox:
            output = await sandbox.exec("python3", ["-c", CLIENT_SCRIPT, "echo.test", "443", WORLD_CA],
                                        stdin=request, timeout=60)
            return output, events_of(sandbox, "intercept")

    output, intercepts = run(scenario())
    assert output.exit_code == 0, output.stderr_text
    seen = json.loads(output.stdout_text)
    assert seen["status"] == "HTTP/1.1 200 OK"
    assert seen["alpn"] == "http/1.1"
    assert intercepts == []
    recording = recording_with(testworld, "https", marker)
    assert recording.received == request
    assert recording.tls is True
    assert recording.sni == "echo.test"
    assert recording.alpn == "http/1.1"


def test_plain_passthrough_exact_bytes(run, testworld):
    marker = uuid.uuid4().hex.encode()
    request = post_request(marker)

    async def scenario():
        async with await world_sandbox(testworld, "relay") as sandbox:
            return await sandbox.exec("python3", ["-c", CLIENT_SCRIPT, "echo.test", "80", ""],
                                      stdin=request, timeout=60)

    output = run(scenario())
    assert output.exit_code == 0, output.stderr_text
    assert json.loads(output.stdout_text)["status"] == "HTTP/1.1 200 OK"
    recording = recording_with(testworld, "http", marker)
    assert recording.received == request
    assert recording.tls is False


def test_download_1gib_digest(run, testworld):
    async def scenario():
        async with await world_sandbox(testworld, "relay") as sandbox:
            return await sandbox.shell(
                f"curl -sS --cacert {WORLD_CA} https://echo.test/bytes/{GIB} | sha256sum", timeout=240
            )

    output = run(scenario())
    assert output.stderr_text == ""
    assert output.stdout_text.split()[0] == pattern_digest(GIB)


def test_upload_1gib_digest(run, testworld):
    async def scenario():
        async with await world_sandbox(testworld, "relay") as sandbox:
            return await sandbox.shell(
                f"python3 -c \"$UPLOAD\" | curl -sS --cacert {WORLD_CA} -T - https://echo.test/upload",
                env={"UPLOAD": UPLOAD_SCRIPT},
                timeout=240,
            )

    output = run(scenario())
    assert output.exit_code == 0, output.stderr_text
    assert json.loads(output.stdout_text) == {"length": GIB, "sha256": pattern_digest(GIB)}


def test_half_close_echo(run, testworld):
    data = bytes(range(256)) * 256

    async def scenario():
        async with await world_sandbox(testworld, "relay") as sandbox:
            output = await sandbox.exec("python3", ["-c", HALF_CLOSE_SCRIPT], timeout=60)
            connects = events_of(sandbox, "connect")
            close = await wait_for_close(sandbox, connects[0]["conn"]) if connects else None
            return output, connects, close

    output, connects, close = run(scenario())
    assert output.exit_code == 0, output.stderr_text
    assert output.stdout_text.split() == [str(len(data)), hashlib.sha256(data).hexdigest()]
    assert [event["kind"] for event in connects] == ["other"]
    assert close["bytes_up"] == len(data)
    assert close["bytes_down"] == len(data)


# ---------------------------------------------------------------------------
# Audit entries of one connection


def test_audit_tls_connect_and_close(run, testworld):
    policy = NetworkPolicy(default_egress=Action.DENY, rules=[Rule.allow("echo.test", port=443, protocol="tcp")])
    request = post_request(uuid.uuid4().hex.encode())

    async def scenario():
        async with await world_sandbox(testworld, "audit", policy) as sandbox:
            started = time.monotonic()
            output = await sandbox.exec("python3", ["-c", CLIENT_SCRIPT, "echo.test", "443", WORLD_CA],
                                        stdin=request, timeout=60)
            elapsed_ms = (time.monotonic() - started) * 1000
            connects = events_of(sandbox, "connect")
            close = await wait_for_close(sandbox, connects[0]["conn"]) if connects else None
            return output, elapsed_ms, connects, close

    output, elapsed_ms, connects, close = run(scenario())
    assert output.exit_code == 0, output.stderr_text
    seen = json.loads(output.stdout_text)
    assert len(connects) == 1
    connect = connects[0]
    assert connect["sandbox"] == "audit"
    assert connect["name"] == "echo.test"
    assert connect["ip"] == seen["peer"]
    assert connect["port"] == 443
    assert connect["kind"] == "tls"
    assert connect["sni"] == "echo.test"
    assert connect["alpn"] == ["http/1.1"]
    assert connect["verdict"] == "allow"
    assert connect["rule"] == 0
    assert connect["upstream"] == testworld.https.addr
    assert "intercept" not in connect
    assert close["bytes_up"] == seen["sent"]
    assert close["bytes_down"] == seen["received"]
    assert 0 < close["duration_ms"] < elapsed_ms


def test_audit_plain_connect_and_close(run, testworld):
    request = b"GET /bytes/1000 HTTP/1.1\r\nHost: echo.test\r\nConnection: close\r\n\r\n"

    async def scenario():
        async with await world_sandbox(testworld, "audit") as sandbox:
            output = await sandbox.exec("python3", ["-c", CLIENT_SCRIPT, "echo.test", "80", ""],
                                        stdin=request, timeout=60)
            connects = events_of(sandbox, "connect")
            close = await wait_for_close(sandbox, connects[0]["conn"]) if connects else None
            return output, connects, close

    output, connects, close = run(scenario())
    assert output.exit_code == 0, output.stderr_text
    seen = json.loads(output.stdout_text)
    assert len(connects) == 1
    assert connects[0]["kind"] == "http"
    assert connects[0]["host"] == "echo.test"
    assert connects[0]["port"] == 80
    assert connects[0]["upstream"] == testworld.http.addr
    assert close["bytes_up"] == len(request)
    assert close["bytes_down"] == seen["received"]
    assert seen["received"] > 1000


RESET_SCRIPT = """\
import socket, struct
sock = socket.create_connection(("echo.test", 7), timeout=20)
sock.sendall(b"x" * 1000)
received = 0
while received < 1000:
    received += len(sock.recv(65536))
sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
sock.close()
print(received)
"""


def test_audit_counts_reset_connection(run, testworld):
    # The client aborts with a reset after its 1000 bytes came back echoed.
    async def scenario():
        async with await world_sandbox(testworld, "audit") as sandbox:
            output = await sandbox.exec("python3", ["-c", RESET_SCRIPT], timeout=60)
            connects = events_of(sandbox, "connect")
            close = await wait_for_close(sandbox, connects[0]["conn"]) if connects else None
            return output, close

    output, close = run(scenario())
    assert output.stdout_text == "1000\n"
    assert close["bytes_up"] == 1000
    assert close["bytes_down"] == 1000
