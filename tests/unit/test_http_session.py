"""The gateway's per-request decisions on an intercepted connection, without sockets."""

from __future__ import annotations

import base64

import pytest

from sealbox.gateway.audit import AuditLog, read_events
from sealbox.gateway.http1_request import Forward, Reject, parse_request_head
from sealbox.gateway.http_session import HttpSession
from sealbox.gateway.placeholders import assign_placeholders
from sealbox.gateway.substitution import Substituter
from sealbox.spec.secret import Secret

GITHUB_VALUE = "ghp_" + "R" * 36
OTHER_VALUE = "sk-" + "S" * 40


@pytest.fixture
def secrets():
    return assign_placeholders([
        Secret.env("GITHUB_TOKEN", value=GITHUB_VALUE, allow_hosts=["github.com"]),
        Secret.env("OPENAI_KEY", value=OTHER_VALUE, allow_hosts=["api.openai.com"]),
    ])


def session(tmp_path, secrets, host="github.com", tls=True):
    audit = AuditLog(tmp_path / "audit.jsonl", "unit")
    return HttpSession("unit", 1, host, 443 if tls else 80, tls, tuple(secrets), Substituter(secrets), audit)


def head(text: str):
    return parse_request_head(text.replace("\n", "\r\n").encode())


def test_request_without_placeholder_is_untouched(tmp_path, secrets):
    request = head("GET /org/repo.git/info/refs?service=git-upload-pack HTTP/1.1\nHost: github.com\nAccept: */*\n\n")
    decision = session(tmp_path, secrets).on_head(request)
    assert isinstance(decision, Forward)
    assert decision.head == request.raw


def test_header_placeholder_replaced_only_there(tmp_path, secrets):
    placeholder = secrets[0].placeholder
    request = head(f"GET / HTTP/1.1\nHost: github.com\nAuthorization: Bearer {placeholder}\nX-Other: keep\n\n")
    decision = session(tmp_path, secrets).on_head(request)
    assert isinstance(decision, Forward)
    assert decision.head == request.raw.replace(placeholder.encode(), GITHUB_VALUE.encode())
    assert len(decision.head) == len(request.raw)


def test_basic_auth_placeholder_replaced(tmp_path, secrets):
    placeholder = secrets[0].placeholder
    credentials = base64.b64encode(f"x-access-token:{placeholder}".encode()).decode()
    request = head(f"POST /org/repo.git/git-upload-pack HTTP/1.1\nHost: github.com\nAuthorization: Basic {credentials}\n"
                   "Content-Length: 0\n\n")
    decision = session(tmp_path, secrets).on_head(request)
    expected = base64.b64encode(f"x-access-token:{GITHUB_VALUE}".encode()).decode()
    assert isinstance(decision, Forward)
    assert decision.head == request.raw.replace(credentials.encode(), expected.encode())


def test_host_header_must_match_sni(tmp_path, secrets):
    request = head("GET / HTTP/1.1\nHost: canary.test\n\n")
    decision = session(tmp_path, secrets).on_head(request)
    assert isinstance(decision, Reject)
    assert decision.status == 421
    assert "canary.test" in decision.reason


def test_host_header_with_port_matches(tmp_path, secrets):
    request = head("GET / HTTP/1.1\nHost: GitHub.com:443\n\n")
    assert isinstance(session(tmp_path, secrets).on_head(request), Forward)


def test_other_secret_placeholder_blocked(tmp_path, secrets):
    request = head(f"GET / HTTP/1.1\nHost: github.com\nX-Key: {secrets[1].placeholder}\n\n")
    decision = session(tmp_path, secrets).on_head(request)
    assert isinstance(decision, Reject)
    assert decision.status == 403
    assert "OPENAI_KEY" in decision.reason
    assert "github.com" in decision.reason
    assert OTHER_VALUE not in decision.reason
    events = read_events(tmp_path / "audit.jsonl")
    assert [event["event"] for event in events] == ["violation"]
    assert events[0]["secret"] == "OPENAI_KEY"
    assert OTHER_VALUE not in (tmp_path / "audit.jsonl").read_text()


def test_violation_log_only_forwards_placeholder(tmp_path, secrets):
    logged = [secrets[0], secrets[1].__class__(**{**secrets[1].__dict__, "on_violation": "log"})]
    request = head(f"GET / HTTP/1.1\nHost: github.com\nX-Key: {logged[1].placeholder}\n\n")
    decision = session(tmp_path, logged).on_head(request)
    assert isinstance(decision, Forward)
    assert decision.head == request.raw


def test_plaintext_never_receives_value(tmp_path, secrets):
    request = head(f"GET / HTTP/1.1\nHost: github.com\nAuthorization: Bearer {secrets[0].placeholder}\n\n")
    decision = session(tmp_path, secrets, tls=False).on_head(request)
    assert isinstance(decision, Reject)
    assert decision.status == 403
    assert "GITHUB_TOKEN" in decision.reason


def test_audit_path_keeps_placeholder_not_value(tmp_path, secrets):
    placeholder = secrets[0].placeholder
    request = head(f"GET /api?token={placeholder} HTTP/1.1\nHost: github.com\n\n")
    decision = session(tmp_path, secrets).on_head(request)
    assert isinstance(decision, Forward)
    assert GITHUB_VALUE.encode() in decision.head
    assert GITHUB_VALUE not in (tmp_path / "audit.jsonl").read_text()


@pytest.mark.parametrize("value, expected", [
    ("GitHub.com", "github.com"),
    ("github.com:443", "github.com"),
    ("github.com.", "github.com"),
    ("[::1]:8443", "::1"),
    ("[::1]", "::1"),
    ("host:notaport", "host:notaport"),
])
def test_host_name_of_header(value, expected):
    from sealbox.gateway.http1_common import host_name

    assert host_name(value) == expected
