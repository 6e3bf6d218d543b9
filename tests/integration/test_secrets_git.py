"""git over HTTPS through the gateway, with a secret scoped to github.com.

github.com is mapped to the test world's TLS git server, which requires Basic
auth ``x-access-token:<token>`` on org/private.git. The sandbox trusts the CA
that sealbox installs in it, and the gateway trusts the test world's CA
upstream. Nothing disables certificate verification. The first sandbox has
the real token as GITHUB_TOKEN, clones the private repository in full, then
fetches and pushes. Two more sandboxes clone with a dummy secret and with no
secret at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from sealbox import Action, ExecOutput, Network, NetworkPolicy, Rule, Sandbox, SandboxNotFoundError, Secret
from sealbox.gateway.audit import read_events
from sealbox.testworld import TracedRequest, parse_curl_trace
from sealbox.testworld.repogen import run_git
from sealbox.testworld.world import TestWorld

world_network = TestWorld.sandbox_network

PRIVATE_URL = "https://x-access-token:$GITHUB_TOKEN@github.com/org/private.git"
PUBLIC_URL = "https://github.com/org/public.git"
TRACE_ENV = "GIT_TRACE_CURL_NO_DATA=1 GIT_TRACE_CURL"
IDENTITY = "-c user.name=Test -c user.email=test@sealbox.invalid"
PUSHED_BRANCH = "refs/heads/pushed-through-gateway"


def shell(sandbox: Sandbox, script: str, **options: object) -> ExecOutput:
    return asyncio.run(sandbox.shell(script, timeout=300, **options))


def checked(output: ExecOutput) -> str:
    assert output.exit_code == 0, output.stderr_text[-3000:]
    return output.stdout_text


def served_refs(repo: Path) -> dict[str, str]:
    """Return refname -> object id of a served bare repository, read on the host."""
    listing = run_git(["for-each-ref", "--format=%(objectname) %(refname)"], cwd=repo)
    return {ref: oid for oid, ref in (line.split(" ", 1) for line in listing.splitlines())}


def cloned_refs(sandbox: Sandbox, directory: str) -> dict[str, str]:
    """Return the clone's view of the server's refs: remote-tracking branches as refs/heads/*, and tags."""
    listing = checked(shell(sandbox, f"git -C {directory} for-each-ref --format='%(objectname) %(refname)'"))
    refs: dict[str, str] = {}
    for line in listing.splitlines():
        oid, ref = line.split(" ", 1)
        if ref.startswith("refs/remotes/origin/") and ref != "refs/remotes/origin/HEAD":
            refs["refs/heads/" + ref.removeprefix("refs/remotes/origin/")] = oid
        elif ref.startswith("refs/tags/"):
            refs[ref] = oid
    return refs


def traced_posts(sandbox: Sandbox, trace: str, service: str) -> list[TracedRequest]:
    requests = parse_curl_trace(checked(shell(sandbox, f"cat {trace}")))
    return [request for request in requests if request.method == "POST" and request.target.endswith(service)]


@pytest.fixture(autouse=True)
def no_leftovers() -> Iterator[None]:
    """Replace the suite's per-test leak check, which counts the module's live sandbox as a leak.

    The ``box`` fixture removes that sandbox and checks that it is gone; the
    other sandboxes here are removed by ``async with``.
    """
    yield


@pytest.fixture(scope="module")
def private_repo(testworld: TestWorld) -> Iterator[Path]:
    """The served private repository; refs that the tests add or move are put back afterwards."""
    repo = testworld.repos["private"]
    before = served_refs(repo)
    try:
        yield repo
    finally:
        commands = []
        for ref, oid in served_refs(repo).items():
            if ref not in before:
                commands.append(f"delete {ref} {oid}\n")
            elif before[ref] != oid:
                commands.append(f"update {ref} {before[ref]} {oid}\n")
        if commands:
            run_git(["update-ref", "--stdin"], cwd=repo, input="".join(commands).encode())
        assert served_refs(repo) == before


@pytest.fixture(scope="module")
def box(testworld: TestWorld) -> Iterator[Sandbox]:
    secret = Secret.env("GITHUB_TOKEN", value=testworld.token, allow_hosts=["github.com"])
    sandbox = asyncio.run(Sandbox.create(
        "secrets-git", network=world_network(testworld), secrets=[secret],
        upstream_ca=[str(testworld.ca.cert_path)],
    ))
    try:
        yield sandbox
    finally:
        asyncio.run(sandbox.remove())
        with pytest.raises(SandboxNotFoundError):
            asyncio.run(Sandbox.get("secrets-git"))


@pytest.fixture(scope="module")
def private_clone(box: Sandbox, private_repo: Path) -> str:
    """Clone org/private.git in full inside the sandbox and return the clone's directory."""
    checked(shell(box, f'{TRACE_ENV}=/tmp/clone-trace.txt git clone -q "{PRIVATE_URL}" /tmp/private'))
    return "/tmp/private"


def test_clone_upload_pack_gzip(box: Sandbox, private_clone: str) -> None:
    posts = traced_posts(box, "/tmp/clone-trace.txt", "/git-upload-pack")
    gzipped = [post for post in posts if post.header("Content-Encoding") == "gzip"]

    assert len(gzipped) >= 1
    assert int(gzipped[-1].header("Content-Length") or 0) > 64 * 1024


def test_clone_fsck_clean(box: Sandbox, private_clone: str) -> None:
    output = shell(box, f"git -C {private_clone} fsck --full --no-progress")

    assert output.exit_code == 0, output.stderr_text
    assert output.stdout_text == ""


def test_clone_head_matches_server(box: Sandbox, private_clone: str, private_repo: Path) -> None:
    head = checked(shell(box, f"git -C {private_clone} rev-parse HEAD")).strip()

    assert head == run_git(["rev-parse", "HEAD"], cwd=private_repo).strip()


def test_clone_refs_match_server(box: Sandbox, private_clone: str, private_repo: Path) -> None:
    assert cloned_refs(box, private_clone) == served_refs(private_repo)


def test_fetch_sees_new_refs(box: Sandbox, testworld: TestWorld, private_clone: str, private_repo: Path) -> None:
    testworld.add_commits("private", 500, 500)

    checked(shell(box, f"git -C {private_clone} fetch -q origin"))

    refs = cloned_refs(box, private_clone)
    assert len([ref for ref in refs if ref.startswith("refs/heads/grown/")]) == 500
    assert refs == served_refs(private_repo)


def test_push_chunked_reaches_server(box: Sandbox, private_clone: str, private_repo: Path) -> None:
    script = (
        f"set -e; cd {private_clone}; head -c 2097152 /dev/urandom > big.bin; git add big.bin; "
        f"git {IDENTITY} commit -q -m 'two MiB of random bytes'; "
        f"{TRACE_ENV}=/tmp/push-trace.txt git push -q origin HEAD:{PUSHED_BRANCH}; git rev-parse HEAD"
    )

    pushed = checked(shell(box, script)).strip()

    posts = traced_posts(box, "/tmp/push-trace.txt", "/git-receive-pack")
    assert posts[-1].header("Transfer-Encoding") == "chunked"
    assert run_git(["rev-parse", PUSHED_BRANCH], cwd=private_repo).strip() == pushed


def test_dummy_secret_public_clone(testworld: TestWorld) -> None:
    secret = Secret.env("GITHUB_TOKEN", value="dummy-value-of-no-account-0000", allow_hosts=["github.com"])

    async def scenario() -> tuple[ExecOutput, str, list[dict[str, object]]]:
        async with await Sandbox.create(
            "secrets-git-dummy", network=world_network(testworld), secrets=[secret],
            upstream_ca=[str(testworld.ca.cert_path)],
        ) as sandbox:
            clone = await sandbox.shell(f"{TRACE_ENV}=/tmp/trace.txt git clone -q {PUBLIC_URL} /tmp/public "
                                        "&& git -C /tmp/public rev-parse HEAD", timeout=300)
            trace = (await sandbox.shell("cat /tmp/trace.txt")).stdout_text
            return clone, trace, read_events(Path(sandbox.audit_path))

    clone, trace, events = asyncio.run(scenario())

    assert clone.exit_code == 0, clone.stderr_text[-3000:]
    assert clone.stdout_text.strip() == run_git(["rev-parse", "HEAD"], cwd=testworld.repos["public"]).strip()
    gzipped = [post for post in parse_curl_trace(trace)
               if post.method == "POST" and post.header("Content-Encoding") == "gzip"]
    assert int(gzipped[-1].header("Content-Length") or 0) > 64 * 1024
    assert [event["sni"] for event in events if event["event"] == "intercept"][:1] == ["github.com"]


def test_no_secret_clones_not_intercepted(testworld: TestWorld) -> None:
    # Without a secret the gateway passes TLS through, so git must trust the test world's CA itself.
    env = {"GITHUB_TOKEN": testworld.token, "GIT_SSL_CAINFO": "/tmp/world-ca.pem"}
    script = (f"set -e; git clone -q {PUBLIC_URL} /tmp/public; git clone -q \"{PRIVATE_URL}\" /tmp/private; "
              "git -C /tmp/public rev-parse HEAD; git -C /tmp/private rev-parse HEAD")

    async def scenario() -> tuple[ExecOutput, list[dict[str, object]]]:
        async with await Sandbox.create(
            "secrets-git-none", network=world_network(testworld),
        ) as sandbox:
            await sandbox.shell("cat > /tmp/world-ca.pem", stdin=testworld.ca.cert_path.read_bytes())
            clone = await sandbox.shell(script, env=env, timeout=300)
            return clone, read_events(Path(sandbox.audit_path))

    clone, events = asyncio.run(scenario())

    assert clone.exit_code == 0, clone.stderr_text[-3000:]
    heads = [run_git(["rev-parse", "HEAD"], cwd=testworld.repos[name]).strip() for name in ("public", "private")]
    assert clone.stdout_text.split() == heads
    assert [event for event in events if event["event"] == "intercept"] == []
    assert len([event for event in events if event["event"] == "connect"]) >= 2
