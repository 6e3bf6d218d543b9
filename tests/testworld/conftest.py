"""Fixtures for the test world's own tests.

One world serves every test in this directory. Tests that start or stop a
world make their own. Host-side clients run with
``world.client_env()``, which trusts only the world CA, because the machine
exports CA variables that point at the system bundle.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from sealbox.testworld import TestWorld, ensure_large_repo
from sealbox.testworld.repogen import default_cache_dir


@pytest.fixture(scope="session")
def large_repo_path() -> Path:
    return ensure_large_repo(default_cache_dir())


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory, large_repo_path: Path) -> Iterator[TestWorld]:
    instance = TestWorld(tmp_path_factory.mktemp("world"), repo_cache=large_repo_path.parent)
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


Runner = Callable[..., "subprocess.CompletedProcess[bytes]"]


@pytest.fixture(scope="session")
def run_client(world: TestWorld) -> Runner:
    """Return a function that runs a host-side client with the world's clean environment."""

    def run(
        argv: Sequence[str],
        *,
        cwd: Path | None = None,
        extra_env: dict[str, str] | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[bytes]:
        env = world.client_env(extra_env)
        return subprocess.run(list(argv), cwd=cwd, env=env, capture_output=True, timeout=timeout)

    return run


@pytest.fixture(scope="session")
def curl(world: TestWorld, run_client: Runner) -> Runner:
    """Return a function that runs curl with the world CA as the only trusted CA."""

    def run_curl(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
        return run_client(["curl", "-sS", "--cacert", str(world.ca.cert_path), *args], timeout=timeout)

    return run_curl
