"""Thin ctypes wrappers over the Linux calls the supervisor needs.

Each wrapper raises OSError with the errno and the path or namespace involved,
so a failed setup step names exactly what failed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MNT_DETACH = 0x2

PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15
PR_SET_CHILD_SUBREAPER = 36


def _check(result: int, what: str, path: str | None = None) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what} failed: {os.strerror(errno)}", path)


def mount(source: str, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    result = _libc.mount(
        source.encode(),
        target.encode(),
        fstype.encode() if fstype else None,
        ctypes.c_ulong(flags),
        data.encode() if data else None,
    )
    _check(result, f"mount {fstype or 'bind'} {source}", target)


def umount(target: str, flags: int = MNT_DETACH) -> None:
    _check(_libc.umount2(target.encode(), flags), "umount", target)


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), f"unshare(0x{flags:x})")


def setns(fd: int, nstype: int = 0, path: str | None = None) -> None:
    _check(_libc.setns(fd, nstype), "setns", path)


def prctl(option: int, value: int) -> None:
    _check(_libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0), f"prctl({option})")


def set_process_name(name: str) -> None:
    """Set the name `ps -o comm`, top and /proc/PID/comm show (the kernel keeps 15 bytes)."""
    _libc.prctl(PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)


def clear_command_line_and_environ(title: str) -> None:
    """Overwrite this process's argv and initial environment block, as /proc/PID/cmdline and environ show them.

    A forked supervisor keeps its creator's memory, so `sealbox create
    --secret NAME=VALUE@HOST` would leave the value readable in ps for the
    sandbox's lifetime. The areas come from fields 48-51 of /proc/self/stat
    (arg_start, arg_end, env_start, env_end, Linux 3.5 and later).
    """
    with open("/proc/self/stat", "rb") as stat_file:
        data = stat_file.read()
    fields = data[data.rindex(b")") + 2 :].split()
    arg_start, arg_end, env_start, env_end = (int(value) for value in fields[45:49])
    ctypes.memset(env_start, 0, env_end - env_start)
    ctypes.memset(arg_start, 0, arg_end - arg_start)
    encoded = title.encode()[: max(arg_end - arg_start - 1, 0)]
    ctypes.memmove(arg_start, encoded, len(encoded))


def make_mounts_private() -> None:
    """Enter a new mount namespace whose mounts never propagate back to the host.

    Must run while the process is single-threaded: the kernel refuses
    CLONE_NEWNS for a process whose threads share a filesystem context.
    """
    unshare(CLONE_NEWNS)
    mount("none", "/", None, MS_REC | MS_PRIVATE)
