"""pytest fixtures for the test world.

Enable with ``pytest_plugins = ["sealbox.testworld.pytest_plugin"]`` in the
top-level conftest.py. Both fixtures are session-scoped: the large repository
is built once per cache (see ``ensure_large_repo``) and one world serves the
whole session.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .repogen import default_cache_dir, ensure_large_repo
from .world import TestWorld


@pytest.fixture(scope="session")
def large_repo() -> Path:
    """The cached large bare repository."""
    return ensure_large_repo(default_cache_dir())


@pytest.fixture(scope="session")
def testworld(tmp_path_factory: pytest.TempPathFactory, large_repo: Path) -> Iterator[TestWorld]:
    """A started TestWorld, stopped at the end of the session."""
    world = TestWorld(tmp_path_factory.mktemp("testworld"), repo_cache=large_repo.parent)
    world.start()
    try:
        yield world
    finally:
        world.stop()
