"""`sealbox doctor`: check every prerequisite and print how to fix each missing one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def _tool(name: str, package: str, required: bool = True) -> Check:
    path = shutil.which(name)
    if path:
        return Check(name, True, path)
    return Check(name, not required, "not found" + ("" if required else " (optional)"), f"apt-get install {package}")


def checks() -> list[Check]:
    results = [
        Check("root", os.geteuid() == 0, f"euid {os.geteuid()}", "run sealbox as root (sudo)"),
        Check("python", sys.version_info >= (3, 11), sys.version.split()[0], "install Python 3.11 or newer"),
        _tool("runc", "runc"),
        _tool("nft", "nftables"),
        _tool("ip", "iproute2"),
        Check("catatonit", any(os.access(p, os.X_OK) for p in ("/usr/bin/catatonit", "/usr/libexec/podman/catatonit")),
              "sandbox init", "apt-get install catatonit"),
        _tool("runsc", "runsc", required=False),
        Check("overlayfs", "overlay" in open("/proc/filesystems").read(), "/proc/filesystems",
              "load the overlay kernel module (modprobe overlay)"),
    ]
    cgroup2 = os.path.exists("/sys/fs/cgroup/cgroup.controllers")
    cgroup1 = os.path.isdir("/sys/fs/cgroup/memory")
    results.append(Check("cgroups", cgroup1 or cgroup2,
                         "v2 (unified)" if cgroup2 else ("v1 (hybrid or legacy)" if cgroup1 else "not mounted"),
                         "mount the cgroup file system"))
    if shutil.which("nft"):
        probe = subprocess.run(["unshare", "--net", "nft", "add", "table", "inet", "sealbox_probe"],
                               capture_output=True, text=True)
        results.append(Check("nftables in a namespace", probe.returncode == 0,
                             probe.stderr.strip() or "works", "a kernel with nf_tables and nat support"))
    with open("/proc/cpuinfo") as cpuinfo:
        flags = cpuinfo.read()
    virtualization = " vmx" in flags or " svm" in flags
    results.append(Check("hardware virtualization (optional)", True,
                         "vmx/svm present" if virtualization else "no vmx/svm flag, so microVM runtimes cannot run here; "
                         "runc and gVisor do not need it"))
    return results


def run_checks() -> int:
    from rich.console import Console
    from rich.table import Table

    table = Table("CHECK", "RESULT", "DETAIL", "FIX", box=None)
    failed = 0
    for check in checks():
        if not check.ok:
            failed += 1
        table.add_row(check.name, "[green]ok[/green]" if check.ok else "[red]missing[/red]", check.detail,
                      "" if check.ok else check.fix)
    Console().print(table)
    return 1 if failed else 0
