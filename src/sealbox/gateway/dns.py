"""DNS responder of the gateway: policy by name, fake addresses as answers.

Sans-IO: DnsResponder.respond() takes one DNS message in wire format and
returns the response in wire format plus an audit event. The UDP and TCP
servers around it only move bytes. dnspython parses and builds the messages.

Behaviour:

- A message that cannot be parsed gets a header-only FORMERR response when its
  ID can be read (2 bytes or more), and no response otherwise. Responses
  (QR set) are dropped. Opcodes other than QUERY get NOTIMP, classes other
  than IN get NOTIMP, and more or fewer than one question get FORMERR.
- Names are case-insensitive, and the response echoes the question as received.
- The root name, and a name with a label that is not made of letters,
  digits, '-' and '_', get REFUSED.
- localhost and *.localhost resolve to 127.0.0.1 and ::1 without a policy
  check (RFC 6761, section 6.3). Inside the sandbox those are its own
  loopback addresses.
- A name that PolicyEngine.check_name() denies gets REFUSED, for every type.
- A and AAAA for an allowed name get one fake address of that family from
  the FakeAddressPool, which maps back to the name when the sandbox connects.
  For an add_hosts name the answer is its literal address in the matching
  family, and NODATA (NOERROR with no answer) in the other family.
- PTR for a fake address or an add_hosts address returns its name, from local
  data only and without a policy check. Other reverse names get NXDOMAIN.
- Every other type for an allowed name, HTTPS (65) and SVCB (64) included,
  gets NODATA. Clients then fall back to A and AAAA, and no upstream
  address hint or encrypted ClientHello key reaches the sandbox.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.reversename
import dns.rrset

from sealbox.gateway.addresses import IPAddress
from sealbox.gateway.fakeip import FakeAddressPool
from sealbox.gateway.policy import PolicyEngine

__all__ = ["DnsEvent", "DnsResponder", "TcpDnsFramer", "frame_tcp"]

logger = logging.getLogger(__name__)

DEFAULT_TTL = 5
MAX_MESSAGE_SIZE = 65535

_HEADER = struct.Struct("!HHHHHH")
_QUERY_LABEL = re.compile(rb"[A-Za-z0-9_-]{1,63}\Z")
_IN_ADDR_ARPA = dns.name.from_text("in-addr.arpa.")
_IP6_ARPA = dns.name.from_text("ip6.arpa.")


@dataclass(frozen=True)
class DnsEvent:
    """Audit record of one DNS query.

    verdict is "allow", "deny" (refused by policy) or "invalid" (malformed or
    unsupported query). rcode is the response code's name, such as NOERROR.
    """

    name: str
    qtype: str
    answer: tuple[str, ...]
    verdict: str
    rcode: str
    reason: str = ""


class DnsResponder:
    """Answer DNS queries from the sandbox according to the policy, with fake addresses."""

    def __init__(
        self,
        engine: PolicyEngine,
        pool: FakeAddressPool,
        *,
        add_hosts: Mapping[str, str] = {},
        ttl: int = DEFAULT_TTL,
    ) -> None:
        if not 0 <= ttl <= 0x7FFFFFFF:
            raise ValueError(f"invalid ttl {ttl!r}: expected 0 to 2147483647 seconds")
        self.engine = engine
        self.pool = pool
        self.ttl = ttl
        self._add_hosts: dict[str, IPAddress] = {}
        self._reverse_hosts: dict[IPAddress, str] = {}
        for name, text in add_hosts.items():
            key = _normalize_name(name)
            address = ipaddress.ip_address(text)
            self._add_hosts[key] = address
            self._reverse_hosts.setdefault(address, key)

    def respond(self, query: bytes) -> tuple[bytes | None, DnsEvent | None]:
        """Return the wire response to one wire query (None to drop it) and its audit event."""
        if len(query) < 2:
            logger.debug("dropped a %d-byte DNS message without an ID", len(query))
            return None, None
        flags = struct.unpack("!H", query[2:4])[0] if len(query) >= 4 else 0
        if flags & dns.flags.QR:
            logger.debug("dropped a DNS response sent to the responder")
            return None, None
        opcode = dns.opcode.from_flags(flags)
        if opcode != dns.opcode.QUERY:
            return self._header_only(query, dns.rcode.NOTIMP, f"opcode {dns.opcode.to_text(opcode)} is not supported")

        try:
            message = dns.message.from_wire(query, question_only=True)
        except (dns.exception.DNSException, ValueError) as error:
            logger.debug("malformed DNS query (%s): %r", error, query[:64])
            return self._header_only(query, dns.rcode.FORMERR, f"malformed query: {error}")
        if len(message.question) != 1:
            return self._header_only(
                query, dns.rcode.FORMERR, f"expected one question, got {len(message.question)}"
            )
        return self._answer(message)

    def _answer(self, query: dns.message.Message) -> tuple[bytes, DnsEvent]:
        question = query.question[0]
        qtype = dns.rdatatype.to_text(question.rdtype)
        response = dns.message.make_response(query, recursion_available=True)

        if question.rdclass != dns.rdataclass.IN:
            reason = f"class {dns.rdataclass.to_text(question.rdclass)} is not supported"
            return self._finish(response, "", qtype, "invalid", dns.rcode.NOTIMP, reason)

        name = _query_name(question.name)
        if name is None:
            text = question.name.to_text()[:80]
            return self._finish(response, text, qtype, "invalid", dns.rcode.REFUSED, "not a host name")

        if question.rdtype == dns.rdatatype.PTR and _is_reverse_name(question.name):
            return self._answer_reverse(response, question.name, name)

        if name == "localhost" or name.endswith(".localhost"):
            loopback = {dns.rdatatype.A: IPv4Address("127.0.0.1"), dns.rdatatype.AAAA: IPv6Address("::1")}
            return self._finish_address(
                response, question.name, name, qtype, loopback.get(question.rdtype), "localhost is the sandbox itself"
            )

        verdict = self.engine.check_name(name)
        if not verdict.allowed:
            return self._finish(response, name, qtype, "deny", dns.rcode.REFUSED, verdict.reason)

        address: IPAddress | None = None
        if name in self._add_hosts:
            literal = self._add_hosts[name]
            wanted = IPv4Address if question.rdtype == dns.rdatatype.A else IPv6Address
            if question.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA) and isinstance(literal, wanted):
                address = literal
        elif question.rdtype == dns.rdatatype.A:
            address = self.pool.address_for(name, 4)
        elif question.rdtype == dns.rdatatype.AAAA:
            address = self.pool.address_for(name, 6)
        return self._finish_address(response, question.name, name, qtype, address, verdict.reason)

    def _answer_reverse(
        self, response: dns.message.Message, qname: dns.name.Name, name: str
    ) -> tuple[bytes, DnsEvent]:
        try:
            address: IPAddress | None = ipaddress.ip_address(dns.reversename.to_address(qname))
        except (dns.exception.DNSException, ValueError):
            address = None
        target = None
        if address is not None:
            target = self._reverse_hosts.get(address)
            if target is None and self.pool.contains(address):
                target = self.pool.name_for(address)
        if target is None:
            return self._finish(response, name, "PTR", "allow", dns.rcode.NXDOMAIN, "no local name for this address")
        rrset = dns.rrset.from_text(qname, self.ttl, "IN", "PTR", target + ".")
        response.answer.append(rrset)
        return self._finish(response, name, "PTR", "allow", dns.rcode.NOERROR, "local name", (target,))

    def _finish_address(
        self,
        response: dns.message.Message,
        qname: dns.name.Name,
        name: str,
        qtype: str,
        address: IPAddress | None,
        reason: str,
    ) -> tuple[bytes, DnsEvent]:
        """Add one A or AAAA record for `address`, or none (NODATA) when it is None."""
        answer: tuple[str, ...] = ()
        if address is not None:
            rdtype = "A" if isinstance(address, IPv4Address) else "AAAA"
            response.answer.append(dns.rrset.from_text(qname, self.ttl, "IN", rdtype, str(address)))
            answer = (str(address),)
        return self._finish(response, name, qtype, "allow", dns.rcode.NOERROR, reason, answer)

    def _finish(
        self,
        response: dns.message.Message,
        name: str,
        qtype: str,
        verdict: str,
        rcode: dns.rcode.Rcode,
        reason: str,
        answer: tuple[str, ...] = (),
    ) -> tuple[bytes, DnsEvent]:
        response.set_rcode(rcode)
        event = DnsEvent(name, qtype, answer, verdict, dns.rcode.to_text(rcode), reason)
        return response.to_wire(), event

    def _header_only(self, query: bytes, rcode: dns.rcode.Rcode, reason: str) -> tuple[bytes, DnsEvent]:
        """Build a response with the query's ID, opcode and RD bit, the rcode and no sections."""
        query_id = struct.unpack("!H", query[:2])[0]
        query_flags = struct.unpack("!H", query[2:4])[0] if len(query) >= 4 else 0
        flags = dns.flags.QR | dns.flags.RA | (query_flags & (0x7800 | dns.flags.RD)) | int(rcode)
        event = DnsEvent("", "", (), "invalid", dns.rcode.to_text(rcode), reason)
        return _HEADER.pack(query_id, flags, 0, 0, 0, 0), event


def _normalize_name(name: str) -> str:
    key = name.lower()
    return key[:-1] if key.endswith(".") else key


def _query_name(qname: dns.name.Name) -> str | None:
    """Return the lower-case name without trailing dot, or None unless every label is LDH or '_'."""
    labels = qname.labels[:-1] if qname.is_absolute() else qname.labels
    if not labels:
        return None
    if not all(_QUERY_LABEL.match(label) for label in labels):
        return None
    return b".".join(labels).decode("ascii").lower()


def _is_reverse_name(qname: dns.name.Name) -> bool:
    return qname.is_subdomain(_IN_ADDR_ARPA) or qname.is_subdomain(_IP6_ARPA)


def frame_tcp(message: bytes) -> bytes:
    """Prefix a DNS message with its 2-byte length for DNS over TCP (RFC 1035, section 4.2.2)."""
    if len(message) > MAX_MESSAGE_SIZE:
        raise ValueError(f"DNS message of {len(message)} bytes exceeds the TCP maximum of {MAX_MESSAGE_SIZE}")
    return struct.pack("!H", len(message)) + message


class TcpDnsFramer:
    """Split a DNS-over-TCP byte stream into messages (2-byte big-endian length prefix)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes and return every message completed by them, in order."""
        self._buffer += data
        messages: list[bytes] = []
        while len(self._buffer) >= 2:
            length = (self._buffer[0] << 8) | self._buffer[1]
            if len(self._buffer) < 2 + length:
                break
            messages.append(bytes(self._buffer[2 : 2 + length]))
            del self._buffer[: 2 + length]
        return messages

    @property
    def pending(self) -> int:
        """Number of buffered bytes of an incomplete message. A nonzero value at EOF means a truncated stream."""
        return len(self._buffer)
