"""The async Python API: Sandbox, ExecOutput and the exec stream events.

The names follow microsandbox's SDK (`Sandbox.create`, `shell`, `exec`,
`stop`, `stop_and_wait`) so scripts written for it port with few changes.
Blocking work (starting the supervisor, registry access) runs in a worker
thread so the caller's event loop keeps running.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Mapping, Sequence

from sealbox.errors import SandboxNotRunningError
from sealbox.runtime import execution, manager
from sealbox.runtime.execution import Exit, Stderr, Stdout
from sealbox.spec.network import Network
from sealbox.spec.sandbox import SandboxSpec, Volume
from sealbox.spec.secret import Secret
from sealbox.store import STATUS_RUNNING, Paths, SandboxRecord


@dataclass(frozen=True)
class ExecOutput:
    """The result of a finished command: exit code and the full stdout and stderr."""

    exit_code: int
    stdout_bytes: bytes
    stderr_bytes: bytes
    oom_killed: bool = False

    @property
    def success(self) -> bool:
        return self.exit_code == 0

    @property
    def signal(self) -> int | None:
        """The signal that ended the command (exit code 128 + N), or None."""
        return self.exit_code - 128 if 128 < self.exit_code < 160 else None

    @property
    def stdout_text(self) -> str:
        return self.stdout_bytes.decode("utf-8", errors="replace")

    @property
    def stderr_text(self) -> str:
        return self.stderr_bytes.decode("utf-8", errors="replace")


class Sandbox:
    """A handle on one sandbox, running or stopped."""

    def __init__(self, record: SandboxRecord, paths: Paths, lifeline_fd: int | None = None) -> None:
        self._record = record
        self._paths = paths
        self._lifeline_fd = lifeline_fd

    # -- construction ----------------------------------------------------------

    @classmethod
    async def create(
        cls,
        name: str,
        *,
        image: str = "host",
        memory: int | float | str | None = None,
        cpus: int | float | str | None = None,
        pids: int | None = None,
        user: str | None = None,
        env: Mapping[str, str] | None = None,
        workdir: str = "/",
        hostname: str | None = None,
        volumes: Mapping[str, str] | Sequence[Volume | str] | None = None,
        network: Network | None = None,
        secrets: Sequence[Secret] = (),
        upstream_ca: Sequence[str] = (),
        runtime: str = "runc",
        replace: bool = False,
        detached: bool = False,
        home: str | os.PathLike[str] | None = None,
    ) -> Sandbox:
        """Create and start a sandbox.

        `memory` is MiB when a number, or a size such as "512M"; `volumes` maps
        sandbox paths to host paths (or takes "SRC:DST[:ro]" strings). An
        attached sandbox (the default) stops when this process exits, even on
        SIGKILL; a detached one keeps running and is reached with `Sandbox.get`.
        """
        spec = SandboxSpec.build(
            name,
            image=image,
            memory=memory,
            cpus=cpus,
            pids=pids if pids is not None else 1024,
            user=user,
            env=env,
            workdir=workdir,
            hostname=hostname,
            volumes=volumes,
            detached=detached,
            runtime=runtime,
            network=network,
            secrets=secrets,
            upstream_ca=upstream_ca,
        )
        return await cls.create_from_spec(spec, replace=replace, home=home)

    @classmethod
    async def create_from_spec(
        cls, spec: SandboxSpec, *, replace: bool = False, home: str | os.PathLike[str] | None = None
    ) -> Sandbox:
        paths = _paths(home)
        started = await asyncio.to_thread(manager.create, spec, paths, replace_existing=replace)
        return cls(started.record, paths, started.lifeline_fd)

    @classmethod
    async def get(cls, name: str, *, home: str | os.PathLike[str] | None = None) -> Sandbox:
        paths = _paths(home)
        record = await asyncio.to_thread(manager.get_record, name, paths)
        return cls(record, paths)

    @classmethod
    async def list(cls, *, home: str | os.PathLike[str] | None = None) -> list[Sandbox]:
        paths = _paths(home)
        records = await asyncio.to_thread(manager.list_records, paths)
        return [cls(record, paths) for record in records]

    # -- properties --------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._record.name

    @property
    def id(self) -> str:
        return self._record.id

    @property
    def spec(self) -> dict[str, Any]:
        """The sandbox's spec as stored in the registry (secret values left out)."""
        return self._record.spec

    @property
    def placeholders(self) -> dict[str, str]:
        """The placeholder in each secret's environment variable inside the sandbox."""
        return dict(self._record.placeholders)

    @property
    def audit_path(self) -> str:
        return str(self._paths.sandbox_dir(self.name) / "audit.jsonl")

    async def status(self) -> str:
        self._record = await asyncio.to_thread(manager.get_record, self.name, self._paths)
        return manager.live_status(self._record)

    # -- commands ----------------------------------------------------------------

    async def exec_stream(
        self,
        command: str | Sequence[str],
        args: Sequence[str] = (),
        *,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        stdin: bytes | None = None,
        timeout: float | None = None,
        user: str | None = None,
    ) -> AsyncIterator[Stdout | Stderr | Exit]:
        """Run a command and yield Stdout and Stderr chunks as they arrive, then one Exit.

        The command is `command` plus `args`, or a whole argv list passed as `command`.
        """
        command, args = _argv(command, args)
        status = await self.status()
        if status != STATUS_RUNNING:
            raise SandboxNotRunningError(self.name, status)
        async for event in execution.exec_stream(
            self._paths, self.name, [command, *args], cwd=cwd, env=env, stdin=stdin, timeout=timeout, user=user
        ):
            yield event

    async def exec(
        self,
        command: str | Sequence[str],
        args: Sequence[str] = (),
        *,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        stdin: bytes | None = None,
        timeout: float | None = None,
        user: str | None = None,
    ) -> ExecOutput:
        """Run a command to completion and return its exit code and output."""
        stdout = bytearray()
        stderr = bytearray()
        exit_event = Exit(-1)
        async for event in self.exec_stream(command, args, cwd=cwd, env=env, stdin=stdin, timeout=timeout, user=user):
            if isinstance(event, Stdout):
                stdout += event.data
            elif isinstance(event, Stderr):
                stderr += event.data
            else:
                exit_event = event
        return ExecOutput(exit_event.exit_code, bytes(stdout), bytes(stderr), exit_event.oom_killed)

    async def shell(self, script: str, **options: Any) -> ExecOutput:
        """Run `script` with /bin/sh -c."""
        return await self.exec("/bin/sh", ["-c", script], **options)

    # -- lifecycle ---------------------------------------------------------------

    async def stop(self) -> None:
        """Ask the sandbox to stop and wait until it has released everything."""
        self._record = await asyncio.to_thread(manager.stop, self.name, self._paths)
        self._close_lifeline()

    async def stop_and_wait(self) -> None:
        await self.stop()

    async def remove(self) -> None:
        """Stop the sandbox if it runs and delete its state."""
        await asyncio.to_thread(manager.remove, self.name, self._paths)
        self._close_lifeline()

    def _close_lifeline(self) -> None:
        if self._lifeline_fd is not None:
            os.close(self._lifeline_fd)
            self._lifeline_fd = None

    async def __aenter__(self) -> Sandbox:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.remove()

    def __repr__(self) -> str:
        return f"<Sandbox {self.name!r} {self._record.status}>"


def _argv(command: str | Sequence[str], args: Sequence[str]) -> tuple[str, list[str]]:
    if isinstance(command, str):
        return command, list(args)
    argv = list(command)
    if args or not argv:
        raise TypeError("pass exec('program', ['arg', ...]) or exec(['program', 'arg', ...]), not both forms")
    return argv[0], argv[1:]


def _paths(home: str | os.PathLike[str] | None) -> Paths:
    return Paths(Path(home)) if home is not None else Paths.default()
