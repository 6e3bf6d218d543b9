"""Sandbox lifecycle on the caller's side: create, inspect, stop and remove.

These functions run in the process of the SDK or the CLI. Create starts the
supervisor and waits for its one-line report; stop signals the supervisor and
waits for it; remove also deletes the state directory. A sandbox whose
supervisor died is reported as `crashed`, and stop or remove clean up what
it left (the container, its cgroups and the state directory).
"""

from __future__ import annotations

import json
import os
import secrets as random_source
import shutil
import signal
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sealbox.errors import PrerequisiteError, SandboxExistsError, SandboxNotFoundError, SandboxStartError
from sealbox.runtime.cgroups import remove_cgroups
from sealbox.runtime.oci import get_runtime
from sealbox.spec.sandbox import SandboxSpec
from sealbox.store import (
    STATUS_CRASHED,
    STATUS_CREATING,
    STATUS_RUNNING,
    STATUS_STOPPED,
    FORK_LOCK,
    Paths,
    Registry,
    SandboxRecord,
    name_lock,
    process_alive,
)

SUPERVISOR_START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0


@dataclass
class StartedSandbox:
    record: SandboxRecord
    lifeline_fd: int | None   # write end held by an attached creator; closing it stops the sandbox


def live_status(record: SandboxRecord) -> str:
    """Return the record's status, corrected for a supervisor that died without saying so."""
    if record.status in (STATUS_RUNNING, STATUS_CREATING) and record.supervisor_pid is not None:
        if not process_alive(record.supervisor_pid, record.supervisor_start):
            return STATUS_CRASHED
    return record.status


def create(spec: SandboxSpec, paths: Paths, *, replace_existing: bool = False) -> StartedSandbox:
    """Start a sandbox and return once it runs; raise SandboxStartError with the failing step otherwise."""
    from sealbox.gateway.placeholders import assign_placeholders
    from sealbox.images import resolve_image

    paths.ensure()
    # Resolve early so a bad reference raises ImageNotFoundError, not a start failure.
    resolve_image(spec.image, paths)
    get_runtime(spec.runtime, paths)
    check_prerequisites()
    registry = Registry(paths)
    try:
        with name_lock(paths, spec.name):
            existing = registry.get(spec.name)
            if existing is not None:
                if not replace_existing:
                    raise SandboxExistsError(spec.name)
                _remove_locked(existing, paths, registry)

            spec = replace(spec, secrets=assign_placeholders(spec.secrets))
            sandbox_id = f"{spec.name}-{random_source.token_hex(3)}"
            placeholders = {secret.name: secret.placeholder for secret in spec.secrets}
            state_dir = paths.sandbox_dir(spec.name)
            shutil.rmtree(state_dir, ignore_errors=True)
            state_dir.mkdir(parents=True, mode=0o700)
            registry.insert(spec.name, sandbox_id, spec.to_json(), placeholders)

            config: dict[str, Any] = {
                "home": str(paths.home),
                "id": sandbox_id,
                "spec": spec.to_json(),
                "secret_values": {secret.name: secret.value for secret in spec.secrets},
            }
            lifeline_read: int | None = None
            lifeline_write: int | None = None
            if not spec.detached:
                lifeline_read, lifeline_write = os.pipe()
                config["lifeline_fd"] = lifeline_read
            try:
                report = _spawn_supervisor(config, state_dir, lifeline_read)
            finally:
                if lifeline_read is not None:
                    os.close(lifeline_read)
            if not report.get("ok"):
                if lifeline_write is not None:
                    os.close(lifeline_write)
                raise SandboxStartError(f"sandbox {spec.name!r} failed to start: {report.get('error')}")
            record = registry.get(spec.name)
            assert record is not None
            return StartedSandbox(record, lifeline_write)
    finally:
        registry.close()


def _spawn_supervisor(config: dict[str, Any], state_dir: Path, lifeline_read: int | None) -> dict[str, Any]:
    """Start the supervisor as a daemon forked from this process and return its one report.

    Forking skips the interpreter start and the imports a fresh `python -m`
    would pay (about 100 ms). The intermediate child exits at once, so init
    (or the nearest subreaper) adopts the supervisor, which never becomes a
    zombie of the creator. The secret values reach it in memory.
    """
    # Import the gateway here, once per process, so forked supervisors start with it loaded.
    if config["spec"]["network"].get("enabled", True):
        import sealbox.gateway.server  # noqa: F401
    if config["spec"]["secrets"]:
        import sealbox.gateway.ca  # noqa: F401
        import sealbox.runtime.trust  # noqa: F401

    report_read, report_write = os.pipe()
    with FORK_LOCK:
        pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(report_read)
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            keep = {report_write} | ({lifeline_read} if lifeline_read is not None else set())
            _redirect_stdio(state_dir / "supervisor.stderr")
            _close_fds_except(keep)
            os.chdir("/")
            # The gateway verifies upstreams against the system trust store, not the creator's CA variables.
            clean = _supervisor_env()
            os.environ.clear()
            os.environ.update(clean)
            from sealbox.runtime.supervisor import run_supervisor

            def report(message: dict[str, Any]) -> None:
                os.write(report_write, (json.dumps(message) + "\n").encode())
                os.close(report_write)

            code = run_supervisor(config, report)
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(report_write)
    os.waitpid(pid, 0)
    with os.fdopen(report_read, "rb") as report_file:
        data = report_file.readline()
    if not data:
        return {"ok": False, "error": _supervisor_stderr(state_dir)}
    return json.loads(data)


def _redirect_stdio(stderr_path: Path) -> None:
    null = os.open(os.devnull, os.O_RDWR)
    err = os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.dup2(err, 2)
    os.close(null)
    os.close(err)


def _close_fds_except(keep: set[int]) -> None:
    """Close every inherited descriptor above stderr except `keep` (the creator's sockets, event loop, database)."""
    for entry in os.listdir("/proc/self/fd"):
        fd = int(entry)
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


def check_prerequisites() -> None:
    """Raise PrerequisiteError naming the tool and its Debian package when one is missing."""
    from sealbox.runtime.supervisor import find_init_binary

    if find_init_binary() is None:
        raise PrerequisiteError("catatonit (the sandbox init)", "catatonit")
    for tool, package in (("ip", "iproute2"), ("nft", "nftables")):
        if shutil.which(tool) is None:
            raise PrerequisiteError(tool, package)


def _supervisor_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key in ("PATH", "SEALBOX_HOME", "SEALBOX_CGROUP_PARENT", "SEALBOX_SYSTEM_RESOLVER", "PYTHONPATH", "LANG")}
    env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    return env


def _supervisor_stderr(state_dir: Any) -> str:
    try:
        text = (state_dir / "supervisor.stderr").read_text().strip()
    except OSError:
        text = ""
    return text.splitlines()[-1] if text else "the supervisor exited without a report"


def get_record(name: str, paths: Paths) -> SandboxRecord:
    registry = Registry(paths)
    try:
        record = registry.get(name)
    finally:
        registry.close()
    if record is None:
        raise SandboxNotFoundError(name)
    return record


def list_records(paths: Paths) -> list[SandboxRecord]:
    registry = Registry(paths)
    try:
        return registry.all()
    finally:
        registry.close()


def stop(name: str, paths: Paths, *, timeout: float = STOP_TIMEOUT) -> SandboxRecord:
    """Stop a sandbox and wait until its supervisor has torn everything down."""
    registry = Registry(paths)
    try:
        with name_lock(paths, name):
            record = registry.get(name)
            if record is None:
                raise SandboxNotFoundError(name)
            _stop_locked(record, paths, registry, timeout)
            record = registry.get(name)
            assert record is not None
            return record
    finally:
        registry.close()


def _stop_locked(record: SandboxRecord, paths: Paths, registry: Registry, timeout: float) -> None:
    pid = record.supervisor_pid
    if pid is not None and process_alive(pid, record.supervisor_start):
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            pidfd = None
        if pidfd is not None:
            try:
                os.kill(pid, signal.SIGTERM)
                if not _wait_pidfd(pidfd, timeout):
                    os.kill(pid, signal.SIGKILL)
                    _wait_pidfd(pidfd, 5.0)
            except ProcessLookupError:
                pass
            finally:
                os.close(pidfd)
    record = registry.get(record.name) or record
    if record.status in (STATUS_RUNNING, STATUS_CREATING):
        # The supervisor died without tearing down: clean up after it.
        _cleanup_container(record, paths)
        registry.update(record.name, status=STATUS_CRASHED, supervisor_pid=None, container_pid=None,
                        detail=record.detail or "supervisor died")
    elif record.status == STATUS_CRASHED:
        _cleanup_container(record, paths)


def _wait_pidfd(pidfd: int, timeout: float) -> bool:
    import select

    readable, _, _ = select.select([pidfd], [], [], timeout)
    return bool(readable)


def _cleanup_container(record: SandboxRecord, paths: Paths) -> None:
    runtime = get_runtime(record.spec.get("runtime", "runc"), paths)
    if runtime.state(record.id) is not None:
        runtime.kill(record.id, "KILL")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            state = runtime.state(record.id)
            if state is None or state.get("status") == "stopped":
                break
            time.sleep(0.01)
        runtime.delete(record.id)
    remove_cgroups(record.id)


def remove(name: str, paths: Paths) -> None:
    """Stop a sandbox if needed and delete its state and registry row."""
    registry = Registry(paths)
    try:
        with name_lock(paths, name):
            record = registry.get(name)
            if record is None:
                raise SandboxNotFoundError(name)
            _remove_locked(record, paths, registry)
    finally:
        registry.close()


def _remove_locked(record: SandboxRecord, paths: Paths, registry: Registry) -> None:
    _stop_locked(record, paths, registry, STOP_TIMEOUT)
    shutil.rmtree(paths.sandbox_dir(record.name), ignore_errors=True)
    registry.delete(record.name)


def is_stopped(status: str) -> bool:
    return status in (STATUS_STOPPED, STATUS_CRASHED)
