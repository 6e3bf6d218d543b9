"""Everyday clients inside a sandbox against the test world, with no secrets.

Without a secret the gateway intercepts nothing, so the clients see the
world's own certificates: each one is given the world's CA through a
read-only volume and trusts nothing else for these requests.
"""

from __future__ import annotations

import json
import subprocess

from sealbox import Network, Sandbox
from sealbox.testworld import TestWorld
from sealbox.testworld.repogen import LARGE_COMMITS

world_connect_to = TestWorld.connect_to_entries

WORLD_CA = "/etc/world-ca.pem"

URLLIB_SCRIPT = """\
import json, ssl, sys, urllib.request
context = ssl.create_default_context(cafile=sys.argv[1])
request = urllib.request.Request("https://echo.test/echo?client=urllib", data=b"payload", method="PUT")
with urllib.request.urlopen(request, context=context, timeout=20) as response:
    print(json.dumps({"status": response.status, "body": json.loads(response.read())}))
"""


def world_sandbox(world: TestWorld, name: str, **options):
    network = Network(connect_to=world_connect_to(world))
    return Sandbox.create(name, network=network, volumes=[f"{world.ca.cert_path}:{WORLD_CA}:ro"], **options)


def test_curl_https_by_name(run, testworld):
    async def scenario():
        async with await world_sandbox(testworld, "clients") as sandbox:
            return await sandbox.exec("curl", [
                "-sS", "--max-time", "20", "--cacert", WORLD_CA, "-w", "\\n%{http_code} %{http_version}",
                "https://api.github.com/",
            ])

    output = run(scenario())
    assert output.exit_code == 0, output.stderr_text
    assert output.stdout_text == "ok\n200 2"


def test_git_clone_full(run, testworld):
    expected_head = subprocess.run(
        ["git", "--git-dir", str(testworld.repos["public"]), "rev-parse", "HEAD"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    script = (
        f"git -c http.sslCAInfo={WORLD_CA} clone -q {testworld.git_url('public')} /tmp/public"
        " && cd /tmp/public"
        " && git fsck --full --no-progress"
        " && git rev-parse HEAD"
        " && git rev-parse --is-shallow-repository"
        " && git rev-list --count HEAD"
    )

    async def scenario():
        async with await world_sandbox(testworld, "clients", memory="2G") as sandbox:
            return await sandbox.shell(script, timeout=240)

    output = run(scenario())
    assert output.exit_code == 0, output.stderr_text[-2000:]
    assert output.stderr_text == ""
    assert output.stdout_text.split() == [expected_head, "false", str(LARGE_COMMITS)]


def test_python_urllib_https(run, testworld):
    async def scenario():
        async with await world_sandbox(testworld, "clients") as sandbox:
            return await sandbox.exec("python3", ["-c", URLLIB_SCRIPT, WORLD_CA], timeout=60)

    output = run(scenario())
    assert output.exit_code == 0, output.stderr_text
    seen = json.loads(output.stdout_text)
    assert seen["status"] == 200
    assert seen["body"]["method"] == "PUT"
    assert seen["body"]["target"] == "/echo?client=urllib"
    assert seen["body"]["protocol"] == "HTTP/1.1"
    assert seen["body"]["body_length"] == len(b"payload")
    assert ["Host", "echo.test"] in seen["body"]["headers"]
