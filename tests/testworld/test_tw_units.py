"""Unit tests of the test world's pattern, CA, routes, trace parser and wheel."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import zipfile
from pathlib import Path

import pytest
from cryptography import x509

from sealbox.testworld import TestCA, parse_curl_trace, pattern_bytes, pattern_sha256
from sealbox.testworld.app import RequestHandler
from sealbox.testworld.pattern import PATTERN_BLOCK_SIZE, pattern_block
from sealbox.testworld.pypi import build_index, build_probe_wheel


@pytest.mark.parametrize("n", [0, 1, 1000, PATTERN_BLOCK_SIZE - 1, PATTERN_BLOCK_SIZE, 3 * PATTERN_BLOCK_SIZE + 17])
def test_pattern_sha256_matches_bytes(n: int) -> None:
    assert pattern_sha256(n) == hashlib.sha256(pattern_bytes(n)).hexdigest()


def test_pattern_repeats_block() -> None:
    data = pattern_bytes(2 * PATTERN_BLOCK_SIZE + 5)
    assert data[PATTERN_BLOCK_SIZE : 2 * PATTERN_BLOCK_SIZE] == pattern_block()
    assert data[-5:] == pattern_block()[:5]


def test_pattern_first_bytes_fixed() -> None:
    # Clients compute the pattern on their own, so its definition must never change.
    assert pattern_bytes(8).hex() == hashlib.shake_256(b"sealbox testworld pattern v1").digest(8).hex()


def test_pattern_negative_length() -> None:
    with pytest.raises(ValueError, match="invalid pattern length -1"):
        pattern_bytes(-1)


def test_ca_issue_sans(tmp_path: Path) -> None:
    ca = TestCA.create(tmp_path / "ca", "test CA")
    chain, _key = ca.issue(["example.test", "127.0.0.1"], directory=tmp_path / "certs")
    leaf = x509.load_pem_x509_certificates(chain.read_bytes())[0]
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["example.test"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]


def test_ca_chain_only_leaf(tmp_path: Path) -> None:
    ca = TestCA.create(tmp_path / "ca", "test CA")
    chain, _key = ca.issue(["example.test"], directory=tmp_path / "certs")
    certificates = x509.load_pem_x509_certificates(chain.read_bytes())
    assert len(certificates) == 1
    assert certificates[0].issuer == ca.cert.subject


def test_ca_leaf_verifies(tmp_path: Path) -> None:
    ca = TestCA.create(tmp_path / "ca", "test CA")
    chain, _key = ca.issue(["example.test"], directory=tmp_path / "certs")
    leaf = x509.load_pem_x509_certificates(chain.read_bytes())[0]
    leaf.verify_directly_issued_by(ca.cert)


def test_ca_reloaded_from_directory(tmp_path: Path) -> None:
    first = TestCA.create(tmp_path / "ca", "test CA")
    second = TestCA.create(tmp_path / "ca", "test CA")
    assert second.cert_pem == first.cert_pem


def test_ca_key_private(tmp_path: Path) -> None:
    ca = TestCA.create(tmp_path / "ca", "test CA")
    _chain, key = ca.issue(["example.test"], directory=tmp_path / "certs")
    assert (tmp_path / "ca" / "ca-key.pem").stat().st_mode & 0o777 == 0o600
    assert key.stat().st_mode & 0o777 == 0o600


def test_ca_issue_without_names(tmp_path: Path) -> None:
    ca = TestCA.create(tmp_path / "ca", "test CA")
    with pytest.raises(ValueError, match="expected at least one"):
        ca.issue([], directory=tmp_path)


def finish(method: bytes, target: bytes, body: bytes = b"") -> tuple[int, bytes, dict[bytes, bytes]]:
    handler = RequestHandler(method, target, "HTTP/1.1", ((b"Host", b"a"),))
    handler.receive(body)
    response = handler.finish()
    return response.status, response.body, dict(response.headers)


def test_route_upload_digest() -> None:
    status, body, _headers = finish(b"POST", b"/upload", b"abc")
    assert status == 200
    assert json.loads(body) == {"length": 3, "sha256": hashlib.sha256(b"abc").hexdigest()}


def test_route_upload_get_rejected() -> None:
    status, _body, headers = finish(b"GET", b"/upload")
    assert status == 405
    assert headers[b"allow"] == b"POST, PUT"


def test_route_redirect_location() -> None:
    status, _body, headers = finish(b"GET", b"/redirect?to=https%3A%2F%2Fexample.test%2Fa%3Fb%3D1")
    assert status == 302
    assert headers[b"location"] == b"https://example.test/a?b=1"


def test_route_bytes_invalid_count() -> None:
    status, _body, _headers = finish(b"GET", b"/bytes/ten")
    assert status == 400


def test_route_echo_fields() -> None:
    _status, body, _headers = finish(b"PATCH", b"/echo?q=1", b"xy")
    echoed = json.loads(body)
    assert echoed["method"] == "PATCH"
    assert echoed["target"] == "/echo?q=1"
    assert echoed["headers"] == [["Host", "a"]]
    assert echoed["body_sha256"] == hashlib.sha256(b"xy").hexdigest()


def test_route_default_ok() -> None:
    status, body, _headers = finish(b"DELETE", b"/anything")
    assert status == 200
    assert body == b"ok"


TRACE = """\
20:24:03.263932 http.c:684              => Send header, 0000000156 bytes (0x0000009c)
20:24:03.263932 http.c:684              => Send header: POST /org/public.git/git-upload-pack HTTP/1.1
20:24:03.263937 http.c:684              => Send header: Host: 127.0.0.1:34253
20:24:03.263937 http.c:684              => Send header: Content-Encoding: gzip
20:24:03.263937 http.c:684              => Send header: Content-Length: 99444
20:24:03.263938 http.c:684              => Send header:
20:24:03.263938 http.c:684              <= Recv header: HTTP/1.1 200 OK
20:24:03.295363 http.c:684              => Send header: GET /a HTTP/1.1
20:24:03.295380 http.c:684              => Send header: Authorization: Basic <redacted>
20:24:03.295381 http.c:684              => Send header:
"""


def test_trace_requests_parsed() -> None:
    requests = parse_curl_trace(TRACE)
    assert [(request.method, request.target) for request in requests] == [
        ("POST", "/org/public.git/git-upload-pack"),
        ("GET", "/a"),
    ]


def test_trace_header_lookup() -> None:
    request = parse_curl_trace(TRACE)[0]
    assert request.header("content-encoding") == "gzip"
    assert request.header("Content-Length") == "99444"
    assert request.header("Transfer-Encoding") is None


def test_wheel_reproducible(tmp_path: Path) -> None:
    first = build_probe_wheel(tmp_path / "a").read_bytes()
    second = build_probe_wheel(tmp_path / "b").read_bytes()
    assert first == second


def test_wheel_record_lists_files(tmp_path: Path) -> None:
    with zipfile.ZipFile(build_probe_wheel(tmp_path)) as archive:
        record = archive.read("sealbox_probe-1.0.dist-info/RECORD").decode()
        names = sorted(archive.namelist())
    assert sorted(line.split(",")[0] for line in record.splitlines()) == names


def test_index_links_wheel_digest(tmp_path: Path) -> None:
    indexed = build_index(tmp_path)[0]
    page = (tmp_path / "simple" / "sealbox-probe" / "index.html").read_text()
    digest = hashlib.sha256((tmp_path / "packages" / indexed.filename).read_bytes()).hexdigest()
    assert f"../../packages/{indexed.filename}#sha256={digest}" in page
