"""Tests of the nginx git smart-HTTP server, with git on the host."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from sealbox.testworld import TestWorld, TracedRequest, parse_curl_trace
from sealbox.testworld.repogen import LARGE_REPO_HEAD


def git_ok(result) -> str:  # type: ignore[no-untyped-def]
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout.decode()


def traced_posts(trace: Path, service: str) -> list[TracedRequest]:
    requests = parse_curl_trace(trace.read_text(errors="replace"))
    return [request for request in requests if request.method == "POST" and request.target.endswith(service)]


@pytest.fixture(scope="module")
def public_clone(world: TestWorld, run_client, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A full clone of the public repository and the GIT_TRACE_CURL trace it wrote."""
    directory = tmp_path_factory.mktemp("public-clone")
    trace = directory / "trace.txt"
    result = run_client(
        ["git", "clone", "--quiet", world.direct_git_url("public"), str(directory / "repo")],
        extra_env={"GIT_TRACE_CURL": str(trace), "GIT_TRACE_CURL_NO_DATA": "1"},
    )
    git_ok(result)
    return directory / "repo", trace


def test_public_clone_without_auth(public_clone: tuple[Path, Path], run_client) -> None:
    repo, _trace = public_clone
    head = git_ok(run_client(["git", "-C", str(repo), "rev-parse", "HEAD"])).strip()
    assert head == LARGE_REPO_HEAD


def test_public_clone_all_refs(public_clone: tuple[Path, Path], run_client) -> None:
    repo, _trace = public_clone
    refs = git_ok(run_client(["git", "-C", str(repo), "for-each-ref", "--format=%(refname)"])).split()
    assert len(refs) >= 3000


def test_clone_upload_pack_gzip(public_clone: tuple[Path, Path]) -> None:
    _repo, trace = public_clone
    gzipped = [post for post in traced_posts(trace, "/git-upload-pack") if post.header("Content-Encoding") == "gzip"]
    assert len(gzipped) >= 1
    assert int(gzipped[-1].header("Content-Length") or 0) > 64 * 1024


def test_private_refuses_without_token(world: TestWorld, curl) -> None:
    url = world.direct_git_url("private") + "/info/refs?service=git-upload-pack"
    result = curl("-o", "/dev/null", "-w", "%{http_code}", url)
    assert result.stdout == b"401"


def test_private_refuses_wrong_token(world: TestWorld, curl) -> None:
    url = world.direct_git_url("private") + "/info/refs?service=git-upload-pack"
    result = curl("-o", "/dev/null", "-w", "%{http_code}", "-u", "x-access-token:ghp_wrong", url)
    assert result.stdout == b"401"


def test_private_git_fails_without_token(world: TestWorld, run_client) -> None:
    result = run_client(["git", "ls-remote", world.direct_git_url("private")])
    assert result.returncode == 128
    assert b"terminal prompts disabled" in result.stderr


def test_private_clones_with_token(world: TestWorld, run_client, tmp_path: Path) -> None:
    credentials = base64.b64encode(f"x-access-token:{world.token}".encode()).decode()
    result = run_client(
        ["git", "-c", f"http.extraHeader=Authorization: Basic {credentials}", "clone", "--quiet",
         world.direct_git_url("private"), str(tmp_path / "repo")]
    )
    git_ok(result)
    head = git_ok(run_client(["git", "-C", str(tmp_path / "repo"), "rev-parse", "HEAD"])).strip()
    assert head == LARGE_REPO_HEAD


@pytest.fixture
def small_clone(world: TestWorld, run_client, tmp_path: Path) -> Path:
    repo = tmp_path / "small"
    git_ok(run_client(["git", "clone", "--quiet", world.direct_git_url("small"), str(repo)]))
    return repo


def test_push_large_pack_chunked(world: TestWorld, run_client, small_clone: Path, tmp_path: Path) -> None:
    (small_clone / "big.bin").write_bytes(os.urandom(2 << 20))
    identity = ["-c", "user.name=Test", "-c", "user.email=test@sealbox.invalid"]
    git_ok(run_client(["git", *identity, "-C", str(small_clone), "add", "big.bin"]))
    git_ok(run_client(["git", *identity, "-C", str(small_clone), "commit", "--quiet", "-m", "big"]))
    branch = f"refs/heads/push-{tmp_path.name}"
    trace = tmp_path / "trace.txt"
    result = run_client(
        ["git", "-C", str(small_clone), "push", "--quiet", "origin", f"HEAD:{branch}"],
        extra_env={"GIT_TRACE_CURL": str(trace), "GIT_TRACE_CURL_NO_DATA": "1"},
    )
    git_ok(result)
    posts = traced_posts(trace, "/git-receive-pack")
    assert posts[-1].header("Transfer-Encoding") == "chunked"
    remote = git_ok(run_client(["git", "ls-remote", world.direct_git_url("small"), branch]))
    local = git_ok(run_client(["git", "-C", str(small_clone), "rev-parse", "HEAD"]))
    assert remote.split()[0] == local.strip()


def test_add_commits_refs(world: TestWorld, run_client) -> None:
    before = git_ok(run_client(["git", "ls-remote", world.direct_git_url("small")])).splitlines()
    world.add_commits("small", 500, 500)
    after = git_ok(run_client(["git", "ls-remote", world.direct_git_url("small")])).splitlines()
    assert len(after) - len(before) == 500
    assert len({line.split()[0] for line in after if "refs/heads/grown/" in line}) >= 500


def test_add_commits_unknown_repo(world: TestWorld) -> None:
    with pytest.raises(ValueError, match="unknown repository 'nope'"):
        world.add_commits("nope", 1, 1)


def test_add_commits_too_many_refs(world: TestWorld) -> None:
    with pytest.raises(ValueError, match="invalid ref count 3"):
        world.add_commits("small", 2, 3)


def test_git_url_by_name(world: TestWorld) -> None:
    assert world.git_url("public") == "https://github.com/org/public.git"
    assert world.direct_git_url("small") == f"https://127.0.0.1:{world.git.port}/org/small.git"

