"""Drivers for OCI runtimes: runc (default) and runsc (gVisor).

A driver turns lifecycle steps into command lines of the runtime binary and
runs them. Exec is the exception: the caller runs the command line itself so
that it can stream the output. Each runtime keeps its state under its own
`--root`, inside `$SEALBOX_HOME`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from sealbox.errors import PrerequisiteError, SandboxStartError
from sealbox.store import Paths


class RuntimeCommandError(RuntimeError):
    """A runtime command exited non-zero; the message carries its stderr."""


@dataclass(frozen=True)
class OciRuntime:
    """One OCI runtime binary with its global flags."""

    name: str
    binary: str
    global_args: tuple[str, ...]

    def command(self, *args: str) -> list[str]:
        return [self.binary, *self.global_args, *args]

    def _run(self, *args: str, check: bool = True, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        completed = subprocess.run(self.command(*args), capture_output=True, text=True, timeout=timeout)
        if check and completed.returncode != 0:
            raise RuntimeCommandError(
                f"{self.name} {' '.join(args[:1])} failed with exit code {completed.returncode}: "
                f"{_runtime_message(completed.stderr)}"
            )
        return completed

    def run_detached(self, container_id: str, bundle: Path, pid_file: Path, log_file: Path) -> None:
        """Start the container's init in the background and return once it runs.

        The init inherits the runtime's stdio, so stdio goes to `log_file`
        rather than to pipes that would stay open for the sandbox's lifetime.
        """
        with open(log_file, "ab") as log:
            completed = subprocess.run(
                self.command("run", "--detach", "--bundle", str(bundle), "--pid-file", str(pid_file), container_id),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                timeout=60.0,
            )
        if completed.returncode != 0:
            raise SandboxStartError(
                f"{self.name} run failed with exit code {completed.returncode}: "
                f"{_runtime_message(log_file.read_text(errors='replace'))}"
            )

    def exec_command(
        self,
        container_id: str,
        args: Sequence[str],
        *,
        user: str | None,
        cwd: str | None,
        env: Mapping[str, str],
        pid_file: Path | None = None,
        log_file: Path | None = None,
    ) -> list[str]:
        """Return the command line that runs `args` inside the container."""
        command = [self.binary, *self.global_args]
        if log_file is not None:
            command += ["--log", str(log_file), "--log-format", "json"]
        command.append("exec")
        if user is not None:
            command += ["--user", user]
        if cwd is not None:
            command += ["--cwd", cwd]
        for key, value in env.items():
            command += ["--env", f"{key}={value}"]
        if pid_file is not None:
            command += ["--pid-file", str(pid_file)]
        # runc takes no "--": flag parsing stops at the container id.
        command += [container_id, *args]
        return command

    def kill(self, container_id: str, signal: str = "KILL") -> None:
        self._run("kill", "--all", container_id, signal, check=False) if self.name == "runc" else self._run(
            "kill", container_id, signal, check=False
        )

    def delete(self, container_id: str) -> None:
        completed = self._run("delete", "--force", container_id, check=False)
        if completed.returncode != 0 and "does not exist" not in completed.stderr:
            raise RuntimeCommandError(f"{self.name} delete {container_id} failed: {_runtime_message(completed.stderr)}")

    def state(self, container_id: str) -> dict | None:
        completed = self._run("state", container_id, check=False)
        if completed.returncode != 0:
            return None
        return json.loads(completed.stdout)


def _runtime_message(stderr: str) -> str:
    """Extract the error text from runc's logrus output ('level=error msg="..."') or return stderr."""
    lines = [line for line in stderr.strip().splitlines() if line]
    for line in reversed(lines):
        if line.startswith("{"):
            try:
                return str(json.loads(line).get("msg", line))
            except json.JSONDecodeError:
                continue
        marker = 'msg="'
        if marker in line:
            return line[line.index(marker) + len(marker) :].rstrip('"').replace('\\"', '"')
    return " ".join(lines) or "(no output)"


def get_runtime(name: str, paths: Paths) -> OciRuntime:
    """Return the driver for 'runc' or 'gvisor', or raise PrerequisiteError if its binary is missing."""
    if name == "runc":
        binary = shutil.which("runc")
        if binary is None:
            raise PrerequisiteError("runc", "runc")
        return OciRuntime("runc", binary, ("--root", str(paths.runc_root)))
    if name == "gvisor":
        binary = shutil.which("runsc")
        if binary is None:
            raise PrerequisiteError("runsc (gVisor)", "runsc")
        # ptrace is the platform that works without hardware virtualization;
        # network=host makes gVisor use the namespace's kernel network stack,
        # so the nftables forcing rules apply to it as they do to runc.
        return OciRuntime(
            "runsc",
            binary,
            ("--root", str(paths.runsc_root), "--platform=ptrace", "--network=host"),
        )
    raise PrerequisiteError(f"runtime {name!r}", None, "known runtimes are runc and gvisor")
