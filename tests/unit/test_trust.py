from __future__ import annotations

import errno
import os
import shutil
import ssl
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sealbox.gateway.ca import CertificateAuthority
from sealbox.runtime.trust import CA_ENV_VARS, SANDBOX_BUNDLE, SANDBOX_CA_FILE, install_ca

DEBIAN_BUNDLE = "etc/ssl/certs/ca-certificates.crt"
FEDORA_BUNDLE = "etc/pki/tls/certs/ca-bundle.crt"
OWN_FILES = (
    "usr/local/share/ca-certificates/sealbox-demo.crt",
    "etc/pki/ca-trust/source/anchors/sealbox-demo.crt",
    SANDBOX_CA_FILE.lstrip("/"),
)


@pytest.fixture(scope="module")
def sandbox_ca() -> CertificateAuthority:
    return CertificateAuthority.generate("demo")


@pytest.fixture(scope="module")
def image_ca() -> CertificateAuthority:
    """A CA that stands for the roots already in the image's bundle."""
    return CertificateAuthority.generate("image roots")


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[Path]:
    """A directory holding ``root`` (the sandbox root filesystem) and ``outside``, removed afterwards."""
    base = tmp_path / "trust"
    (base / "root").mkdir(parents=True)
    (base / "outside").mkdir()
    yield base
    shutil.rmtree(base)


@pytest.fixture
def root(workspace: Path) -> Path:
    return workspace / "root"


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def clean_openssl_env() -> dict[str, str]:
    """The caller's environment without the CA variables that would widen trust."""
    return {key: value for key, value in os.environ.items() if key not in ("SSL_CERT_FILE", "SSL_CERT_DIR")}


def openssl_verify(bundle: Path, certificate: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["openssl", "verify", "-no-CApath", "-no-CAstore", "-CAfile", str(bundle), str(certificate)],
        capture_output=True,
        text=True,
        env=clean_openssl_env(),
        timeout=30,
        check=False,
    )


# Layouts


def test_debian_layout(root: Path, sandbox_ca: CertificateAuthority, image_ca: CertificateAuthority) -> None:
    write(root / DEBIAN_BUNDLE, image_ca.cert_pem)
    (root / "etc/ssl/cert.pem").symlink_to("certs/ca-certificates.crt")
    install_ca(root, sandbox_ca.cert_pem, name="demo")
    assert (root / DEBIAN_BUNDLE).read_bytes() == image_ca.cert_pem + sandbox_ca.cert_pem
    assert (root / "etc/ssl/cert.pem").is_symlink()
    assert os.readlink(root / "etc/ssl/cert.pem") == "certs/ca-certificates.crt"


def test_fedora_layout(root: Path, sandbox_ca: CertificateAuthority, image_ca: CertificateAuthority) -> None:
    write(root / FEDORA_BUNDLE, image_ca.cert_pem)
    install_ca(root, sandbox_ca.cert_pem, name="demo")
    assert (root / FEDORA_BUNDLE).read_bytes() == image_ca.cert_pem + sandbox_ca.cert_pem
    assert (root / SANDBOX_BUNDLE.lstrip("/")).read_bytes() == image_ca.cert_pem + sandbox_ca.cert_pem


def test_combined_bundle_from_first(root: Path, sandbox_ca: CertificateAuthority, image_ca: CertificateAuthority) -> None:
    write(root / DEBIAN_BUNDLE, image_ca.cert_pem)
    write(root / FEDORA_BUNDLE, b"# other roots\n")
    install_ca(root, sandbox_ca.cert_pem, name="demo")
    assert (root / SANDBOX_BUNDLE.lstrip("/")).read_bytes() == image_ca.cert_pem + sandbox_ca.cert_pem
    assert (root / FEDORA_BUNDLE).read_bytes() == b"# other roots\n" + sandbox_ca.cert_pem


def test_without_system_bundle(root: Path, sandbox_ca: CertificateAuthority) -> None:
    install_ca(root, sandbox_ca.cert_pem, name="demo")
    assert (root / SANDBOX_BUNDLE.lstrip("/")).read_bytes() == sandbox_ca.cert_pem
    assert not (root / DEBIAN_BUNDLE).exists()
    assert not (root / FEDORA_BUNDLE).exists()
    assert not (root / "etc/ssl/cert.pem").exists()


def test_own_files_and_modes(root: Path, sandbox_ca: CertificateAuthority) -> None:
    previous_umask = os.umask(0o077)
    try:
        install_ca(root, sandbox_ca.cert_pem, name="demo")
    finally:
        os.umask(previous_umask)
    for relative in (*OWN_FILES, SANDBOX_BUNDLE.lstrip("/")):
        path = root / relative
        assert path.read_bytes().endswith(sandbox_ca.cert_pem), relative
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, relative
    for relative in ("usr", "usr/local/share/ca-certificates", "etc/pki/ca-trust/source/anchors", "etc/sealbox"):
        assert stat.S_IMODE((root / relative).stat().st_mode) == 0o755, relative


def test_environment(root: Path, sandbox_ca: CertificateAuthority) -> None:
    environment = install_ca(root, sandbox_ca.cert_pem, name="demo")
    expected = {variable: "/etc/sealbox/ca-bundle.crt" for variable in CA_ENV_VARS}
    expected["NODE_EXTRA_CA_CERTS"] = "/etc/sealbox/ca.crt"
    assert environment == expected
    assert (root / "etc/sealbox/ca.crt").read_bytes() == sandbox_ca.cert_pem


def test_newline_guard(root: Path, sandbox_ca: CertificateAuthority, image_ca: CertificateAuthority) -> None:
    write(root / DEBIAN_BUNDLE, image_ca.cert_pem.rstrip(b"\n"))
    install_ca(root, sandbox_ca.cert_pem, name="demo")
    assert (root / DEBIAN_BUNDLE).read_bytes() == image_ca.cert_pem + sandbox_ca.cert_pem


def test_ca_without_trailing_newline(root: Path, sandbox_ca: CertificateAuthority) -> None:
    write(root / DEBIAN_BUNDLE, b"")
    install_ca(root, sandbox_ca.cert_pem.rstrip(b"\n"), name="demo")
    assert (root / DEBIAN_BUNDLE).read_bytes() == sandbox_ca.cert_pem


def test_bundle_mode_kept(root: Path, sandbox_ca: CertificateAuthority, image_ca: CertificateAuthority) -> None:
    write(root / DEBIAN_BUNDLE, image_ca.cert_pem)
    os.chmod(root / DEBIAN_BUNDLE, 0o444)
    install_ca(root, sandbox_ca.cert_pem, name="demo")
    assert stat.S_IMODE((root / DEBIAN_BUNDLE).stat().st_mode) == 0o444


def test_idempotent(root: Path, sandbox_ca: CertificateAuthority, image_ca: CertificateAuthority) -> None:
    write(root / DEBIAN_BUNDLE, image_ca.cert_pem)
    (root / "etc/ssl/cert.pem").symlink_to("certs/ca-certificates.crt")
    first = install_ca(root, sandbox_ca.cert_pem, name="demo")
    second = install_ca(root, sandbox_ca.cert_pem, name="demo")
    assert second == first
    assert (root / DEBIAN_BUNDLE).read_bytes().count(sandbox_ca.cert_pem) == 1
    assert (root / SANDBOX_BUNDLE.lstrip("/")).read_bytes() == image_ca.cert_pem + sandbox_ca.cert_pem
    assert sorted(path.name for path in (root / "etc/sealbox").iterdir()) == ["ca-bundle.crt", "ca.crt"]


# Symlinks and links that lead out of the root


def test_absolute_symlink_outside(workspace: Path, root: Path, sandbox_ca: CertificateAuthority) -> None:
    outside_bundle = workspace / "outside/ca-certificates.crt"
    outside_bundle.write_bytes(b"# host roots\n")
    (root / "etc/ssl/certs").mkdir(parents=True)
    (root / DEBIAN_BUNDLE).symlink_to(outside_bundle)
    install_ca(root, sandbox_ca.cert_pem, name="demo")
    assert outside_bundle.read_bytes() == b"# host roots\n"
    assert (root / SANDBOX_BUNDLE.lstrip("/")).read_bytes() == sandbox_ca.cert_pem


def test_absolute_symlink_resolved_in_root(
    workspace: Path, root: Path, sandbox_ca: CertificateAuthority, image_ca: CertificateAuthority
) -> None:
    outside_bundle = workspace / "outside/ca-certificates.crt"
    outside_bundle.write_bytes(b"# host roots\n")
    in_root_counterpart = root / str(outside_bundle).lstrip("/")
    write(in_root_counterpart, image_ca.cert_pem)
    (root / "etc/ssl/certs").mkdir(parents=True)
    (root / DEBIAN_BUNDLE).symlink_to(outside_bundle)
    install_ca(root, sandbox_ca.cert_pem, name="demo")
    assert outside_bundle.read_bytes() == b"# host roots\n"
    assert in_root_counterpart.read_bytes() == image_ca.cert_pem + sandbox_ca.cert_pem


def test_symlinked_directory_outside(workspace: Path, root: Path, sandbox_ca: CertificateAuthority) -> None:
    outside = workspace / "outside"
    (root / "etc").mkdir()
    (root / "etc/pki").symlink_to(outside)
    install_ca(root, sandbox_ca.cert_pem, name="demo")
    assert list(outside.iterdir()) == []
    anchor = root / str(outside).lstrip("/") / "ca-trust/source/anchors/sealbox-demo.crt"
    assert anchor.read_bytes() == sandbox_ca.cert_pem


def test_dotdot_symlink_clamped(workspace: Path, root: Path, sandbox_ca: CertificateAuthority) -> None:
    (root / "usr/local/share").mkdir(parents=True)
    (root / "usr/local/share/ca-certificates").symlink_to("../../../../../../../../outside")
    install_ca(root, sandbox_ca.cert_pem, name="demo")
    assert list((workspace / "outside").iterdir()) == []
    assert (root / "outside/sealbox-demo.crt").read_bytes() == sandbox_ca.cert_pem


def test_hard_link_not_modified(workspace: Path, root: Path, sandbox_ca: CertificateAuthority) -> None:
    image_file = workspace / "outside/ca-certificates.crt"
    image_file.write_bytes(b"# image layer roots\n")
    (root / "etc/ssl/certs").mkdir(parents=True)
    os.link(image_file, root / DEBIAN_BUNDLE)
    install_ca(root, sandbox_ca.cert_pem, name="demo")
    assert image_file.read_bytes() == b"# image layer roots\n"
    assert (root / DEBIAN_BUNDLE).read_bytes() == b"# image layer roots\n" + sandbox_ca.cert_pem


def test_own_file_symlink_replaced(root: Path, sandbox_ca: CertificateAuthority) -> None:
    write(root / "etc/passwd", b"root:x:0:0::/root:/bin/sh\n")
    (root / "etc/sealbox").mkdir()
    (root / "etc/sealbox/ca.crt").symlink_to("/etc/passwd")
    install_ca(root, sandbox_ca.cert_pem, name="demo")
    assert (root / "etc/passwd").read_bytes() == b"root:x:0:0::/root:/bin/sh\n"
    assert not (root / "etc/sealbox/ca.crt").is_symlink()
    assert (root / "etc/sealbox/ca.crt").read_bytes() == sandbox_ca.cert_pem


def test_symlink_loop(root: Path, sandbox_ca: CertificateAuthority) -> None:
    (root / "etc/ssl/certs").mkdir(parents=True)
    (root / DEBIAN_BUNDLE).symlink_to("ca-certificates.crt")
    with pytest.raises(OSError) as caught:
        install_ca(root, sandbox_ca.cert_pem, name="demo")
    assert caught.value.errno == errno.ELOOP


def test_directory_where_bundle_expected(root: Path, sandbox_ca: CertificateAuthority) -> None:
    (root / DEBIAN_BUNDLE).mkdir(parents=True)
    install_ca(root, sandbox_ca.cert_pem, name="demo")
    assert (root / DEBIAN_BUNDLE).is_dir()


# Input checks


def test_invalid_pem(root: Path) -> None:
    with pytest.raises(ValueError, match="PEM certificate"):
        install_ca(root, b"not a certificate", name="demo")


@pytest.mark.parametrize("name", ["", ".hidden", "a/b", "../x", "spa ce"])
def test_invalid_name(root: Path, sandbox_ca: CertificateAuthority, name: str) -> None:
    with pytest.raises(ValueError, match="invalid name"):
        install_ca(root, sandbox_ca.cert_pem, name=name)


# Verification with the combined bundle


def test_openssl_verifies_leaf(
    workspace: Path, root: Path, sandbox_ca: CertificateAuthority, image_ca: CertificateAuthority
) -> None:
    write(root / DEBIAN_BUNDLE, image_ca.cert_pem)
    install_ca(root, sandbox_ca.cert_pem, name="demo")
    bundle = root / SANDBOX_BUNDLE.lstrip("/")
    leaf_file = workspace / "leaf.pem"
    image_leaf_file = workspace / "image-leaf.pem"
    leaf_file.write_bytes(sandbox_ca.issue_leaf("github.com").cert_pem)
    image_leaf_file.write_bytes(image_ca.issue_leaf("example.org").cert_pem)
    result = openssl_verify(bundle, leaf_file)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{leaf_file}: OK"
    image_result = openssl_verify(bundle, image_leaf_file)
    assert image_result.returncode == 0, image_result.stderr


def test_openssl_rejects_without_ca(workspace: Path, image_ca: CertificateAuthority) -> None:
    other = CertificateAuthority.generate("other")
    bundle = workspace / "image-only.crt"
    bundle.write_bytes(image_ca.cert_pem)
    leaf_file = workspace / "leaf.pem"
    leaf_file.write_bytes(other.issue_leaf("github.com").cert_pem)
    result = openssl_verify(bundle, leaf_file)
    assert result.returncode == 2
    assert "unable to get local issuer certificate" in result.stderr + result.stdout


def test_python_ssl_loads_bundle(root: Path, sandbox_ca: CertificateAuthority, image_ca: CertificateAuthority) -> None:
    write(root / DEBIAN_BUNDLE, image_ca.cert_pem)
    install_ca(root, sandbox_ca.cert_pem, name="demo")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=str(root / SANDBOX_BUNDLE.lstrip("/")))
    assert context.cert_store_stats()["x509_ca"] == 2
