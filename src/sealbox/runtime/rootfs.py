"""Assemble a sandbox's root filesystem from its image.

Steps, in order, each failure reported with its errno and path:
1. create the private upper and work directories of every overlay;
2. write whiteouts for the image paths the sandbox must not see;
3. mount the root overlay (image below, sandbox upper above) on `rootfs/`;
4. mount the image's extra overlays (for `host`: /usr, /etc/ssl, ...) inside it;
5. write the per-sandbox files of /etc (hosts, hostname, resolv.conf, passwd).

The mounts are made in the supervisor's private mount namespace, so they
disappear with it and never show up on the host.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from sealbox.errors import InvalidSpecError
from sealbox.images import ImageLayout
from sealbox.runtime.linux import mount, umount


@dataclass(frozen=True)
class SandboxUser:
    uid: int
    gid: int
    home: str

    @property
    def spec(self) -> str:
        return f"{self.uid}:{self.gid}"


def assemble_rootfs(layout: ImageLayout, state_dir: Path) -> Path:
    """Mount the sandbox's root filesystem and return the merged directory."""
    rootfs = state_dir / "rootfs"
    layers = state_dir / "layers"
    rootfs.mkdir(parents=True, exist_ok=True)

    overlays = [("/", layout.root_lower)] + list(layout.overlays)
    for index, _ in enumerate(overlays):
        (layers / str(index) / "upper").mkdir(parents=True, exist_ok=True)
        (layers / str(index) / "work").mkdir(parents=True, exist_ok=True)

    for hidden in layout.hidden:
        _write_whiteout(overlays, layers, hidden)

    for index, (inside, lower) in enumerate(overlays):
        target = rootfs / inside.lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        options = f"lowerdir={lower},upperdir={layers / str(index) / 'upper'},workdir={layers / str(index) / 'work'}"
        mount("overlay", str(target), "overlay", 0, options)
    return rootfs


def _write_whiteout(overlays: list[tuple[str, Path]], layers: Path, hidden: str) -> None:
    """Hide `hidden` by a whiteout (a 0/0 character device) in the upper layer of the overlay that contains it."""
    best = max(
        (i for i, (inside, _) in enumerate(overlays) if hidden == inside or hidden.startswith(inside.rstrip("/") + "/")),
        key=lambda i: len(overlays[i][0]),
    )
    relative = os.path.relpath(hidden, overlays[best][0])
    whiteout = layers / str(best) / "upper" / relative
    whiteout.parent.mkdir(parents=True, exist_ok=True)
    if not whiteout.exists():
        os.mknod(whiteout, 0o600 | 0o020000, os.makedev(0, 0))


def unmount_rootfs(layout: ImageLayout, state_dir: Path) -> None:
    """Unmount in reverse order; missing mounts are ignored."""
    rootfs = state_dir / "rootfs"
    for inside, _ in reversed([("/", layout.root_lower)] + list(layout.overlays)):
        try:
            umount(str(rootfs / inside.lstrip("/")))
        except OSError:
            pass


def write_etc(rootfs: Path, *, hostname: str, user: str | None, add_hosts: dict[str, str]) -> SandboxUser:
    """Write /etc/hosts, /etc/hostname and /etc/resolv.conf and resolve the sandbox user."""
    etc = rootfs / "etc"
    etc.mkdir(exist_ok=True)
    for name in ("hosts", "hostname", "resolv.conf"):
        # Images often ship these as symlinks (for example into /run); replace them.
        path = etc / name
        if path.is_symlink() or path.is_dir():
            _remove(path)
    hosts = f"127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    hosts += "".join(f"{address}\t{name}\n" for name, address in add_hosts.items())
    (etc / "hosts").write_text(hosts)
    (etc / "hostname").write_text(hostname + "\n")
    # Every DNS query is redirected to the gateway, whatever server a program uses.
    (etc / "resolv.conf").write_text("nameserver 127.0.0.1\noptions edns0\n")
    return resolve_user(rootfs, user)


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    else:
        shutil.rmtree(path)


def resolve_user(rootfs: Path, user: str | None) -> SandboxUser:
    """Resolve UID[:GID] or NAME[:GROUP] against the sandbox's /etc/passwd and /etc/group.

    A numeric UID missing from /etc/passwd gets an entry named `sandbox` with
    home /home/sandbox, so programs that look up their user (git, ssh, pip) work.
    """
    if user is None:
        return SandboxUser(0, 0, "/root")
    user_part, _, group_part = user.partition(":")
    passwd = _read_table(rootfs / "etc/passwd")
    groups = _read_table(rootfs / "etc/group")

    entry = next((row for row in passwd if row[0] == user_part or (user_part.isdigit() and row[2] == user_part)), None)
    if entry is None and not user_part.isdigit():
        raise InvalidSpecError("user", user, "no such user in the image's /etc/passwd")
    uid = int(user_part) if user_part.isdigit() else int(entry[2])  # type: ignore[index]

    if group_part:
        group = next((row for row in groups if row[0] == group_part or (group_part.isdigit() and row[2] == group_part)), None)
        if group is None and not group_part.isdigit():
            raise InvalidSpecError("user", user, "no such group in the image's /etc/group")
        gid = int(group_part) if group_part.isdigit() else int(group[2])  # type: ignore[index]
    else:
        gid = int(entry[3]) if entry is not None else uid

    if entry is None:
        home = "/home/sandbox"
        with open(rootfs / "etc/passwd", "a") as passwd_file:
            passwd_file.write(f"sandbox:x:{uid}:{gid}:sandbox:{home}:/bin/sh\n")
        if not any(row[2] == str(gid) for row in groups):
            with open(rootfs / "etc/group", "a") as group_file:
                group_file.write(f"sandbox:x:{gid}:\n")
    else:
        home = entry[5] or "/"
    home_dir = rootfs / home.lstrip("/")
    if home != "/" and not home_dir.exists() and home.startswith("/home/"):
        home_dir.mkdir(parents=True)
        os.chown(home_dir, uid, gid)
    return SandboxUser(uid, gid, home)


def _read_table(path: Path) -> list[list[str]]:
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    return [line.split(":") for line in lines if line and not line.startswith("#") and line.count(":") >= 2]
