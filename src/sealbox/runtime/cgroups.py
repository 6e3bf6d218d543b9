"""Cgroup paths of a sandbox, for limits reporting and cleanup.

The OCI runtime creates the cgroups (`cgroupsPath` /PARENT/ID, PARENT being
`sealbox` unless SEALBOX_CGROUP_PARENT names another) on cgroup v1, hybrid or
v2 hosts alike, and runc removes them on delete. runsc can leave them behind,
so teardown removes whatever is still there.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
DEFAULT_PARENT = "sealbox"
_PARENT_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def cgroup_parent() -> str:
    """Return the cgroup under which sandboxes are created (one level, no slashes)."""
    parent = os.environ.get("SEALBOX_CGROUP_PARENT") or DEFAULT_PARENT
    if not _PARENT_PATTERN.fullmatch(parent):
        raise ValueError(f"invalid SEALBOX_CGROUP_PARENT {parent!r}: use 1-64 characters from A-Z, a-z, 0-9, '_', '.', '-'")
    return parent


def cgroup_path(sandbox_id: str) -> str:
    """Return the OCI `cgroupsPath` of a sandbox."""
    return f"/{cgroup_parent()}/{sandbox_id}"


def memory_cgroup_files(sandbox_id: str) -> list[tuple[Path, str]]:
    """Return the files that count OOM kills of a sandbox (cgroup v1 and v2) with the key to read."""
    parent = cgroup_parent()
    return [
        (CGROUP_ROOT / "memory" / parent / sandbox_id / "memory.oom_control", "oom_kill"),
        (CGROUP_ROOT / parent / sandbox_id / "memory.events", "oom_kill"),
    ]


def sandbox_cgroups(sandbox_id: str) -> list[Path]:
    """Return the existing cgroup directories of a sandbox in every hierarchy."""
    parent = cgroup_parent()
    candidates = [CGROUP_ROOT / parent / sandbox_id]
    candidates += [hierarchy / parent / sandbox_id for hierarchy in CGROUP_ROOT.iterdir() if hierarchy.is_dir()]
    return [path for path in candidates if path.is_dir()]


def remove_cgroups(sandbox_id: str) -> None:
    """Remove a sandbox's empty cgroups, children first; failures are logged with the path."""
    for path in sandbox_cgroups(sandbox_id):
        for child in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            _rmdir(child)
        _rmdir(path)


def _rmdir(path: Path) -> None:
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.error("removing cgroup %s failed: %s", path, exc)
