"""Certificate authorities for the test world (EC P-256, via cryptography).

A CA lives in a directory as ``ca.pem`` and ``ca-key.pem``. Creating a CA in
a directory that already contains both files loads them, so a world restarted
in the same directory keeps the CA that a human may have installed.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_VALIDITY = datetime.timedelta(days=3650)
LEAF_VALIDITY = datetime.timedelta(days=365)
# Clients whose clock runs a little behind still accept a fresh certificate.
BACKDATE = datetime.timedelta(days=1)


def _write_private(path: Path, data: bytes) -> None:
    """Write a private key file readable only by its owner."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _subject_alternative_names(names: Sequence[str]) -> list[x509.GeneralName]:
    """Build SAN entries: IP literals become IP SANs, everything else DNS SANs."""
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return entries


class TestCA:
    """A certificate authority that issues server certificates for test servers."""

    __test__ = False  # not a pytest test class despite the name

    def __init__(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, cert_path: Path) -> None:
        self.cert = cert
        self.key = key
        self.cert_path = cert_path
        self.cert_pem: bytes = cert.public_bytes(serialization.Encoding.PEM)

    @classmethod
    def create(cls, directory: Path, common_name: str) -> TestCA:
        """Load the CA stored in directory, or create and store a new one there."""
        directory.mkdir(parents=True, exist_ok=True)
        cert_path = directory / "ca.pem"
        key_path = directory / "ca-key.pem"
        if cert_path.exists() and key_path.exists():
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise ValueError(f"invalid CA key {key_path}: expected an EC private key")
            return cls(cert, key, cert_path)

        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = datetime.datetime.now(datetime.timezone.utc)
        public_key = key.public_key()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + CA_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
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
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .sign(key, hashes.SHA256())
        )
        _write_private(key_path, _key_pem(key))
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cls(cert, key, cert_path)

    def issue(self, names: Sequence[str], *, directory: Path, stem: str | None = None) -> tuple[Path, Path]:
        """Issue a server certificate for names and return (chain path, key path).

        The chain file contains only the leaf: this CA is a root that clients must
        trust on their own, and a server that sent the root along would change
        the error a client reports for an untrusted CA. The first name becomes
        the subject common name. Files are named after stem, which defaults to
        the first name.
        """
        if not names:
            raise ValueError("invalid certificate names []: expected at least one DNS name or IP address")
        directory.mkdir(parents=True, exist_ok=True)
        stem = stem or re.sub(r"[^A-Za-z0-9.-]", "_", names[0])
        chain_path = directory / f"{stem}.pem"
        key_path = directory / f"{stem}-key.pem"

        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        ca_ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + LEAF_VALIDITY)
            .add_extension(x509.SubjectAlternativeName(_subject_alternative_names(names)), critical=False)
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
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        _write_private(key_path, _key_pem(key))
        chain_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return chain_path, key_path
