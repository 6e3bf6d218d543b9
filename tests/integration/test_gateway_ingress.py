"""Published ports end to end: a host client reaches a server inside the sandbox.

The server inside listens on the sandbox's own 127.0.0.1; the gateway
listens on the host's 127.0.0.1:HOST_PORT and connects into the namespace.
"""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

from sealbox import Action, Network, NetworkPolicy, Rule, Sandbox
from sealbox.gateway.audit import read_events

SANDBOX_PORT = 8000

# Waits inside the sandbox until something listens on 127.0.0.1:8000.
WAIT_FOR_SERVER = """\
import socket, sys, time
deadline = time.monotonic() + 10
while time.monotonic() < deadline:
    try:
        socket.create_connection(("127.0.0.1", 8000), timeout=1).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.05)
sys.exit(1)
"""

# Listens on 127.0.0.1:8000 (then writes /tmp/listening) and writes
# /tmp/accepted once a connection arrives, so a test can tell whether the
# gateway ever connected into the sandbox.
ACCEPT_ONCE = """\
import socket
server = socket.create_server(("127.0.0.1", 8000))
open("/tmp/listening", "w").close()
connection, _ = server.accept()
open("/tmp/accepted", "w").close()
"""
WAIT_FOR_LISTENING = "for i in $(seq 200); do [ -e /tmp/listening ] && exit 0; sleep 0.05; done; exit 1"


def free_port() -> int:
    # NOTE: another process may take the port between this close and the
    # gateway's bind; the sandbox would then fail to start.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def events_of(sandbox: Sandbox, kind: str) -> list[dict]:
    return [event for event in read_events(Path(sandbox.audit_path)) if event["event"] == kind]


def exchange(port: int, request: bytes) -> bytes:
    """Send a request to 127.0.0.1:port on the host and return everything received until EOF."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(request)
        received = bytearray()
        while chunk := client.recv(65536):
            received += chunk
    return bytes(received)


async def start_http_server(sandbox: Sandbox) -> None:
    started = await sandbox.shell(
        "cd /tmp && printf 'published\\n' > hello.txt && "
        f"nohup python3 -m http.server {SANDBOX_PORT} --bind 127.0.0.1 >/tmp/server.log 2>&1 &"
    )
    assert started.exit_code == 0, started.stderr_text
    ready = await sandbox.exec("python3", ["-c", WAIT_FOR_SERVER], timeout=30)
    assert ready.exit_code == 0, "the HTTP server inside the sandbox did not start"


async def wait_for_close(sandbox: Sandbox, connection: int) -> dict | None:
    """Return the close event of a connection, which the gateway writes just after the relay ends."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for event in events_of(sandbox, "close"):
            if event["conn"] == connection:
                return event
        await asyncio.sleep(0.02)
    return None


def test_published_port_serves_file(run):
    host_port = free_port()
    request = b"GET /hello.txt HTTP/1.0\r\nHost: localhost\r\n\r\n"

    async def scenario():
        async with await Sandbox.create("ingress", network=Network(ports={host_port: SANDBOX_PORT})) as sandbox:
            await start_http_server(sandbox)
            response = exchange(host_port, request)
            ingresses = events_of(sandbox, "ingress")
            close = await wait_for_close(sandbox, ingresses[0]["conn"]) if ingresses else None
            return response, ingresses, close

    response, ingresses, close = run(scenario())
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0] == b"HTTP/1.0 200 OK"
    assert body == b"published\n"
    assert len(ingresses) == 1
    assert ingresses[0]["ip"] == "127.0.0.1"
    assert ingresses[0]["host_port"] == host_port
    assert ingresses[0]["port"] == SANDBOX_PORT
    assert close["bytes_up"] == len(request)
    assert close["bytes_down"] == len(response)
    assert close["duration_ms"] > 0


def test_ingress_denied_reset(run):
    host_port = free_port()
    policy = NetworkPolicy(default_ingress=Action.DENY)
    network = Network(policy=policy, ports={host_port: SANDBOX_PORT})

    async def scenario():
        async with await Sandbox.create("ingress", network=network) as sandbox:
            await sandbox.shell('nohup python3 -c "$SERVER" >/dev/null 2>&1 &', env={"SERVER": ACCEPT_ONCE})
            ready = await sandbox.shell(WAIT_FOR_LISTENING)
            # The client sends nothing, so a reset cannot come from data that the gateway left unread.
            # The reset can arrive before connect() has returned, so it is caught there too.
            try:
                with socket.create_connection(("127.0.0.1", host_port), timeout=10) as client:
                    outcome = repr(client.recv(100))
            except OSError as error:
                outcome = type(error).__name__
            accepted = await sandbox.exec("test", ["-e", "/tmp/accepted"])
            return ready, outcome, accepted, events_of(sandbox, "deny"), events_of(sandbox, "ingress")

    ready, outcome, accepted, denies, ingresses = run(scenario())
    assert ready.exit_code == 0, "the listener inside the sandbox did not start"
    assert outcome == "ConnectionResetError"
    assert accepted.exit_code == 1
    assert ingresses == []
    assert len(denies) == 1
    assert denies[0]["direction"] == "ingress"
    assert denies[0]["ip"] == "127.0.0.1"
    assert denies[0]["port"] == SANDBOX_PORT
    assert denies[0].get("rule") is None
    assert denies[0]["reason"] == f"no rule matched 127.0.0.1 tcp port {SANDBOX_PORT}; default ingress is deny"


def test_ingress_allow_rule_admits(run):
    host_port = free_port()
    rule = Rule.allow("127.0.0.1", port=SANDBOX_PORT, protocol="tcp", direction="ingress")
    policy = NetworkPolicy(default_ingress=Action.DENY, rules=[rule])
    network = Network(policy=policy, ports={host_port: SANDBOX_PORT})

    async def scenario():
        async with await Sandbox.create("ingress", network=network) as sandbox:
            await start_http_server(sandbox)
            response = exchange(host_port, b"GET /hello.txt HTTP/1.0\r\n\r\n")
            return response, events_of(sandbox, "deny")

    response, denies = run(scenario())
    assert response.endswith(b"\r\n\r\npublished\n")
    assert denies == []
