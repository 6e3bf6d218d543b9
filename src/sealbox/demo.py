"""The README's main job: a scoped secret through a real HTTPS git clone.

Starts the local test world and creates a sandbox whose GITHUB_TOKEN is a
placeholder scoped to github.com, which the gateway maps to the world's git
server. Plain `git` clones the private repository inside the sandbox. The job
prints what the sandbox saw (the placeholder) and what the server received
(the real token, as a SHA-256 digest). Nothing leaves this machine.
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
import tempfile
import time
from pathlib import Path

from sealbox import Sandbox, Secret
from sealbox.gateway.audit import read_events
from sealbox.testworld.repogen import default_cache_dir, ensure_large_repo
from sealbox.testworld.world import TestWorld


async def main_job(world: TestWorld) -> int:
    network = world.sandbox_network()
    secret = Secret.env("GITHUB_TOKEN", value=world.token, allow_hosts=["github.com"])
    url = "https://x-access-token:$GITHUB_TOKEN@github.com/org/private.git"
    async with await Sandbox.create("demo", network=network, secrets=[secret],
                                    upstream_ca=[str(world.ca.cert_path)], replace=True, memory="2G") as sandbox:
        seen = await sandbox.shell('printf "%s" "$GITHUB_TOKEN"')
        print(f"sandbox sees GITHUB_TOKEN = {seen.stdout_text}")
        print(f"real token digest          = sha256:{hashlib.sha256(world.token.encode()).hexdigest()[:16]}")
        started = time.monotonic()
        clone = await sandbox.shell(f'git clone -q "{url}" /tmp/repo && git -C /tmp/repo rev-parse HEAD '
                                    f'&& git -C /tmp/repo for-each-ref | wc -l', timeout=900)
        elapsed = time.monotonic() - started
        if not clone.success:
            print(f"clone failed (exit {clone.exit_code}):\n{clone.stderr_text}", file=sys.stderr)
            return 1
        head, refs = clone.stdout_text.split()
        print(f"cloned org/private.git in {elapsed:.1f} s: HEAD {head}, {refs} refs")
        received = [entry for entry in world.received_credentials() if entry[1].startswith("/org/private.git/")]
        if received:
            status, _, user, digest = received[-1]
            print(f"server received Basic auth  = {user}:<sha256:{digest[:16]}> (HTTP {status}, "
                  f"{len(received)} requests)")
            if any(entry[3] != hashlib.sha256(world.token.encode()).hexdigest() for entry in received):
                print("server received something other than the real token", file=sys.stderr)
                return 1
        events = read_events(Path(sandbox.audit_path))
        requests = [event for event in events if event["event"] == "request"]
        substituted = [event for event in requests if event.get("secrets")]
        print(f"gateway audit: {len(requests)} intercepted requests, {len(substituted)} with GITHUB_TOKEN substituted:")
        for event in requests:
            print(f"  {event['method']} {event['path']} -> {event['status']} secrets={event.get('secrets', [])}")
    return 0


def main() -> int:
    print("building the test repository (cached after the first run) ...", flush=True)
    repo = ensure_large_repo(default_cache_dir())
    with tempfile.TemporaryDirectory(prefix="sealbox-demo-") as directory:
        with TestWorld(Path(directory), repo_cache=repo.parent) as world:
            return asyncio.run(main_job(world))


if __name__ == "__main__":
    sys.exit(main())
