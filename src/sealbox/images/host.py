"""The `host` image: the host's programs and libraries, none of the host's data.

The image is a generated skeleton (directories, the /usr merge symlinks and a
curated, generated /etc) plus overlays of the host's /usr, /etc/ssl,
/etc/ca-certificates and /etc/alternatives. Every sandbox writes to its own
upper layers, so programs can be installed inside without touching the host.
/root, /home, /var, /opt, /etc/shadow and the host's ssh keys are not part of it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from sealbox.images.layout import ImageLayout
from sealbox.store import Paths

SKELETON_VERSION = "1"

# Host directories shared with the sandbox through an overlay of their own.
_OVERLAID = ("/usr", "/etc/ssl", "/etc/ca-certificates", "/etc/alternatives")

# Files and directories copied from the host's /etc because programs need them
# to run (dynamic linker cache, service names, time zone, interpreter config).
_COPIED_ETC = (
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "timezone",
    "protocols",
    "services",
    "mime.types",
    "shells",
    "gai.conf",
    "host.conf",
    "debian_version",
    "os-release",
    "bash.bashrc",
    "profile",
    "inputrc",
    "ca-certificates.conf",
    "python3",
    "python3.11",
    "perl",
    "magic",
)

_MERGED_USR_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")

PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"
NSSWITCH = "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n"


def host_image(paths: Paths) -> ImageLayout:
    skeleton = _ensure_skeleton(paths)
    overlays = tuple((path, Path(path)) for path in _OVERLAID if os.path.isdir(path))
    for name in _MERGED_USR_LINKS:
        host_path = Path("/") / name
        if host_path.is_dir() and not host_path.is_symlink():
            overlays += ((str(host_path), host_path),)
    # /etc/ssl/private contains the host's TLS private keys.
    return ImageLayout(reference="host", root_lower=skeleton, overlays=overlays, hidden=("/etc/ssl/private",))


def _skeleton_version() -> str:
    digest = hashlib.sha256(SKELETON_VERSION.encode())
    for name in _COPIED_ETC + _MERGED_USR_LINKS:
        path = Path("/etc") / name if name in _COPIED_ETC else Path("/") / name
        try:
            stat = path.lstat()
        except FileNotFoundError:
            continue
        digest.update(f"{path}:{stat.st_mtime_ns}:{stat.st_size}".encode())
    return digest.hexdigest()[:16]


def _ensure_skeleton(paths: Paths) -> Path:
    """Build the skeleton once per host configuration; later calls return it at once."""
    target = paths.image_dir("host", _skeleton_version())
    if (target / ".complete").exists():
        return target
    staging = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for directory in ("proc", "sys", "dev", "tmp", "run", "etc", "var/tmp", "var/lib", "var/cache", "var/log",
                      "root", "home", "mnt", "opt", "srv", "usr", "etc/ssl", "etc/ca-certificates",
                      "etc/alternatives", ".sealbox"):
        (staging / directory).mkdir(parents=True, exist_ok=True)
    os.chmod(staging / "tmp", 0o1777)
    os.chmod(staging / "var/tmp", 0o1777)
    os.chmod(staging / "root", 0o700)
    for name in _MERGED_USR_LINKS:
        host_path = Path("/") / name
        if host_path.is_symlink():
            os.symlink(os.readlink(host_path), staging / name)
        elif host_path.is_dir():
            (staging / name).mkdir()
    for name in _COPIED_ETC:
        source = Path("/etc") / name
        destination = staging / "etc" / name
        if source.is_symlink():
            os.symlink(os.readlink(source), destination)
        elif source.is_dir():
            shutil.copytree(source, destination, symlinks=True)
        elif source.is_file():
            shutil.copy2(source, destination)
    (staging / "etc/passwd").write_text(PASSWD)
    (staging / "etc/group").write_text(GROUP)
    (staging / "etc/nsswitch.conf").write_text(NSSWITCH)
    (staging / ".complete").write_text("")
    try:
        staging.rename(target)
    except OSError:
        # Another process finished the same skeleton first; its copy is identical.
        shutil.rmtree(staging, ignore_errors=True)
    return target
