"""Child processes of a test world, each in a process group that the world owns.

Every child starts in a new process group, or joins the group of an earlier
child. Everything a child starts (nginx workers, git under fcgiwrap) stays in
that group, so stopping signals the groups by id and then waits until no
process of them is left. Children are ended by the kernel with SIGTERM when
the thread that started them exits (``setpriv --pdeathsig``), so a crashed test
process leaves no server behind.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from sealbox.errors import PrerequisiteError

logger = logging.getLogger(__name__)

SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class TestWorldError(RuntimeError):
    """A test world process failed to start or a request to it failed."""

    __test__ = False  # not a pytest test class despite the name


@dataclass
class Child:
    """A started child process and the process group it belongs to."""

    name: str
    process: subprocess.Popen[bytes]
    group: int
    log_path: Path


def find_program(name: str, package: str) -> str:
    """Return the absolute path of a required program, or raise PrerequisiteError."""
    path = shutil.which(name, path=SYSTEM_PATH)
    if path is None:
        raise PrerequisiteError(name, package, "the test world runs it")
    return path


def _pdeathsig_prefix() -> list[str]:
    """Return a command prefix that sends SIGTERM to the child when its parent thread exits."""
    # NOTE: the kernel signals when the starting *thread* exits, so start a
    # world from a thread that lives as long as the world does.
    setpriv = shutil.which("setpriv", path=SYSTEM_PATH)
    return [setpriv, "--pdeathsig", "TERM", "--"] if setpriv else []


def group_members(groups: set[int]) -> list[int]:
    """Return the PIDs of live processes (zombies included) in the given process groups."""
    members: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) in groups:
            members.append(int(entry))
    return sorted(members)


def log_tail(path: Path, size: int = 2000) -> str:
    """Return the last size characters of a log file for an error message."""
    try:
        return path.read_text(errors="replace")[-size:]
    except OSError:
        return "(no log)"


class ChildProcesses:
    """The child processes of one world, logging to files in log_dir."""

    def __init__(self, log_dir: Path, cwd: Path) -> None:
        self.log_dir = log_dir
        self.cwd = cwd
        self.children: list[Child] = []

    def spawn(
        self,
        name: str,
        argv: list[str],
        *,
        env: dict[str, str],
        log_name: str | None = None,
        pass_fds: tuple[int, ...] = (),
        stdin: int | None = subprocess.DEVNULL,
        stdout: int | None = None,
        group: int | None = None,
    ) -> Child:
        """Start a child in a new process group, or in group, with stderr in ``<log_name>.log``."""
        log_path = self.log_dir / f"{log_name or name}.log"
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                _pdeathsig_prefix() + argv,
                env=env,
                pass_fds=pass_fds,
                stdin=stdin,
                stdout=stdout if stdout is not None else log,
                stderr=log,
                cwd=self.cwd,
                process_group=0 if group is None else group,
            )
        child = Child(name, process, group if group is not None else process.pid, log_path)
        self.children.append(child)
        logger.debug("started %s (pid %d)", name, process.pid)
        return child

    def raise_if_exited(self) -> None:
        """Raise TestWorldError, with the log's end, if any child has exited."""
        for child in self.children:
            if child.process.poll() is not None:
                raise TestWorldError(
                    f"test world process {child.name} exited with code {child.process.returncode}; "
                    f"log {child.log_path}:\n{log_tail(child.log_path)}"
                )

    def process_ids(self) -> list[int]:
        """Return the PIDs of every live process in the children's groups."""
        return group_members({child.group for child in self.children})

    def pids_by_name(self) -> dict[str, int]:
        """Return each child's PID by child name."""
        return {child.name: child.process.pid for child in self.children}

    def stop(self, timeout: float) -> None:
        """Send SIGTERM to every group, wait for all members, and SIGKILL what is left after timeout."""
        groups = {child.group for child in self.children}
        for group in groups:
            self._signal(group, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in self.children:
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("%s (pid %d) ignored SIGTERM; sending SIGKILL", child.name, child.process.pid)
                self._signal(child.group, signal.SIGKILL)
                child.process.wait()
        # Processes that the children started may outlive them until their new parent reaps them.
        while group_members(groups) and time.monotonic() < deadline:
            time.sleep(0.05)
        leftovers = group_members(groups)
        if leftovers:
            logger.warning("killing leftover test world processes %s", leftovers)
            for group in groups:
                self._signal(group, signal.SIGKILL)
        self.children.clear()

    @staticmethod
    def _signal(group: int, signum: int) -> None:
        try:
            os.killpg(group, signum)
        except ProcessLookupError:
            pass
