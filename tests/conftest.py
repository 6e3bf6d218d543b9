"""Shared fixtures: an isolated SEALBOX_HOME and a leak check after every test.

Every test that creates sandboxes must leave no supervisor process, runc
container, cgroup or mount of sealbox behind, even when it fails. The
autouse fixture removes whatever a test left (so later tests start clean)
and then fails the test that leaked.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

pytest_plugins = ["sealbox.testworld.pytest_plugin"]

_HOME = Path(tempfile.mkdtemp(prefix="sealbox-test-home-"))
os.environ["SEALBOX_HOME"] = str(_HOME)
# A cgroup parent of this run's own, so the leak check never counts another sealbox on the machine.
_CGROUP_PARENT = f"sealbox-test-{os.getpid()}"
os.environ["SEALBOX_CGROUP_PARENT"] = _CGROUP_PARENT
# Gateways in tests resolve names only through their static maps, never through the host's resolver.
os.environ["SEALBOX_SYSTEM_RESOLVER"] = "0"
# Host-side clients in tests choose their CA explicitly; the caller's CA variables must not leak in.
for _variable in ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO",
                  "PIP_CERT", "NODE_EXTRA_CA_CERTS", "AWS_CA_BUNDLE", "HTTPLIB2_CA_CERTS", "NIX_SSL_CERT_FILE",
                  "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH", "CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE"):
    os.environ.pop(_variable, None)


@pytest.fixture(scope="session")
def sealbox_home() -> Path:
    return _HOME


def _runc_containers() -> list[str]:
    root = _HOME / "run" / "runc"
    if not root.exists():
        return []
    listing = subprocess.run(["runc", "--root", str(root), "list", "-q"], capture_output=True, text=True)
    return [line for line in listing.stdout.split() if line]


def _supervisor_pids() -> list[int]:
    """Return supervisors of this run: processes named sbx-* with a file open under this run's SEALBOX_HOME.

    Supervisors are forked, so their command line is their creator's; the
    name and the open log file identify them.
    """
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if not Path(f"/proc/{entry}/comm").read_text().startswith("sbx-"):
                continue
            targets = [os.readlink(f"/proc/{entry}/fd/{fd}") for fd in os.listdir(f"/proc/{entry}/fd")]
        except OSError:
            continue
        if any(target.startswith(str(_HOME)) for target in targets):
            pids.append(int(entry))
    return pids


def _cgroups() -> list[Path]:
    found = []
    for parent in Path("/sys/fs/cgroup").glob(f"*/{_CGROUP_PARENT}"):
        found += [child for child in parent.iterdir() if child.is_dir()]
    unified = Path("/sys/fs/cgroup") / _CGROUP_PARENT
    if unified.is_dir():
        found += [child for child in unified.iterdir() if child.is_dir()]
    return found


def _remove_cgroup_parents() -> None:
    for parent in list(Path("/sys/fs/cgroup").glob(f"*/{_CGROUP_PARENT}")) + [Path("/sys/fs/cgroup") / _CGROUP_PARENT]:
        try:
            parent.rmdir()
        except OSError:
            pass


def _mounts() -> list[str]:
    return [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if str(_HOME) in line]


def leftovers(cgroups_before: set[Path]) -> dict[str, list]:
    return {
        "supervisors": _supervisor_pids(),
        "containers": _runc_containers(),
        "cgroups": [str(path) for path in _cgroups() if path not in cgroups_before],
        "mounts": _mounts(),
    }


def clean_up(cgroups_before: set[Path] | None = None) -> None:
    """Remove what a test left: supervisors first (by PID), then containers, then state."""
    for pid in _supervisor_pids():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    root = _HOME / "run" / "runc"
    for container in _runc_containers():
        subprocess.run(["runc", "--root", str(root), "delete", "--force", container], capture_output=True)
    for cgroup in _cgroups():
        if cgroups_before is not None and cgroup in cgroups_before:
            continue
        try:
            cgroup.rmdir()
        except OSError:
            pass
    registry = _HOME / "registry.db"
    if registry.exists():
        registry.unlink()
    shutil.rmtree(_HOME / "sandboxes", ignore_errors=True)


@pytest.fixture(autouse=True)
def no_leftovers(request: pytest.FixtureRequest):
    cgroups_before = set(_cgroups())
    yield
    found = {key: value for key, value in leftovers(cgroups_before).items() if value}
    if found:
        clean_up(cgroups_before)
        pytest.fail(f"test left sealbox state behind: {found}")


@pytest.fixture
def run():
    """Run a coroutine to completion on a fresh event loop (the tests are plain functions)."""

    def runner(coroutine):
        return asyncio.run(coroutine)

    return runner


def pytest_sessionfinish(session, exitstatus):
    clean_up()
    _remove_cgroup_parents()
    shutil.rmtree(_HOME, ignore_errors=True)
