"""Cgroup paths of a sandbox, for limits reporting and cleanup.

The OCI runtime creates the cgroups (`cgroupsPath` /sealbox/ID) on cgroup v1,
hybrid or v2 hosts alike, and runc removes them on delete. runsc can leave
them behind, so teardown removes whatever is still there.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
PARENT = "sealbox"


def sandbox_cgroups(sandbox_id: str) -> list[Path]:
    """Return the existing cgroup directories of a sandbox in every hierarchy."""
    candidates = [CGROUP_ROOT / PARENT / sandbox_id]
    candidates += [hierarchy / PARENT / sandbox_id for hierarchy in CGROUP_ROOT.iterdir() if hierarchy.is_dir()]
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
