"""Run commands inside a running sandbox through the OCI runtime's `exec`.

Output is streamed as it arrives, stdout and stderr kept apart, so a command
can print gigabytes without the caller holding them. A failure of the runtime
to start the command (not found, not executable) becomes the exit code a
shell would give (127, 126) with a shell-style message on stderr. A timeout
kills the command's whole process tree.
"""

from __future__ import annotations

import asyncio
import os
import secrets as random_source
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Mapping, Sequence, Union

from sealbox.errors import ExecTimeoutError
from sealbox.runtime.cgroups import memory_cgroup_files
from sealbox.runtime.oci import get_runtime
from sealbox.runtime.process_env import ProcessSettings
from sealbox.store import Paths

READ_SIZE = 256 * 1024
RUNTIME_FAILURE_PREFIX = b"exec failed: "


@dataclass(frozen=True)
class Stdout:
    data: bytes


@dataclass(frozen=True)
class Stderr:
    data: bytes


@dataclass(frozen=True)
class Exit:
    exit_code: int
    oom_killed: bool = False

    @property
    def signal(self) -> int | None:
        """The signal that ended the command when the exit code is 128 + N, else None."""
        return self.exit_code - 128 if 128 < self.exit_code < 160 else None


ExecEvent = Union[Stdout, Stderr, Exit]


async def exec_stream(
    paths: Paths,
    name: str,
    args: Sequence[str],
    *,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
    timeout: float | None = None,
    user: str | None = None,
) -> AsyncIterator[ExecEvent]:
    """Run `args` in the sandbox and yield its output chunks, then one Exit."""
    state_dir = paths.sandbox_dir(name)
    settings = ProcessSettings.load(state_dir)
    runtime = get_runtime(settings.runtime, paths)
    exec_dir = state_dir / "exec"
    exec_dir.mkdir(exist_ok=True)
    token = random_source.token_hex(6)
    pid_file = exec_dir / f"{token}.pid"
    log_file = exec_dir / f"{token}.log"
    command = runtime.exec_command(
        settings.container_id,
        list(args),
        user=user or settings.user,
        cwd=cwd or settings.workdir,
        env=dict(env or {}),
        pid_file=pid_file,
        log_file=log_file,
    )
    oom_before = _oom_kills(settings.container_id)
    process = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    queue: asyncio.Queue[ExecEvent | None] = asyncio.Queue(maxsize=16)

    async def pump(stream: asyncio.StreamReader, kind: type) -> None:
        while True:
            chunk = await stream.read(READ_SIZE)
            if not chunk:
                break
            await queue.put(kind(chunk))
        await queue.put(None)

    async def feed() -> None:
        assert process.stdin is not None
        try:
            process.stdin.write(stdin or b"")
            await process.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            process.stdin.close()

    assert process.stdout is not None and process.stderr is not None
    tasks = [asyncio.create_task(pump(process.stdout, Stdout)), asyncio.create_task(pump(process.stderr, Stderr))]
    if stdin is not None:
        tasks.append(asyncio.create_task(feed()))
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    # The runtime reports a failed start ("exec failed: ...") on stderr and exits
    # 255. Such a first chunk is held back until the exit code shows whether it
    # was that failure (replaced by a shell-style message) or the command's own.
    held_stderr = bytearray()
    holding = True
    open_streams = 2
    try:
        while open_streams:
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                raise asyncio.TimeoutError
            event = await asyncio.wait_for(queue.get(), remaining)
            if event is None:
                open_streams -= 1
                continue
            if isinstance(event, Stderr) and holding:
                if (held_stderr + event.data).startswith(RUNTIME_FAILURE_PREFIX[: len(held_stderr) + len(event.data)]) \
                        and len(held_stderr) + len(event.data) < 4096:
                    held_stderr += event.data
                    continue
                holding = False
                if held_stderr:
                    yield Stderr(bytes(held_stderr))
                    held_stderr.clear()
            elif isinstance(event, Stdout):
                holding = False
                if held_stderr:
                    yield Stderr(bytes(held_stderr))
                    held_stderr.clear()
            yield event
        remaining = None if deadline is None else max(deadline - loop.time(), 0.001)
        code = await asyncio.wait_for(process.wait(), remaining)
    except asyncio.TimeoutError:
        _kill_tree(pid_file, process.pid)
        await process.wait()
        raise ExecTimeoutError(" ".join(args), timeout or 0.0) from None
    finally:
        for task in tasks:
            task.cancel()
        if process.returncode is None:
            _kill_tree(pid_file, process.pid)
            await process.wait()
        for path in (pid_file, log_file):
            try:
                path.unlink()
            except FileNotFoundError:
                pass
    code, message = _start_failure(code, bytes(held_stderr), args)
    if message:
        yield Stderr(message)
    elif held_stderr:
        yield Stderr(bytes(held_stderr))
    yield Exit(code, oom_killed=_oom_kills(settings.container_id) > oom_before)


def _start_failure(code: int, stderr: bytes, args: Sequence[str]) -> tuple[int, bytes]:
    """Map runc's own start failure (exit 255 with its error on stderr) to a shell's 127 or 126."""
    if code != 255 or not stderr.startswith(RUNTIME_FAILURE_PREFIX):
        return code, b""
    text = stderr.decode(errors="replace")
    program = args[0] if args else ""
    if "executable file not found" in text or "no such file or directory" in text:
        return 127, f"sealbox: {program}: command not found\n".encode()
    if "permission denied" in text:
        return 126, f"sealbox: {program}: Permission denied\n".encode()
    return code, b""


def _oom_kills(container_id: str) -> int:
    """Return the memory cgroup's count of OOM kills (cgroup v1 or v2), 0 if unknown."""
    for path, key in memory_cgroup_files(container_id):
        try:
            for line in path.read_text().splitlines():
                field, _, value = line.partition(" ")
                if field == key:
                    return int(value)
        except OSError:
            continue
    return 0


def _descendants(pid: int) -> set[int]:
    found: set[int] = set()
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except FileNotFoundError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{current}/task/{task}/children") as children_file:
                    children = [int(child) for child in children_file.read().split()]
            except (FileNotFoundError, ProcessLookupError):
                continue
            for child in children:
                if child not in found:
                    found.add(child)
                    pending.append(child)
    return found


def _kill_tree(pid_file: Path, runtime_pid: int) -> None:
    """SIGKILL the command and every process below it, and its process group.

    Processes are stopped first so that none can fork while the tree is walked;
    the walk repeats until nothing is left.
    """
    try:
        root = int(pid_file.read_text())
    except (OSError, ValueError):
        root = None
    for _ in range(20):
        victims = set()
        if root is not None:
            victims |= {root} | _descendants(root)
        victims |= _descendants(runtime_pid) | {runtime_pid}
        alive = [pid for pid in victims if os.path.exists(f"/proc/{pid}")]
        if not alive:
            return
        for pid in alive:
            try:
                os.kill(pid, signal.SIGSTOP)
            except ProcessLookupError:
                pass
        if root is not None:
            try:
                os.killpg(os.getpgid(root), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
