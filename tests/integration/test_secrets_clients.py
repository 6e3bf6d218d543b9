"""Real HTTP clients through a secret: curl, Python urllib and pip.

One sandbox serves the module. API_TOKEN is scoped to echo.test, which is
mapped to the test world's recording server. PYPI_TOKEN has the test world's
token as its value and is scoped to pypi.test, the package index that
requires Basic auth ``__token__:<token>``. Each upload carries a random marker in its query,
so its connection's recording can be found and checked for the real value.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator

import pytest

from sealbox import Action, ExecOutput, Network, NetworkPolicy, Rule, Sandbox, SandboxNotFoundError, Secret
from sealbox.testworld.pypi import PROBE_PROJECT, PROBE_VERSION
from sealbox.testworld.recording import Recording
from sealbox.testworld.world import TestWorld

world_network = TestWorld.sandbox_network

API_VALUE = "sk-clients-" + "5e1d0c9b7a" * 4
CURL = "curl --http1.1 -sS --fail-with-body"


def shell(sandbox: Sandbox, script: str, **options: object) -> ExecOutput:
    return asyncio.run(sandbox.shell(script, timeout=300, **options))


def checked(output: ExecOutput) -> str:
    assert output.exit_code == 0, output.stderr_text[-3000:]
    return output.stdout_text


def recording_with(world: TestWorld, marker: str) -> Recording:
    """Return the one recording of the recording server whose bytes contain marker."""
    found = [recording for recording in world.recordings("https") if marker.encode() in recording.received]
    assert len(found) == 1, f"{len(found)} recordings contain the marker {marker!r}"
    return found[0]


def new_marker() -> str:
    return os.urandom(8).hex()


@pytest.fixture(autouse=True)
def no_leftovers() -> Iterator[None]:
    """Replace the suite's per-test leak check, which counts the module's live sandbox as a leak.

    The ``box`` fixture removes that sandbox and checks that it is gone.
    """
    yield


@pytest.fixture(scope="module")
def box(testworld: TestWorld) -> Iterator[Sandbox]:
    secrets = [
        Secret.env("API_TOKEN", value=API_VALUE, allow_hosts=["echo.test"]),
        Secret.env("PYPI_TOKEN", value=testworld.token, allow_hosts=["pypi.test"]),
    ]
    sandbox = asyncio.run(Sandbox.create(
        "secrets-clients", network=world_network(testworld), secrets=secrets,
        upstream_ca=[str(testworld.ca.cert_path)],
    ))
    try:
        yield sandbox
    finally:
        asyncio.run(sandbox.remove())
        with pytest.raises(SandboxNotFoundError):
            asyncio.run(Sandbox.get("secrets-clients"))


def test_curl_100mb_data_binary(box: Sandbox, testworld: TestWorld) -> None:
    marker = new_marker()
    script = (
        "set -e; head -c 100000000 /dev/urandom > /tmp/big.bin; sha256sum /tmp/big.bin | cut -d' ' -f1; "
        f'{CURL} -H "Authorization: Bearer $API_TOKEN" --data-binary @/tmp/big.bin '
        f'"https://echo.test/upload?m={marker}"; rm /tmp/big.bin'
    )

    try:
        digest, response = checked(shell(box, script)).split("\n", 1)

        assert json.loads(response) == {"length": 100_000_000, "sha256": digest}
        head = recording_with(testworld, marker).received.split(b"\r\n\r\n", 1)[0]
        assert b"\r\nAuthorization: Bearer " + API_VALUE.encode() + b"\r\n" in head
    finally:
        # The server keeps 64 MiB of this recording in memory until cleared.
        testworld.clear_recordings()


def test_curl_expect_continue(box: Sandbox, testworld: TestWorld) -> None:
    marker = new_marker()
    script = (
        "set -e; head -c 3000000 /dev/urandom > /tmp/mid.bin; sha256sum /tmp/mid.bin | cut -d' ' -f1; "
        f"{CURL} -v -H 'Expect: 100-continue' -H \"Authorization: Bearer $API_TOKEN\" "
        f'--data-binary @/tmp/mid.bin "https://echo.test/upload?m={marker}"'
    )

    output = shell(box, script)

    digest, response = checked(output).split("\n", 1)
    assert json.loads(response) == {"length": 3_000_000, "sha256": digest}
    assert "< HTTP/1.1 100 Continue" in output.stderr_text
    head = recording_with(testworld, marker).received.split(b"\r\n\r\n", 1)[0]
    assert b"\r\nExpect: 100-continue\r\n" in head
    assert b"\r\nAuthorization: Bearer " + API_VALUE.encode() + b"\r\n" in head


def test_python_urllib_post(box: Sandbox, testworld: TestWorld) -> None:
    marker = new_marker()
    script = (
        "import os, urllib.request\n"
        f"request = urllib.request.Request('https://echo.test/upload?m={marker}', data=b'x' * 70000,\n"
        "    headers={'Authorization': 'token ' + os.environ['API_TOKEN']}, method='POST')\n"
        "with urllib.request.urlopen(request, timeout=60) as response:\n"
        "    print(response.status, response.read().decode())\n"
    )

    status, response = checked(asyncio.run(box.exec("python3", ["-c", script], timeout=120))).split(" ", 1)

    assert status == "200"
    assert json.loads(response)["length"] == 70000
    head = recording_with(testworld, marker).received.split(b"\r\n\r\n", 1)[0]
    assert b"\r\nAuthorization: token " + API_VALUE.encode() + b"\r\n" in head


def test_pip_install_probe(box: Sandbox) -> None:
    install = (
        "python3 -m pip install -q --no-cache-dir --disable-pip-version-check --target /tmp/site "
        f'--index-url "https://__token__:$PYPI_TOKEN@pypi.test/simple/" {PROBE_PROJECT}'
    )
    checked(shell(box, install))

    output = shell(box, "PYTHONPATH=/tmp/site python3 -c 'import sealbox_probe; print(sealbox_probe.__version__)'")

    assert checked(output) == f"{PROBE_VERSION}\n"
