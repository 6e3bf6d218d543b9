"""DNS responder on wire messages built with dnspython, and DNS-over-TCP framing. Nothing is sent."""

from __future__ import annotations

import struct

import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.reversename
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sealbox.gateway.dns import DnsEvent, DnsResponder, TcpDnsFramer, frame_tcp
from sealbox.gateway.fakeip import FakeAddressPool
from sealbox.gateway.policy import PolicyEngine
from sealbox.spec.network import Action, NetworkPolicy, Rule


@pytest.fixture
def pool() -> FakeAddressPool:
    return FakeAddressPool()


@pytest.fixture
def responder(pool: FakeAddressPool) -> DnsResponder:
    rules = (Rule.deny("*.evil.test"), Rule.deny("blocked.test"), *NetworkPolicy.public_only().rules)
    policy = NetworkPolicy(rules=rules)
    return DnsResponder(PolicyEngine(policy), pool, add_hosts={"db.test": "127.0.0.2", "v6.test": "::2"})


def query_responder(responder: DnsResponder, name: str, rdtype: str | int) -> tuple[dns.message.Message, DnsEvent]:
    query = dns.message.make_query(name, rdtype)
    wire, event = responder.respond(query.to_wire())
    assert wire is not None
    assert event is not None
    response = dns.message.from_wire(wire)
    assert response.id == query.id
    return response, event


def answer_texts(response: dns.message.Message) -> list[str]:
    return [rdata.to_text() for rrset in response.answer for rdata in rrset]


def test_a_fake_address(responder: DnsResponder, pool: FakeAddressPool) -> None:
    response, event = query_responder(responder, "github.com", "A")
    assert response.rcode() == dns.rcode.NOERROR
    assert answer_texts(response) == ["198.18.0.1"]
    assert pool.name_for("198.18.0.1") == "github.com"
    assert event == DnsEvent("github.com", "A", ("198.18.0.1",), "allow", "NOERROR", event.reason)


def test_a_response_flags(responder: DnsResponder) -> None:
    response, _ = query_responder(responder, "github.com", "A")
    assert response.flags & dns.flags.QR
    assert response.flags & dns.flags.RD
    assert response.flags & dns.flags.RA


def test_a_ttl(responder: DnsResponder) -> None:
    response, _ = query_responder(responder, "github.com", "A")
    assert response.answer[0].ttl == 5


def test_a_custom_ttl(pool: FakeAddressPool) -> None:
    responder = DnsResponder(PolicyEngine(NetworkPolicy.public_only()), pool, ttl=1)
    response, _ = query_responder(responder, "github.com", "A")
    assert response.answer[0].ttl == 1


def test_aaaa_fake_address(responder: DnsResponder, pool: FakeAddressPool) -> None:
    response, event = query_responder(responder, "github.com", "AAAA")
    assert answer_texts(response) == ["100::1"]
    assert pool.name_for("100::1") == "github.com"
    assert event.answer == ("100::1",)


def test_a_stable_across_queries(responder: DnsResponder) -> None:
    first, _ = query_responder(responder, "github.com", "A")
    query_responder(responder, "pypi.test", "A")
    again, _ = query_responder(responder, "GITHUB.com", "A")
    assert answer_texts(again) == answer_texts(first)


def test_answer_echoes_question_case(responder: DnsResponder) -> None:
    response, event = query_responder(responder, "GitHub.CoM", "A")
    assert response.question[0].name.to_text() == "GitHub.CoM."
    assert response.answer[0].name.to_text() == "GitHub.CoM."
    assert event.name == "github.com"


@pytest.mark.parametrize("rdtype", ["HTTPS", "SVCB", "MX", "TXT", "NS", "CNAME", "SRV", "ANY"])
def test_other_types_nodata(responder: DnsResponder, rdtype: str) -> None:
    response, event = query_responder(responder, "github.com", rdtype)
    assert response.rcode() == dns.rcode.NOERROR
    assert response.answer == []
    assert event.qtype == rdtype
    assert event.verdict == "allow"


def test_https_type_number(responder: DnsResponder) -> None:
    response, event = query_responder(responder, "github.com", 65)
    assert response.answer == []
    assert event.qtype == "HTTPS"


def test_denied_name_refused(responder: DnsResponder, pool: FakeAddressPool) -> None:
    response, event = query_responder(responder, "blocked.test", "A")
    assert response.rcode() == dns.rcode.REFUSED
    assert response.answer == []
    assert event.verdict == "deny"
    assert event.rcode == "REFUSED"
    assert event.reason == "rule 1 (deny blocked.test) matched name blocked.test"
    assert pool.name_for("198.18.0.1") is None


@pytest.mark.parametrize("rdtype", ["A", "AAAA", "HTTPS", "MX"])
def test_denied_wildcard_every_type(responder: DnsResponder, rdtype: str) -> None:
    response, _ = query_responder(responder, "a.b.evil.test", rdtype)
    assert response.rcode() == dns.rcode.REFUSED


def test_default_deny_refused(pool: FakeAddressPool) -> None:
    policy = NetworkPolicy(default_egress=Action.DENY, rules=(Rule.allow("github.com", port=443),))
    responder = DnsResponder(PolicyEngine(policy), pool)
    assert query_responder(responder, "github.com", "A")[0].rcode() == dns.rcode.NOERROR
    assert query_responder(responder, "example.com", "A")[0].rcode() == dns.rcode.REFUSED


def test_add_hosts_a(responder: DnsResponder) -> None:
    response, event = query_responder(responder, "DB.test", "A")
    assert answer_texts(response) == ["127.0.0.2"]
    assert event.answer == ("127.0.0.2",)


def test_add_hosts_other_family_nodata(responder: DnsResponder) -> None:
    response, _ = query_responder(responder, "db.test", "AAAA")
    assert response.rcode() == dns.rcode.NOERROR
    assert response.answer == []


def test_add_hosts_aaaa(responder: DnsResponder) -> None:
    response, _ = query_responder(responder, "v6.test", "AAAA")
    assert answer_texts(response) == ["::2"]


def test_add_hosts_denied_name(pool: FakeAddressPool) -> None:
    engine = PolicyEngine(NetworkPolicy(rules=(Rule.deny("db.test"),)))
    responder = DnsResponder(engine, pool, add_hosts={"db.test": "127.0.0.2"})
    response, _ = query_responder(responder, "db.test", "A")
    assert response.rcode() == dns.rcode.REFUSED


def test_localhost_loopback(responder: DnsResponder) -> None:
    assert answer_texts(query_responder(responder, "localhost", "A")[0]) == ["127.0.0.1"]
    assert answer_texts(query_responder(responder, "app.localhost", "AAAA")[0]) == ["::1"]


def test_ptr_fake_address(responder: DnsResponder) -> None:
    query_responder(responder, "github.com", "A")
    response, event = query_responder(responder, dns.reversename.from_address("198.18.0.1").to_text(), "PTR")
    assert answer_texts(response) == ["github.com."]
    assert event.answer == ("github.com",)


def test_ptr_fake_ipv6_address(responder: DnsResponder) -> None:
    query_responder(responder, "github.com", "AAAA")
    response, _ = query_responder(responder, dns.reversename.from_address("100::1").to_text(), "PTR")
    assert answer_texts(response) == ["github.com."]


def test_ptr_add_hosts(responder: DnsResponder) -> None:
    response, _ = query_responder(responder, "2.0.0.127.in-addr.arpa", "PTR")
    assert answer_texts(response) == ["db.test."]


def test_ptr_unknown_nxdomain(responder: DnsResponder) -> None:
    response, _ = query_responder(responder, "8.8.8.8.in-addr.arpa", "PTR")
    assert response.rcode() == dns.rcode.NXDOMAIN


def test_ptr_unallocated_fake_nxdomain(responder: DnsResponder) -> None:
    response, _ = query_responder(responder, "9.0.18.198.in-addr.arpa", "PTR")
    assert response.rcode() == dns.rcode.NXDOMAIN


def test_ptr_partial_name_nxdomain(responder: DnsResponder) -> None:
    response, _ = query_responder(responder, "18.198.in-addr.arpa", "PTR")
    assert response.rcode() == dns.rcode.NXDOMAIN


@pytest.mark.parametrize("name", [".", "bad name.test", "a\\000b.test"])
def test_invalid_name_refused(responder: DnsResponder, name: str) -> None:
    response, event = query_responder(responder, name, "A")
    assert response.rcode() == dns.rcode.REFUSED
    assert event.verdict == "invalid"


def test_underscore_name_allowed(responder: DnsResponder) -> None:
    response, _ = query_responder(responder, "_dmarc.example.com", "TXT")
    assert response.rcode() == dns.rcode.NOERROR


def test_non_in_class_notimp(responder: DnsResponder) -> None:
    query = dns.message.make_query("version.bind", "TXT", rdclass=dns.rdataclass.CH)
    wire, event = responder.respond(query.to_wire())
    assert wire is not None
    assert dns.message.from_wire(wire).rcode() == dns.rcode.NOTIMP
    assert event is not None
    assert event.verdict == "invalid"


def test_two_questions_formerr(responder: DnsResponder) -> None:
    query = dns.message.make_query("github.com", "A")
    query.question.append(dns.message.make_query("pypi.test", "A").question[0])
    wire, event = responder.respond(query.to_wire())
    assert wire is not None
    response = dns.message.from_wire(wire)
    assert response.id == query.id
    assert response.rcode() == dns.rcode.FORMERR
    assert event is not None
    assert event.rcode == "FORMERR"


def test_no_question_formerr(responder: DnsResponder) -> None:
    header = struct.pack("!HHHHHH", 0x1234, 0x0100, 0, 0, 0, 0)
    wire, _ = responder.respond(header)
    assert wire is not None
    assert dns.message.from_wire(wire).rcode() == dns.rcode.FORMERR


def test_malformed_formerr_keeps_id(responder: DnsResponder) -> None:
    wire, event = responder.respond(b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07truncat")
    assert wire is not None
    assert wire[:2] == b"\xab\xcd"
    response = dns.message.from_wire(wire)
    assert response.rcode() == dns.rcode.FORMERR
    assert response.flags & dns.flags.QR
    assert response.flags & dns.flags.RD
    assert event is not None
    assert event.verdict == "invalid"


def test_malformed_three_bytes_formerr(responder: DnsResponder) -> None:
    wire, _ = responder.respond(b"\x00\x07\x01")
    assert wire is not None
    assert dns.message.from_wire(wire).id == 7
    assert dns.message.from_wire(wire).rcode() == dns.rcode.FORMERR


@pytest.mark.parametrize("data", [b"", b"\x01"])
def test_malformed_no_id_dropped(responder: DnsResponder, data: bytes) -> None:
    assert responder.respond(data) == (None, None)


def test_response_message_dropped(responder: DnsResponder) -> None:
    query = dns.message.make_query("github.com", "A")
    response = dns.message.make_response(query)
    assert responder.respond(response.to_wire()) == (None, None)


def test_update_opcode_notimp(responder: DnsResponder) -> None:
    header = struct.pack("!HHHHHH", 0x4242, 5 << 11, 0, 0, 0, 0)
    wire, event = responder.respond(header)
    assert wire is not None
    response = dns.message.from_wire(wire)
    assert response.rcode() == dns.rcode.NOTIMP
    assert response.opcode() == 5
    assert event is not None
    assert event.rcode == "NOTIMP"


def test_edns_query_answered(responder: DnsResponder) -> None:
    query = dns.message.make_query("github.com", "A", use_edns=0, payload=1232)
    wire, _ = responder.respond(query.to_wire())
    assert wire is not None
    assert answer_texts(dns.message.from_wire(wire)) == ["198.18.0.1"]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_raise(data: bytes) -> None:
    responder = DnsResponder(PolicyEngine(NetworkPolicy.public_only()), FakeAddressPool())
    wire, _ = responder.respond(data)
    if wire is not None:
        assert wire[:2] == data[:2]


def test_ttl_invalid() -> None:
    with pytest.raises(ValueError, match="invalid ttl -1"):
        DnsResponder(PolicyEngine(NetworkPolicy()), FakeAddressPool(), ttl=-1)


# ---------------------------------------------------------------------------
# DNS over TCP framing


def test_frame_tcp_prefix() -> None:
    assert frame_tcp(b"abc") == b"\x00\x03abc"


def test_frame_tcp_too_long() -> None:
    with pytest.raises(ValueError, match="exceeds the TCP maximum of 65535"):
        frame_tcp(b"x" * 65536)


def test_framer_split_every_byte() -> None:
    messages = [
        dns.message.make_query("github.com", "A").to_wire(),
        dns.message.make_query("pypi.test", "AAAA").to_wire(),
        b"",
    ]
    stream = b"".join(frame_tcp(message) for message in messages)
    for split in range(len(stream) + 1):
        framer = TcpDnsFramer()
        received = framer.feed(stream[:split]) + framer.feed(stream[split:])
        assert received == messages, f"split at byte {split}"
        assert framer.pending == 0


def test_framer_one_byte_at_a_time() -> None:
    message = dns.message.make_query("github.com", "A").to_wire()
    framer = TcpDnsFramer()
    received: list[bytes] = []
    for index in range(len(message) + 2):
        received += framer.feed(frame_tcp(message)[index : index + 1])
    assert received == [message]


def test_framer_pending_partial() -> None:
    framer = TcpDnsFramer()
    assert framer.feed(b"\x00\x05ab") == []
    assert framer.pending == 4


def test_framer_round_trip_responder(responder: DnsResponder) -> None:
    query = dns.message.make_query("github.com", "A")
    framer = TcpDnsFramer()
    (message,) = framer.feed(frame_tcp(query.to_wire()))
    wire, _ = responder.respond(message)
    assert wire is not None
    (reply,) = TcpDnsFramer().feed(frame_tcp(wire))
    assert answer_texts(dns.message.from_wire(reply)) == ["198.18.0.1"]
