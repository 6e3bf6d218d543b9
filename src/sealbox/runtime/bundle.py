"""The OCI bundle: the `config.json` that runc or runsc starts a sandbox from.

The container gets new pid, mount, ipc, uts and cgroup namespaces and joins the
sandbox's own loopback-only network namespace by path. Its init process is
catatonit in pause mode, which only reaps orphans; commands run through the
runtime's `exec`. Capabilities are the default set of container engines minus
NET_RAW, with no_new_privileges, the seccomp profile of seccomp.py and the
usual masked and read-only /proc and /sys paths.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from sealbox.runtime.seccomp import seccomp_profile
from sealbox.spec.sandbox import SandboxSpec

# The default capability set of Docker and Podman, without CAP_NET_RAW: raw
# sockets are useless in a loopback-only namespace and only help spoofing.
CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_SETGID", "CAP_SETUID",
    "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
)

MASKED_PATHS = (
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
    "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

INIT_PATH = "/.sealbox/init"
CFS_PERIOD_US = 100_000


@dataclass(frozen=True)
class BundleInputs:
    """Inputs of the bundle beyond the spec: host paths and resolved ids."""

    rootfs: str
    netns_path: str
    cgroup_path: str
    init_binary: str
    uid: int
    gid: int
    env: Mapping[str, str]
    extra_mounts: Sequence[Mapping[str, Any]] = ()


def build_config(spec: SandboxSpec, inputs: BundleInputs) -> dict[str, Any]:
    """Return the OCI runtime config for one sandbox."""
    resources: dict[str, Any] = {"pids": {"limit": spec.pids}, "devices": [{"allow": False, "access": "rwm"}]}
    if spec.memory_bytes is not None:
        # Equal memory and memory+swap limits: the sandbox cannot escape into swap.
        resources["memory"] = {"limit": spec.memory_bytes, "swap": spec.memory_bytes}
    if spec.cpus is not None:
        resources["cpu"] = {"quota": int(spec.cpus * CFS_PERIOD_US), "period": CFS_PERIOD_US}

    # The runtime cannot raise a limit above the hard limit it inherited.
    nofile = min(1048576, resource.getrlimit(resource.RLIMIT_NOFILE)[1])

    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
        {"destination": INIT_PATH, "type": "bind", "source": inputs.init_binary, "options": ["rbind", "ro", "nosuid", "nodev"]},
    ]
    for volume in spec.volumes:
        options = ["rbind", "nosuid", "nodev"] + (["ro"] if volume.read_only else ["rw"])
        mounts.append({"destination": volume.destination, "type": "bind", "source": volume.source, "options": options})
    mounts.extend(dict(mount) for mount in inputs.extra_mounts)

    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": inputs.uid, "gid": inputs.gid},
            "args": [INIT_PATH, "-P"],
            "env": [f"{key}={value}" for key, value in inputs.env.items()],
            "cwd": "/",
            "capabilities": {key: list(CAPABILITIES) for key in ("bounding", "effective", "permitted")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile}],
            "noNewPrivileges": True,
        },
        "root": {"path": inputs.rootfs, "readonly": False},
        "hostname": spec.hostname or spec.name.replace("_", "-").replace(".", "-")[:63],
        "mounts": mounts,
        "linux": {
            "resources": resources,
            "cgroupsPath": inputs.cgroup_path,
            "namespaces": [
                {"type": "pid"},
                {"type": "ipc"},
                {"type": "uts"},
                {"type": "mount"},
                {"type": "cgroup"},
                {"type": "network", "path": inputs.netns_path},
            ],
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
            "seccomp": seccomp_profile(),
        },
    }
