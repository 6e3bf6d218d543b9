"""The network policy end to end: real sandboxes, real nftables, curl inside.

Every name a test uses is pointed at a recording listener that the test starts on
127.0.0.1 (through `Network(connect_to=...)`, for any port), so an allowed
request shows up there and a denied one must not. Address groups are not
exercised by dialing: from inside the namespace only loopback and the fake
DNS range are safe targets, and tests/unit/test_policy.py classifies the
addresses themselves.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from sealbox import Action, Network, NetworkPolicy, Rule, Sandbox
from sealbox.gateway.audit import read_events
from sealbox.netns.namespace import create_namespace
from sealbox.testworld import TestWorld

world_connect_to = TestWorld.connect_to_entries

CANARY_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
CURL_OPTIONS = ["-sS", "--max-time", "20", "-w", "\\n%{http_code}"]


class RecordingListener:
    """TCP listener on 127.0.0.1 that records each connection's request head and responds with 200 `ok`."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self._socket.settimeout(0.05)
        self.port: int = self._socket.getsockname()[1]
        self.requests: list[bytes] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="recording-listener", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stopped.is_set():
            try:
                connection, _ = self._socket.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with connection:
                connection.settimeout(5)
                head = b""
                try:
                    while b"\r\n\r\n" not in head:
                        chunk = connection.recv(65536)
                        if not chunk:
                            break
                        head += chunk
                finally:
                    # Recorded before responding, so the client never finishes before the record exists.
                    with self._lock:
                        self.requests.append(head)
                try:
                    connection.sendall(CANARY_RESPONSE)
                except OSError:
                    pass

    def hosts(self) -> list[str]:
        """Return the Host header of every recorded request, in arrival order."""
        with self._lock:
            requests = list(self.requests)
        found = []
        for head in requests:
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.lower() == b"host":
                    found.append(value.strip().decode())
        return found

    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def close(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)
        self._socket.close()


@pytest.fixture
def canary():
    listener = RecordingListener()
    try:
        yield listener
    finally:
        listener.close()


def audit_events(sandbox: Sandbox, kind: str) -> list[dict]:
    return [event for event in read_events(Path(sandbox.audit_path)) if event["event"] == kind]


def split_curl_output(stdout: str) -> tuple[str, str]:
    """Split curl's output, made with `-w '\\n%{http_code}'`, into (body, status)."""
    body, _, status = stdout.rpartition("\n")
    return body, status


# ---------------------------------------------------------------------------
# Policy matrix: default egress deny with ordered allow and deny rules

MATRIX_NAMES = (
    "exact.test", "sub.exact.test", "a.wild.test", "b.c.wild.test", "wild.test",
    "ports.test", "order.test", "first.test", "udponly.test", "other.test",
)
MATRIX_RULES = (
    Rule.allow("exact.test"),                                      # 0
    Rule.allow("*.wild.test"),                                     # 1
    Rule.allow("ports.test", port=8081, protocol="tcp"),           # 2
    Rule.allow("ports.test", ports="8085,8090", protocol="tcp"),   # 3
    Rule.allow("ports.test", ports="9000-9010", protocol="tcp"),   # 4
    Rule.deny("order.test", port=8081, protocol="tcp"),            # 5
    Rule.allow("order.test"),                                      # 6
    Rule.allow("first.test", port=8083, protocol="tcp"),           # 7
    Rule.deny("first.test"),                                       # 8
    Rule.allow("udponly.test", protocol="udp"),                    # 9
)


def matrix_network(canary_port: int) -> Network:
    policy = NetworkPolicy(default_egress=Action.DENY, rules=MATRIX_RULES)
    return Network(policy=policy, connect_to=[f"{name}::127.0.0.1:{canary_port}" for name in MATRIX_NAMES])


@dataclass(frozen=True)
class Allowed:
    url: str
    name: str
    port: int
    rule: int


ALLOWED = [
    Allowed("http://exact.test/", "exact.test", 80, 0),
    Allowed("http://a.wild.test/", "a.wild.test", 80, 1),
    Allowed("http://b.c.wild.test/", "b.c.wild.test", 80, 1),
    Allowed("http://ports.test:8081/", "ports.test", 8081, 2),
    Allowed("http://ports.test:8085/", "ports.test", 8085, 3),
    Allowed("http://ports.test:8090/", "ports.test", 8090, 3),
    Allowed("http://ports.test:9000/", "ports.test", 9000, 4),
    Allowed("http://ports.test:9010/", "ports.test", 9010, 4),
    Allowed("http://order.test:8082/", "order.test", 8082, 6),
    Allowed("http://first.test:8083/", "first.test", 8083, 7),
]


@pytest.mark.parametrize("case", ALLOWED, ids=[case.url for case in ALLOWED])
def test_matrix_allowed(run, canary, case: Allowed):
    async def scenario():
        async with await Sandbox.create("policy", network=matrix_network(canary.port)) as sandbox:
            output = await sandbox.exec("curl", [*CURL_OPTIONS, case.url])
            connects = audit_events(sandbox, "connect")
            return output, connects

    output, connects = run(scenario())
    assert output.exit_code == 0, output.stderr_text
    assert split_curl_output(output.stdout_text) == ("ok", "200")
    host = case.name if case.port == 80 else f"{case.name}:{case.port}"
    assert canary.hosts() == [host]
    assert len(connects) == 1
    assert connects[0]["name"] == case.name
    assert connects[0]["port"] == case.port
    assert connects[0]["verdict"] == "allow"
    assert connects[0]["rule"] == case.rule
    assert connects[0]["kind"] == "http"


@dataclass(frozen=True)
class Denied:
    url: str
    name: str
    port: int
    rule: int | None
    reason: str


DEFAULT_DENY = "no rule matched {name} tcp port {port}; default egress is deny"
DENIED_HTTP = [
    Denied("http://ports.test:8082/", "ports.test", 8082, None, DEFAULT_DENY),
    Denied("http://ports.test:9011/", "ports.test", 9011, None, DEFAULT_DENY),
    Denied("http://order.test:8081/", "order.test", 8081, 5,
           "rule 5 (deny order.test tcp port 8081) matched name order.test"),
    Denied("http://first.test:8084/", "first.test", 8084, 8, "rule 8 (deny first.test) matched name first.test"),
    Denied("http://udponly.test/", "udponly.test", 80, None, DEFAULT_DENY),
]


@pytest.mark.parametrize("case", DENIED_HTTP, ids=[case.url for case in DENIED_HTTP])
def test_matrix_denied_http_403(run, canary, case: Denied):
    reason = case.reason.format(name=case.name, port=case.port)

    async def scenario():
        async with await Sandbox.create("policy", network=matrix_network(canary.port)) as sandbox:
            output = await sandbox.exec("curl", [*CURL_OPTIONS, case.url])
            return output, audit_events(sandbox, "deny"), audit_events(sandbox, "connect")

    output, denies, connects = run(scenario())
    assert output.exit_code == 0, output.stderr_text
    assert split_curl_output(output.stdout_text) == (
        f"sealbox: connection denied by the network policy: {reason}\n", "403"
    )
    assert canary.count() == 0
    assert connects == []
    assert len(denies) == 1
    assert denies[0]["names"] == [case.name]
    assert denies[0]["port"] == case.port
    assert denies[0].get("rule") == case.rule
    assert denies[0]["reason"] == reason


@dataclass(frozen=True)
class Reset:
    url: str
    port: int
    exit_code: int
    stderr: str


# The gateway resets a denied connection once it has classified its first
# bytes: curl reports that as a failed TLS handshake (35) or, for a protocol
# where the client speaks first without TLS or HTTP, as a failed receive (56).
DENIED_RESET = [
    Reset("https://ports.test:8443/", 8443, 35, "curl: (35) Recv failure: Connection reset by peer\n"),
    Reset("telnet://ports.test:8023", 8023, 56, "curl: (56) Recv failure: Connection reset by peer\n"),
]


@pytest.mark.parametrize("case", DENIED_RESET, ids=[case.url for case in DENIED_RESET])
def test_matrix_denied_reset(run, canary, case: Reset):
    async def scenario():
        async with await Sandbox.create("policy", network=matrix_network(canary.port)) as sandbox:
            # telnet:// sends nothing until stdin has data, so give it a line to send.
            output = await sandbox.exec("curl", ["-sS", "--max-time", "20", case.url], stdin=b"hello\n")
            return output, audit_events(sandbox, "deny")

    output, denies = run(scenario())
    assert output.exit_code == case.exit_code
    assert output.stderr_text == case.stderr
    assert canary.count() == 0
    assert len(denies) == 1
    assert denies[0]["names"] == ["ports.test"]
    assert denies[0]["port"] == case.port
    assert denies[0].get("rule") is None
    assert denies[0]["reason"] == DEFAULT_DENY.format(name="ports.test", port=case.port)


# exact.test does not cover its subdomains, *.wild.test does not cover wild.test
# itself, and a name no rule allows is refused already at DNS time.
DENIED_NAMES = ["sub.exact.test", "wild.test", "other.test"]


@pytest.mark.parametrize("name", DENIED_NAMES)
def test_matrix_denied_name_unresolved(run, canary, name: str):
    async def scenario():
        async with await Sandbox.create("policy", network=matrix_network(canary.port)) as sandbox:
            output = await sandbox.exec("curl", [*CURL_OPTIONS, f"http://{name}/"])
            return output, audit_events(sandbox, "dns"), audit_events(sandbox, "connect")

    output, queries, connects = run(scenario())
    assert output.exit_code == 6
    assert canary.count() == 0
    assert connects == []
    assert {(query["name"], query["verdict"], query["rcode"]) for query in queries} == {(name, "deny", "REFUSED")}


# The gateway resets right after accepting, which can happen before connect() has returned.
PROBE_EXPIRED = """\
import socket
try:
    sock = socket.create_connection(("198.18.200.1", 80), timeout=10)
    print(sock.recv(100))
except OSError as error:
    print(type(error).__name__)
"""


def test_unallocated_fake_address_reset(run, canary):
    # 198.18.200.1 is in the fake DNS range but was never handed out, so it names nothing.
    async def scenario():
        async with await Sandbox.create("policy", network=matrix_network(canary.port)) as sandbox:
            output = await sandbox.exec("python3", ["-c", PROBE_EXPIRED])
            return output, audit_events(sandbox, "deny")

    output, denies = run(scenario())
    assert output.stdout_text == "ConnectionResetError\n"
    assert canary.count() == 0
    assert len(denies) == 1
    assert denies[0]["ip"] == "198.18.200.1"
    assert denies[0]["port"] == 80
    assert denies[0]["names"] == []
    assert denies[0]["reason"] == "address from an expired DNS answer"


def test_static_map_address_not_grouped(run, canary):
    # public_only() denies the loopback group, but the operator's map points
    # mapped.test at 127.0.0.1 and is trusted: only the name is checked.
    network = Network(connect_to=[f"mapped.test::127.0.0.1:{canary.port}"])

    async def scenario():
        async with await Sandbox.create("policy", network=network) as sandbox:
            output = await sandbox.exec("curl", [*CURL_OPTIONS, "http://mapped.test/"])
            return output, audit_events(sandbox, "connect")

    output, connects = run(scenario())
    assert split_curl_output(output.stdout_text) == ("ok", "200")
    assert canary.hosts() == ["mapped.test"]
    assert len(connects) == 1
    assert connects[0].get("rule") is None
    assert connects[0]["upstream"] == f"127.0.0.1:{canary.port}"


def test_tls_denied_by_name_rule(run, testworld):
    # The default allows egress and one rule denies TCP to canary.test. DNS
    # still resolves the name because the rule is limited to TCP, the TLS
    # connection is reset, and the world's canary server receives nothing.
    policy = NetworkPolicy(default_egress=Action.ALLOW, rules=[Rule.deny("canary.test", protocol="tcp")])
    network = Network(policy=policy, connect_to=world_connect_to(testworld))
    before = len(testworld.recordings("canary"))

    async def scenario():
        async with await Sandbox.create("policy", network=network) as sandbox:
            output = await sandbox.exec("curl", ["-sS", "--max-time", "20", "https://canary.test/"])
            return output, audit_events(sandbox, "deny")

    output, denies = run(scenario())
    assert output.exit_code == 35
    assert len(testworld.recordings("canary")) == before
    assert len(denies) == 1
    assert denies[0]["rule"] == 0
    assert denies[0]["reason"] == "rule 0 (deny canary.test tcp) matched name canary.test"


# ---------------------------------------------------------------------------
# No network, and failing closed


def test_none_fake_address_unreachable(run, canary):
    async def scenario():
        async with await Sandbox.create("nonet", network=Network.none()) as sandbox:
            started = time.monotonic()
            output = await sandbox.exec("curl", ["-sS", "--max-time", "20", "http://198.18.0.1/"])
            return output, time.monotonic() - started

    output, elapsed = run(scenario())
    assert output.exit_code == 7
    assert elapsed < 5
    assert canary.count() == 0


def test_none_name_unresolved(run):
    async def scenario():
        async with await Sandbox.create("nonet", network=Network.none()) as sandbox:
            return await sandbox.exec("curl", ["-sS", "--max-time", "20", "http://echo.test/"])

    output = run(scenario())
    assert output.exit_code == 6


def _probe_without_gateway(host_port: int) -> dict[str, str]:
    """Try every way out from the current thread's namespace; return each attempt's outcome."""
    outcomes: dict[str, str] = {}

    def attempt(label: str, action) -> None:
        try:
            action()
            outcomes[label] = "no error"
        except OSError as error:
            outcomes[label] = type(error).__name__

    def tcp(family: int, address: tuple) -> None:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(2)
            sock.connect(address)

    def udp(address: tuple, reply: bool) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(1)
            sock.connect(address)
            sock.send(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x04echo\x04test\x00\x00\x01\x00\x01")
            if reply:
                sock.recv(512)

    def icmp_echo() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
            sock.settimeout(1)
            header = struct.pack("!BBHHH", 8, 0, 0, 1, 1)
            checksum = (~sum(struct.unpack("!4H", header)) & 0xFFFF)
            sock.sendto(struct.pack("!BBHHH", 8, 0, checksum, 1, 1), ("198.18.0.1", 0))
            sock.recv(512)

    attempt("tcp fake v4", lambda: tcp(socket.AF_INET, ("198.18.0.1", 443)))
    attempt("tcp fake v6", lambda: tcp(socket.AF_INET6, ("100::1", 443)))
    attempt("tcp host loopback", lambda: tcp(socket.AF_INET, ("127.0.0.1", host_port)))
    attempt("dns local", lambda: udp(("127.0.0.1", 53), reply=True))
    attempt("dns fake", lambda: udp(("198.18.0.53", 53), reply=True))
    attempt("udp fake", lambda: udp(("198.18.0.1", 9), reply=False))
    attempt("icmp fake", icmp_echo)
    return outcomes


def test_namespace_without_gateway_fails_closed(canary):
    # The namespace of a sandbox, with its nftables rules but no gateway
    # listening: every TCP connection is redirected to a closed port, DNS to
    # a closed port, and other UDP and ICMP are dropped on the way out.
    namespace = create_namespace()
    try:
        outcomes = namespace.run(lambda: _probe_without_gateway(canary.port))
    finally:
        namespace.close()
    assert outcomes["tcp fake v4"] == "ConnectionRefusedError"
    assert outcomes["tcp fake v6"] == "ConnectionRefusedError"
    assert outcomes["tcp host loopback"] == "ConnectionRefusedError"
    assert outcomes["dns local"] == "ConnectionRefusedError"
    assert outcomes["dns fake"] == "ConnectionRefusedError"
    assert outcomes["udp fake"] == "PermissionError"
    assert outcomes["icmp fake"] == "PermissionError"
    assert canary.count() == 0


UDP_PROBE = """\
import socket
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.settimeout(1)
try:
    sock.sendto(b"ping", (socket.gethostbyname("echo.test"), 7))
    print(sock.recv(100))
except OSError as error:
    print(type(error).__name__)
"""


def test_sandbox_udp_dropped(run, testworld):
    # echo.test resolves to a fake address, and UDP to it on a port other than 53 is dropped before it leaves.
    network = Network(connect_to=world_connect_to(testworld))

    async def scenario():
        async with await Sandbox.create("policy", network=network) as sandbox:
            return await sandbox.exec("python3", ["-c", UDP_PROBE])

    output = run(scenario())
    assert output.stdout_text == "PermissionError\n"


def test_sandbox_icmp_no_reply(run, testworld):
    network = Network(connect_to=world_connect_to(testworld))

    async def scenario():
        async with await Sandbox.create("policy", network=network) as sandbox:
            found = await sandbox.shell("command -v ping")
            if found.exit_code != 0:
                return None
            return await sandbox.exec("ping", ["-c1", "-W1", "198.18.0.1"])

    output = run(scenario())
    if output is None:
        pytest.skip("ping is not installed, so the sandbox cannot send ICMP echo requests")
    assert output.exit_code != 0
    # ping either gets no reply, or cannot start at all: its file capability
    # (cap_net_raw) is outside the sandbox's bounding set.
    no_reply = " 0 received" in output.stdout_text
    not_permitted = "operation not permitted" in output.stderr_text
    assert no_reply or not_permitted, output
