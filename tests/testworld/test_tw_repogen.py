"""Tests of the large repository generator and the pytest plugin."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from sealbox.testworld import ensure_large_repo
from sealbox.testworld.repogen import LARGE_REPO_HEAD, build_large_repo, build_small_repo, grow_repo, run_git


def test_large_repo_ref_count(large_repo_path: Path) -> None:
    refs = run_git(["for-each-ref", "--format=%(objectname)"], cwd=large_repo_path).split()
    assert len(refs) >= 3000
    assert len(set(refs)) == len(refs)


def test_large_repo_has_branches_and_tags(large_repo_path: Path) -> None:
    tags = run_git(["for-each-ref", "--format=%(refname)", "refs/tags"], cwd=large_repo_path).split()
    branches = run_git(["for-each-ref", "--format=%(refname)", "refs/heads"], cwd=large_repo_path).split()
    assert len(tags) >= 1000
    assert len(branches) >= 2000


def test_large_repo_size(large_repo_path: Path) -> None:
    pack_bytes = sum(path.stat().st_size for path in (large_repo_path / "objects" / "pack").glob("*.pack"))
    assert pack_bytes > 50 * 1000 * 1000


def test_large_repo_cached(large_repo_path: Path) -> None:
    started = time.monotonic()
    again = ensure_large_repo(large_repo_path.parent)
    assert again == large_repo_path
    assert time.monotonic() - started < 1


def test_large_repo_deterministic(tmp_path: Path) -> None:
    repo = tmp_path / "large.git"
    build_large_repo(repo)
    assert run_git(["rev-parse", "main"], cwd=repo).strip() == LARGE_REPO_HEAD


def test_grow_repo_counts(tmp_path: Path) -> None:
    repo = tmp_path / "small.git"
    build_small_repo(repo)
    grow_repo(repo, 10, 4)
    assert run_git(["rev-list", "--count", "main"], cwd=repo).strip() == "13"
    grown = run_git(["for-each-ref", "--format=%(refname)", "refs/heads/grown"], cwd=repo).split()
    assert grown == [f"refs/heads/grown/{number:06d}" for number in range(9, 13)]


def test_grow_repo_names_unique(tmp_path: Path) -> None:
    repo = tmp_path / "small.git"
    build_small_repo(repo)
    grow_repo(repo, 3, 3)
    grow_repo(repo, 3, 3)
    grown = run_git(["for-each-ref", "--format=%(objectname)", "refs/heads/grown"], cwd=repo).split()
    assert len(set(grown)) == 6


def test_grow_repo_zero_commits(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="invalid commit count 0"):
        grow_repo(tmp_path, 0, 0)


PLUGIN_TEST = """
from sealbox.testworld import TestWorld

def test_fixture(testworld: TestWorld) -> None:
    assert testworld.describe()["git"]["repos"]["public"].endswith("public.git")
"""


def test_pytest_plugin_fixtures(tmp_path: Path, large_repo_path: Path) -> None:
    (tmp_path / "test_plugin_probe.py").write_text(PLUGIN_TEST)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "sealbox.testworld.pytest_plugin", "-p", "no:cacheprovider",
         "--rootdir", str(tmp_path), str(tmp_path / "test_plugin_probe.py")],
        cwd=tmp_path,
        capture_output=True,
        env={"PATH": "/usr/bin:/bin", "SEALBOX_TESTWORLD_CACHE": str(large_repo_path.parent), "HOME": str(tmp_path)},
        timeout=300,
    )
    assert result.returncode == 0, result.stdout.decode(errors="replace")[-3000:]
