"""The seccomp profile every sandbox runs under.

Allow by default and reject, with EPERM, the system calls that reach kernel
state outside the container: mounts and new mount API, module loading, kexec,
BPF, the kernel keyring, namespace creation and joining, clock and swap
control, and handle-based file opening (the classic container escape). clone3
fails with ENOSYS so glibc falls back to clone, whose flags can be filtered;
clone is rejected only when it asks for a new user namespace.
"""

from __future__ import annotations

import errno
import platform
from typing import Any

DENIED_SYSCALLS = (
    "acct", "add_key", "bpf", "clock_adjtime", "clock_settime", "create_module", "delete_module",
    "finit_module", "fsconfig", "fsmount", "fsopen", "fspick", "get_kernel_syms", "init_module",
    "ioperm", "iopl", "kexec_file_load", "kexec_load", "keyctl", "lookup_dcookie", "mount",
    "mount_setattr", "move_mount", "name_to_handle_at", "nfsservctl", "open_by_handle_at",
    "open_tree", "perf_event_open", "pivot_root", "query_module", "quotactl", "reboot",
    "request_key", "setns", "settimeofday", "stime", "swapoff", "swapon", "syslog", "umount",
    "umount2", "unshare", "uselib", "userfaultfd", "vhangup",
)

CLONE_NEWUSER = 0x10000000

_ARCHITECTURES = {
    "x86_64": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    "aarch64": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
}


def seccomp_profile() -> dict[str, Any]:
    """Return the `linux.seccomp` section of an OCI runtime config."""
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": _ARCHITECTURES.get(platform.machine(), []),
        "syscalls": [
            {"names": list(DENIED_SYSCALLS), "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM},
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOSYS},
            {
                "names": ["clone"],
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": errno.EPERM,
                # On x86_64 and arm64 the flags are clone's first argument.
                "args": [{"index": 0, "value": CLONE_NEWUSER, "valueTwo": CLONE_NEWUSER, "op": "SCMP_CMP_MASKED_EQ"}],
            },
        ],
    }
