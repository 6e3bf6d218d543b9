"""The gateway's DNS responder as processes inside a sandbox see it.

Queries are built inside the sandbox with the standard library only (the
script below) and sent over UDP or TCP to the resolver of /etc/resolv.conf.
The response comes back as hex and is parsed here with dnspython.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from sealbox import Network, NetworkPolicy, Rule, Sandbox
from sealbox.gateway.audit import read_events
from sealbox.testworld import TestWorld

world_connect_to = TestWorld.connect_to_entries

FAKE_V4 = ipaddress.ip_network("198.18.0.0/15")
FAKE_V6 = ipaddress.ip_network("100::/64")

QUERY_SCRIPT = """\
import socket, struct, sys
transport, server, name, qtype = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
question = b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\\0"
query = struct.pack("!HHHHHH", 0x5EA1, 0x0100, 1, 0, 0, 0) + question + struct.pack("!HH", qtype, 1)
if transport == "udp":
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(5)
    sock.sendto(query, (server, 53))
    reply = sock.recv(65535)
else:
    sock = socket.create_connection((server, 53), timeout=5)
    sock.sendall(struct.pack("!H", len(query)) + query)
    stream = b""
    while len(stream) < 2 or len(stream) < 2 + struct.unpack("!H", stream[:2])[0]:
        chunk = sock.recv(65535)
        if not chunk:
            break
        stream += chunk
    reply = stream[2:]
sys.stdout.write(reply.hex())
"""


def dns_network(world: TestWorld) -> Network:
    policy = NetworkPolicy(rules=[Rule.deny("denied.test")])
    return Network(policy=policy, connect_to=world_connect_to(world), add_hosts={"literal.test": "127.0.0.7"})


async def query(sandbox: Sandbox, name: str, qtype: str, transport: str = "udp",
                server: str = "127.0.0.1") -> dns.message.Message:
    """Send one query from inside the sandbox and return the parsed response."""
    number = str(int(dns.rdatatype.from_text(qtype)))
    output = await sandbox.exec("python3", ["-c", QUERY_SCRIPT, transport, server, name, number], timeout=30)
    assert output.exit_code == 0, output.stderr_text
    return dns.message.from_wire(bytes.fromhex(output.stdout_text))


def addresses(response: dns.message.Message) -> list[str]:
    return [item.address for rrset in response.answer for item in rrset]


def test_udp_a_in_fake_range(run, testworld):
    async def scenario():
        async with await Sandbox.create("dns", network=dns_network(testworld)) as sandbox:
            return await query(sandbox, "echo.test", "A")

    response = run(scenario())
    assert response.rcode() == dns.rcode.NOERROR
    assert len(addresses(response)) == 1
    assert ipaddress.ip_address(addresses(response)[0]) in FAKE_V4


def test_udp_aaaa_in_fake_range(run, testworld):
    async def scenario():
        async with await Sandbox.create("dns", network=dns_network(testworld)) as sandbox:
            return await query(sandbox, "echo.test", "AAAA")

    response = run(scenario())
    assert response.rcode() == dns.rcode.NOERROR
    assert len(addresses(response)) == 1
    assert ipaddress.ip_address(addresses(response)[0]) in FAKE_V6


def test_tcp_same_address_as_udp(run, testworld):
    async def scenario():
        async with await Sandbox.create("dns", network=dns_network(testworld)) as sandbox:
            results = {}
            for qtype in ("A", "AAAA"):
                for transport in ("udp", "tcp", "udp"):
                    response = await query(sandbox, "echo.test", qtype, transport)
                    results.setdefault(qtype, []).append((response.rcode(), addresses(response)))
            return results

    results = run(scenario())
    for qtype in ("A", "AAAA"):
        first = results[qtype][0]
        assert first[0] == dns.rcode.NOERROR
        assert len(first[1]) == 1
        assert results[qtype] == [first, first, first]


def test_names_get_distinct_addresses(run, testworld):
    async def scenario():
        async with await Sandbox.create("dns", network=dns_network(testworld)) as sandbox:
            echo = await query(sandbox, "echo.test", "A")
            canary = await query(sandbox, "canary.test", "A")
            return addresses(echo), addresses(canary)

    echo, canary = run(scenario())
    assert len(echo) == 1
    assert len(canary) == 1
    assert echo != canary


def test_denied_name_refused(run, testworld):
    async def scenario():
        async with await Sandbox.create("dns", network=dns_network(testworld)) as sandbox:
            over_udp = await query(sandbox, "denied.test", "A")
            over_tcp = await query(sandbox, "denied.test", "AAAA", "tcp")
            events = [event for event in read_events(Path(sandbox.audit_path)) if event["event"] == "dns"]
            return over_udp, over_tcp, events

    over_udp, over_tcp, events = run(scenario())
    assert over_udp.rcode() == dns.rcode.REFUSED
    assert over_udp.answer == []
    assert over_tcp.rcode() == dns.rcode.REFUSED
    assert over_tcp.answer == []
    assert [(event["name"], event["qtype"], event["verdict"], event["rcode"]) for event in events] == [
        ("denied.test", "A", "deny", "REFUSED"),
        ("denied.test", "AAAA", "deny", "REFUSED"),
    ]
    assert [event.get("answer") for event in events] == [[], []]


def test_audit_dns_event_fields(run, testworld):
    async def scenario():
        async with await Sandbox.create("dns", network=dns_network(testworld)) as sandbox:
            response = await query(sandbox, "echo.test", "A", "tcp")
            events = [event for event in read_events(Path(sandbox.audit_path)) if event["event"] == "dns"]
            return response, events

    response, events = run(scenario())
    assert len(events) == 1
    event = events[0]
    assert event["sandbox"] == "dns"
    assert event["name"] == "echo.test"
    assert event["qtype"] == "A"
    assert event["answer"] == addresses(response)
    assert event["verdict"] == "allow"
    assert event["rcode"] == "NOERROR"


def test_any_server_address_answered(run, testworld):
    # nftables sends port 53 to the gateway's DNS server whatever the
    # destination, here an address of the fake range on which nothing listens.
    async def scenario():
        async with await Sandbox.create("dns", network=dns_network(testworld)) as sandbox:
            local = await query(sandbox, "echo.test", "A")
            elsewhere_udp = await query(sandbox, "echo.test", "A", "udp", "198.18.0.53")
            elsewhere_tcp = await query(sandbox, "echo.test", "A", "tcp", "198.18.0.53")
            return local, elsewhere_udp, elsewhere_tcp

    local, elsewhere_udp, elsewhere_tcp = run(scenario())
    assert elsewhere_udp.rcode() == dns.rcode.NOERROR
    assert addresses(elsewhere_udp) == addresses(local)
    assert elsewhere_tcp.rcode() == dns.rcode.NOERROR
    assert addresses(elsewhere_tcp) == addresses(local)


def test_getent_matches_dns_answer(run, testworld):
    async def scenario():
        async with await Sandbox.create("dns", network=dns_network(testworld)) as sandbox:
            getent = await sandbox.exec("getent", ["ahosts", "echo.test"])
            answer_v4 = await query(sandbox, "echo.test", "A")
            answer_v6 = await query(sandbox, "echo.test", "AAAA")
            return getent, addresses(answer_v4) + addresses(answer_v6)

    getent, answers = run(scenario())
    assert getent.exit_code == 0
    assert {line.split()[0] for line in getent.stdout_text.splitlines()} == set(answers)


@pytest.mark.xfail(strict=True, reason=(
    "the namespace has only 127.0.0.1 and ::1, so glibc's getaddrinfo with one address family "
    "and AI_ADDRCONFIG (as in getent ahostsv4) finds no configured address of that family and "
    "returns no result"
))
def test_getent_ahostsv4_resolves(run, testworld):
    async def scenario():
        async with await Sandbox.create("dns", network=dns_network(testworld)) as sandbox:
            return await sandbox.exec("getent", ["ahostsv4", "echo.test"])

    output = run(scenario())
    assert output.exit_code == 0


def test_getent_denied_name_fails(run, testworld):
    async def scenario():
        async with await Sandbox.create("dns", network=dns_network(testworld)) as sandbox:
            return await sandbox.exec("getent", ["hosts", "denied.test"])

    output = run(scenario())
    assert output.exit_code == 2
    assert output.stdout_text == ""


def test_add_hosts_literal(run, testworld):
    async def scenario():
        async with await Sandbox.create("dns", network=dns_network(testworld)) as sandbox:
            getent = await sandbox.exec("getent", ["hosts", "literal.test"])
            a_record = await query(sandbox, "literal.test", "A")
            aaaa_record = await query(sandbox, "literal.test", "AAAA")
            return getent, a_record, aaaa_record

    getent, a_record, aaaa_record = run(scenario())
    assert getent.stdout_text.split() == ["127.0.0.7", "literal.test"]
    assert a_record.rcode() == dns.rcode.NOERROR
    assert addresses(a_record) == ["127.0.0.7"]
    # An IPv4 literal has no IPv6 form: NOERROR without records (NODATA).
    assert aaaa_record.rcode() == dns.rcode.NOERROR
    assert addresses(aaaa_record) == []


def test_localhost_is_sandbox_loopback(run, testworld):
    async def scenario():
        async with await Sandbox.create("dns", network=dns_network(testworld)) as sandbox:
            return await query(sandbox, "localhost", "A"), await query(sandbox, "localhost", "AAAA")

    a_record, aaaa_record = run(scenario())
    assert addresses(a_record) == ["127.0.0.1"]
    assert addresses(aaaa_record) == ["::1"]
