from __future__ import annotations

import ipaddress
import os
import ssl
import time
from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sealbox.gateway.ca import CertificateAuthority, LeafCache, server_context
from sealbox.spec.secret import HostPattern

NOW = datetime(2030, 1, 15, 12, 0, tzinfo=timezone.utc)


def patterns(*texts: str) -> list[HostPattern]:
    return [HostPattern.parse(text) for text in texts]


def client_context(ca: CertificateAuthority, alpn: list[str] | None = None) -> ssl.SSLContext:
    """A client context that trusts only ``ca``, not the host's store or CA variables."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cadata=ca.cert_pem.decode())
    if alpn:
        context.set_alpn_protocols(alpn)
    return context


def handshake(server: ssl.SSLContext, client: ssl.SSLContext, server_hostname: str) -> ssl.SSLObject:
    """Run a TLS handshake over memory BIOs and return the client's SSLObject.

    Raises the client's ssl.SSLError when verification fails.
    """
    client_in, client_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    server_in, server_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    client_side = client.wrap_bio(client_in, client_out, server_hostname=server_hostname)
    server_side = server.wrap_bio(server_in, server_out, server_side=True)
    client_done = server_done = False
    for _ in range(20):
        if not client_done:
            try:
                client_side.do_handshake()
                client_done = True
            except ssl.SSLWantReadError:
                pass
        server_in.write(client_out.read())
        if not server_done:
            try:
                server_side.do_handshake()
                server_done = True
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError:
                # The client's alert explains the failure; surface it on the client side.
                server_done = True
        client_in.write(server_out.read())
        if client_done and server_done:
            return client_side
    raise AssertionError("TLS handshake did not finish in 20 rounds")


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.generate("demo", permitted_hosts=patterns("github.com", "*.example.com", "127.0.0.1"))


@pytest.fixture(scope="module")
def open_ca() -> CertificateAuthority:
    return CertificateAuthority.generate("open")


# The CA certificate


def test_ca_subject(ca: CertificateAuthority) -> None:
    names = ca.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert [name.value for name in names] == ["sealbox sandbox CA demo"]


def test_ca_long_name_truncated() -> None:
    authority = CertificateAuthority.generate("x" * 100)
    common_name = authority.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert common_name == "sealbox sandbox CA " + "x" * 45


def test_ca_basic_constraints(ca: CertificateAuthority) -> None:
    extension = ca.certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    assert extension.critical is True
    assert extension.value.ca is True
    assert extension.value.path_length == 0


def test_ca_key_usage(ca: CertificateAuthority) -> None:
    extension = ca.certificate.extensions.get_extension_for_class(x509.KeyUsage)
    assert extension.critical is True
    assert extension.value.key_cert_sign is True
    assert extension.value.crl_sign is True
    assert extension.value.digital_signature is False


def test_ca_subject_key_identifier(ca: CertificateAuthority) -> None:
    extension = ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    expected = x509.SubjectKeyIdentifier.from_public_key(ca.certificate.public_key())
    assert extension.value == expected


def test_ca_key_is_p256(ca: CertificateAuthority) -> None:
    key = ca.certificate.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert key.curve.name == "secp256r1"


def test_ca_generation_fast() -> None:
    start = time.perf_counter()
    for _ in range(20):
        CertificateAuthority.generate("speed")
    # About 0.15 ms each on the 2-core development VM; the bound leaves room for slow CI.
    assert (time.perf_counter() - start) / 20 < 0.05


def test_ca_name_constraints(ca: CertificateAuthority) -> None:
    extension = ca.certificate.extensions.get_extension_for_class(x509.NameConstraints)
    assert extension.critical is True
    assert extension.value.permitted_subtrees == [
        x509.DNSName("github.com"),
        x509.DNSName("example.com"),
        x509.IPAddress(ipaddress.ip_network("127.0.0.1/32")),
    ]
    assert extension.value.excluded_subtrees is None


def test_ca_name_constraints_exclude_ip() -> None:
    authority = CertificateAuthority.generate("dns-only", permitted_hosts=patterns("github.com:443"))
    extension = authority.certificate.extensions.get_extension_for_class(x509.NameConstraints)
    assert extension.value.permitted_subtrees == [x509.DNSName("github.com")]
    assert extension.value.excluded_subtrees == [
        x509.IPAddress(ipaddress.ip_network("0.0.0.0/0")),
        x509.IPAddress(ipaddress.ip_network("::/0")),
    ]


def test_ca_without_constraints(open_ca: CertificateAuthority) -> None:
    with pytest.raises(x509.ExtensionNotFound):
        open_ca.certificate.extensions.get_extension_for_class(x509.NameConstraints)


def test_ca_pem_has_no_key(ca: CertificateAuthority) -> None:
    assert b"PRIVATE KEY" not in ca.cert_pem
    assert "PRIVATE" not in repr(ca)


# Leaves


def test_leaf_fields(ca: CertificateAuthority) -> None:
    leaf = ca.issue_leaf("GitHub.com", now=NOW)
    certificate = x509.load_pem_x509_certificate(leaf.cert_pem)
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["github.com"]
    eku = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    key_usage = certificate.extensions.get_extension_for_class(x509.KeyUsage)
    assert key_usage.critical is True
    assert key_usage.value.digital_signature is True
    aki = certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert certificate.issuer == ca.certificate.subject


def test_leaf_validity(ca: CertificateAuthority) -> None:
    leaf = ca.issue_leaf("github.com", now=NOW, lifetime=timedelta(days=3), backdate=timedelta(minutes=30))
    certificate = x509.load_pem_x509_certificate(leaf.cert_pem)
    assert leaf.not_before == NOW - timedelta(minutes=30)
    assert leaf.not_after == leaf.not_before + timedelta(days=3)
    assert certificate.not_valid_before_utc == leaf.not_before
    assert certificate.not_valid_after_utc == leaf.not_after


def test_leaf_clamped_to_ca_expiry() -> None:
    authority = CertificateAuthority.generate("short", valid_days=1)
    leaf = authority.issue_leaf("github.com", lifetime=timedelta(days=7))
    assert leaf.not_after == authority.certificate.not_valid_after_utc


def test_leaf_ip_address(ca: CertificateAuthority) -> None:
    leaf = ca.issue_leaf("127.0.0.1", now=NOW)
    certificate = x509.load_pem_x509_certificate(leaf.cert_pem)
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert san.critical is True


@pytest.mark.parametrize("hostname", ["", "bad_name.test", "a..b", "*.github.com", "-x.test"])
def test_leaf_invalid_hostname(ca: CertificateAuthority, hostname: str) -> None:
    with pytest.raises(ValueError, match="invalid server name"):
        ca.issue_leaf(hostname)


def test_leaf_naive_now_rejected(ca: CertificateAuthority) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        ca.issue_leaf("github.com", now=datetime(2030, 1, 1))


def test_leaf_repr_hides_key(ca: CertificateAuthority) -> None:
    leaf = ca.issue_leaf("github.com")
    assert "PRIVATE" not in repr(leaf)


# TLS handshakes verified by OpenSSL through the ssl module


def test_handshake_verifies(ca: CertificateAuthority) -> None:
    server = server_context(ca.issue_leaf("github.com"))
    connection = handshake(server, client_context(ca), "github.com")
    assert connection.version() in ("TLSv1.2", "TLSv1.3")


def test_handshake_subdomain_in_subtree(ca: CertificateAuthority) -> None:
    server = server_context(ca.issue_leaf("a.b.example.com"))
    assert handshake(server, client_context(ca), "a.b.example.com").version() is not None


def test_handshake_ip_leaf(ca: CertificateAuthority) -> None:
    server = server_context(ca.issue_leaf("127.0.0.1"))
    assert handshake(server, client_context(ca), "127.0.0.1").version() is not None


def test_handshake_wrong_hostname(ca: CertificateAuthority) -> None:
    server = server_context(ca.issue_leaf("github.com"))
    with pytest.raises(ssl.SSLCertVerificationError) as caught:
        handshake(server, client_context(ca), "gitlab.com")
    assert "Hostname mismatch" in caught.value.verify_message


def test_handshake_name_constraint_rejects(ca: CertificateAuthority) -> None:
    server = server_context(ca.issue_leaf("evil.test"))
    with pytest.raises(ssl.SSLCertVerificationError) as caught:
        handshake(server, client_context(ca), "evil.test")
    assert caught.value.verify_message == "permitted subtree violation"


def test_handshake_name_constraint_rejects_ip() -> None:
    authority = CertificateAuthority.generate("dns-only", permitted_hosts=patterns("github.com"))
    server = server_context(authority.issue_leaf("127.0.0.1"))
    with pytest.raises(ssl.SSLCertVerificationError) as caught:
        handshake(server, client_context(authority), "127.0.0.1")
    assert caught.value.verify_message == "excluded subtree violation"


def test_handshake_unconstrained_ca(open_ca: CertificateAuthority) -> None:
    server = server_context(open_ca.issue_leaf("evil.test"))
    assert handshake(server, client_context(open_ca), "evil.test").version() is not None


def test_handshake_untrusted_ca(ca: CertificateAuthority, open_ca: CertificateAuthority) -> None:
    server = server_context(open_ca.issue_leaf("github.com"))
    with pytest.raises(ssl.SSLCertVerificationError) as caught:
        handshake(server, client_context(ca), "github.com")
    assert "unable to get local issuer certificate" in caught.value.verify_message


def test_handshake_alpn(ca: CertificateAuthority) -> None:
    server = LeafCache(ca).server_context("github.com", ["h2", "http/1.1"])
    connection = handshake(server, client_context(ca, ["h2", "http/1.1"]), "github.com")
    assert connection.selected_alpn_protocol() == "h2"


def test_server_context_minimum_tls12(ca: CertificateAuthority) -> None:
    assert server_context(ca.issue_leaf("github.com")).minimum_version == ssl.TLSVersion.TLSv1_2


def test_server_context_closes_memfd(ca: CertificateAuthority) -> None:
    leaf = ca.issue_leaf("github.com")
    before = set(os.listdir("/proc/self/fd"))
    server_context(leaf)
    assert set(os.listdir("/proc/self/fd")) - before == set()


# LeafCache


def test_cache_reuses_context(ca: CertificateAuthority) -> None:
    cache = LeafCache(ca)
    first = cache.server_context("github.com", ["http/1.1"], now=NOW)
    second = cache.server_context("GITHUB.COM.", ["http/1.1"], now=NOW + timedelta(days=5))
    assert second is first


def test_cache_separate_per_alpn(ca: CertificateAuthority) -> None:
    cache = LeafCache(ca)
    first = cache.server_context("github.com", ["h2", "http/1.1"], now=NOW)
    second = cache.server_context("github.com", ["http/1.1"], now=NOW)
    assert second is not first


def test_cache_renews_before_expiry(ca: CertificateAuthority) -> None:
    cache = LeafCache(ca, lifetime=timedelta(days=7), renew_before=timedelta(days=1), backdate=timedelta(hours=1))
    first = cache.server_context("github.com", [], now=NOW)
    old_leaf = cache.leaf("github.com", [])
    assert old_leaf is not None
    # The leaf expires at NOW - 1 h + 7 days, so renewal starts at NOW + 5 days 23 h.
    just_before = NOW + timedelta(days=5, hours=22, minutes=59)
    assert cache.server_context("github.com", [], now=just_before) is first
    renewed = cache.server_context("github.com", [], now=NOW + timedelta(days=5, hours=23))
    assert renewed is not first
    new_leaf = cache.leaf("github.com", [])
    assert new_leaf is not None
    assert new_leaf.not_before == NOW + timedelta(days=5, hours=22)


def test_cache_evicts_least_recent(ca: CertificateAuthority) -> None:
    cache = LeafCache(ca, max_entries=2)
    first = cache.server_context("a.example.com", [], now=NOW)
    cache.server_context("b.example.com", [], now=NOW)
    assert cache.server_context("a.example.com", [], now=NOW) is first
    cache.server_context("c.example.com", [], now=NOW)
    assert cache.leaf("b.example.com", []) is None
    assert cache.leaf("a.example.com", []) is not None


def test_cache_rejects_renew_longer_than_lifetime(ca: CertificateAuthority) -> None:
    with pytest.raises(ValueError, match="renew_before"):
        LeafCache(ca, lifetime=timedelta(days=1), renew_before=timedelta(days=1))
