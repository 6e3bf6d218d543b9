"""The per-sandbox supervisor process.

`Sandbox.create` forks it and calls `run_supervisor` with the configuration:
the spec and the secret values, which exist only in this process's memory.
(`python -m sealbox.runtime.supervisor` reads the same configuration as JSON
on stdin.) It sets the sandbox up and reports the outcome once. Then it serves
the gateway until a stop is requested, its creator dies (attached sandboxes
hold a lifeline pipe whose end-of-file means that), or the container's init
exits. It then tears everything down.

Setup order:
1. private mount namespace and child subreaper;
2. the loopback-only network namespace and the gateway's sockets in it;
3. the root filesystem (overlays), /etc files, and the CA trusted inside;
4. the OCI bundle, then `runc run --detach`;
5. the registry row goes to `running`, process.json is written, and the
   creator gets the report.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from sealbox.errors import SealboxError
from sealbox.images import resolve_image
from sealbox.netns.namespace import ListenerSockets, NetworkNamespace, bind_listeners, create_namespace
from sealbox.runtime.bundle import BundleInputs, build_config
from sealbox.runtime.cgroups import cgroup_path, remove_cgroups
from sealbox.runtime.linux import (
    PR_SET_CHILD_SUBREAPER,
    clear_command_line_and_environ,
    make_mounts_private,
    prctl,
    set_process_name,
)
from sealbox.runtime.oci import get_runtime
from sealbox.runtime.process_env import ProcessSettings, base_environment
from sealbox.runtime.rootfs import assemble_rootfs, unmount_rootfs, write_etc
from sealbox.spec.sandbox import SandboxSpec
from sealbox.store import STATUS_CRASHED, STATUS_RUNNING, STATUS_STOPPED, Paths, Registry, process_start_time

log = logging.getLogger("sealbox.supervisor")

INIT_BINARY_CANDIDATES = ("/usr/bin/catatonit", "/usr/libexec/podman/catatonit")


def find_init_binary() -> str | None:
    for candidate in INIT_BINARY_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    return None


class Supervisor:
    def __init__(self, config: dict[str, Any]) -> None:
        self.paths = Paths(Path(config["home"]))
        self.sandbox_id: str = config["id"]
        secret_values: dict[str, str] = config.get("secret_values", {})
        spec = SandboxSpec.from_json(config["spec"])
        # Put the values back into the secrets; they never leave this process.
        self.spec = replace(
            spec, secrets=tuple(replace(secret, value=secret_values.get(secret.name)) for secret in spec.secrets)
        )
        self.lifeline_fd: int | None = config.get("lifeline_fd")
        self.state_dir = self.paths.sandbox_dir(self.spec.name)
        self.runtime = get_runtime(self.spec.runtime, self.paths)
        self.layout = resolve_image(self.spec.image, self.paths)
        self.namespace: NetworkNamespace | None = None
        self.sockets: ListenerSockets | None = None
        self.gateway: Any = None
        self.container_pid: int | None = None
        self.container_started = False
        self.stop_reason = "stopped"
        self.crashed = False

    # -- setup ---------------------------------------------------------------

    def _step(self, description: str) -> None:
        now = time.monotonic()
        log.info("sandbox %s: %s took %.1f ms", self.spec.name, description, (now - self._step_started) * 1000)
        self._step_started = now

    def setup(self) -> None:
        self._step_started = time.monotonic()
        # Forked from the creator, the supervisor would show the creator's command line and
        # environment, which may contain secret values; both are replaced.
        set_process_name(f"sbx-{self.spec.name}")
        clear_command_line_and_environ(f"sealbox supervisor {self.spec.name}")
        make_mounts_private()
        prctl(PR_SET_CHILD_SUBREAPER, 1)

        network = self.spec.network
        self.namespace = create_namespace(forward_to_gateway=network.enabled)
        if network.enabled:
            self.sockets = bind_listeners(self.namespace)
        self._step("network namespace")

        rootfs = assemble_rootfs(self.layout, self.state_dir)
        hostname = self.spec.hostname or self.spec.name.replace("_", "-").replace(".", "-")[:63]
        user = write_etc(rootfs, hostname=hostname, user=self.spec.user, add_hosts=dict(network.add_hosts))
        ca_env: dict[str, str] = {}
        ca = None
        if self.spec.secrets and network.enabled:
            from sealbox.gateway.ca import CertificateAuthority
            from sealbox.runtime.trust import install_ca

            hosts = [pattern for secret in self.spec.secrets for pattern in secret.allow_hosts]
            ca = CertificateAuthority.generate(self.spec.name, permitted_hosts=hosts)
            ca_env = install_ca(rootfs, ca.cert_pem, name=self.spec.name)
        self._step("root filesystem and trust")
        for path in self.spec.upstream_ca:
            if not os.path.isfile(path):
                raise SealboxError(f"upstream CA file {path} does not exist on the host")
        for volume in self.spec.volumes:
            if not os.path.exists(volume.source):
                raise SealboxError(f"volume source {volume.source} does not exist on the host")

        placeholders = {secret.name: secret.placeholder for secret in self.spec.secrets if secret.placeholder}
        env = base_environment(home=user.home, hostname=hostname, placeholders=placeholders, ca_env=ca_env,
                               user_env=dict(self.spec.env))
        if network.enabled:
            from sealbox.gateway.server import Gateway

            self.gateway = Gateway(
                sandbox=self.spec.name,
                network=network,
                secrets=self.spec.secrets,
                upstream_ca=self.spec.upstream_ca,
                ca=ca,
                audit_path=self.state_dir / "audit.jsonl",
                namespace=self.namespace,
            )

        init_binary = find_init_binary()
        if init_binary is None:
            raise SealboxError("catatonit is required as the sandbox init; install it with `apt-get install catatonit`")
        bundle = self.state_dir / "bundle"
        bundle.mkdir(exist_ok=True)
        config = build_config(
            self.spec,
            BundleInputs(
                rootfs=str(rootfs),
                netns_path=self.namespace.path,
                cgroup_path=cgroup_path(self.sandbox_id),
                init_binary=init_binary,
                uid=0,
                gid=0,
                env=env,
            ),
        )
        (bundle / "config.json").write_text(json.dumps(config, indent=1))

        self._step("gateway and bundle")
        pid_file = self.state_dir / "init.pid"
        self.container_started = True
        self.runtime.run_detached(self.sandbox_id, bundle, pid_file, self.state_dir / "runtime.log")
        self.container_pid = int(pid_file.read_text())
        self._step(f"{self.runtime.name} run")

        workdir = self.spec.workdir
        (rootfs / workdir.lstrip("/")).mkdir(parents=True, exist_ok=True)
        ProcessSettings(
            container_id=self.sandbox_id, runtime=self.spec.runtime, user=user.spec, workdir=workdir, env={}
        ).save(self.state_dir)

    # -- serving -------------------------------------------------------------

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        stopped = asyncio.Event()

        def request_stop(reason: str) -> None:
            if not stopped.is_set():
                self.stop_reason = reason
                stopped.set()

        loop.add_signal_handler(signal.SIGTERM, request_stop, "stopped")
        loop.add_signal_handler(signal.SIGINT, request_stop, "stopped")
        # Children are reaped through pidfds and subprocess; SIGCHLD needs no action.
        loop.add_signal_handler(signal.SIGHUP, lambda: None)

        if self.lifeline_fd is not None:
            os.set_blocking(self.lifeline_fd, False)

            def lifeline_readable() -> None:
                try:
                    data = os.read(self.lifeline_fd, 4096)  # type: ignore[arg-type]
                except BlockingIOError:
                    return
                if not data:
                    loop.remove_reader(self.lifeline_fd)  # type: ignore[arg-type]
                    request_stop("creator exited")

            loop.add_reader(self.lifeline_fd, lifeline_readable)

        assert self.container_pid is not None
        init_fd = os.pidfd_open(self.container_pid)

        def init_exited() -> None:
            loop.remove_reader(init_fd)
            self.crashed = not stopped.is_set()
            request_stop("container init exited")

        loop.add_reader(init_fd, init_exited)

        if self.gateway is not None:
            await self.gateway.start(self.sockets)
        await stopped.wait()
        loop.remove_reader(init_fd)
        os.close(init_fd)
        if self.gateway is not None:
            await self.gateway.close()

    # -- teardown ------------------------------------------------------------

    def teardown(self) -> None:
        """Stop the container and release everything; every step runs even if an earlier one failed."""
        steps = []
        if self.container_started:
            steps.append(("kill container", lambda: self.runtime.kill(self.sandbox_id, "KILL")))
            steps.append(("reap init", self._reap_init))
            steps.append(("delete container", lambda: self.runtime.delete(self.sandbox_id)))
            steps.append(("remove cgroups", lambda: remove_cgroups(self.sandbox_id)))
        steps.append(("close sockets", lambda: self.sockets.close() if self.sockets else None))
        steps.append(("close network namespace", lambda: self.namespace.close() if self.namespace else None))
        steps.append(("unmount root filesystem", lambda: unmount_rootfs(self.layout, self.state_dir)))
        for description, step in steps:
            try:
                step()
            except Exception as exc:
                log.error("sandbox %s: teardown step %r failed: %s", self.spec.name, description, exc)

    def _reap_init(self) -> None:
        if self.container_pid is None:
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(self.container_pid, os.WNOHANG)
            except ChildProcessError:
                return
            if pid:
                return
            time.sleep(0.005)
        log.error("sandbox %s: init process %d did not exit within 10 s of SIGKILL", self.spec.name, self.container_pid)


def _configure_logging(state_dir: Path) -> None:
    """Log to the sandbox's supervisor.log only, whatever handlers the creator had configured."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.FileHandler(state_dir / "supervisor.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def run_supervisor(config: dict[str, Any], report: Callable[[dict[str, Any]], None]) -> int:
    """Set the sandbox up, call `report` once with the outcome, then serve until a stop is requested."""
    name = config["spec"]["name"]
    paths = Paths(Path(config["home"]))
    state_dir = paths.sandbox_dir(name)
    state_dir.mkdir(parents=True, exist_ok=True)
    _configure_logging(state_dir)
    registry = Registry(paths)
    supervisor: Supervisor | None = None
    started = time.monotonic()
    try:
        supervisor = Supervisor(config)
        supervisor.setup()
    except Exception as exc:
        log.error("sandbox %s: setup failed: %s\n%s", name, exc, traceback.format_exc())
        if supervisor is not None:
            supervisor.teardown()
        registry.update(name, status=STATUS_CRASHED, detail=f"setup failed: {exc}")
        report({"ok": False, "error": str(exc), "type": type(exc).__name__})
        return 1

    registry.update(
        name,
        status=STATUS_RUNNING,
        supervisor_pid=os.getpid(),
        supervisor_start=process_start_time(os.getpid()),
        container_pid=supervisor.container_pid,
        detail="",
    )
    log.info("sandbox %s: running after %.1f ms (container %s, init pid %s)", name,
             (time.monotonic() - started) * 1000, supervisor.sandbox_id, supervisor.container_pid)
    report({"ok": True, "supervisor_pid": os.getpid(), "container_pid": supervisor.container_pid})

    try:
        asyncio.run(supervisor.serve())
    except Exception as exc:
        log.error("sandbox %s: supervisor failed: %s\n%s", name, exc, traceback.format_exc())
        supervisor.crashed = True
        supervisor.stop_reason = f"supervisor failed: {exc}"
    supervisor.teardown()
    status = STATUS_CRASHED if supervisor.crashed else STATUS_STOPPED
    registry.update(name, status=status, detail=supervisor.stop_reason, supervisor_pid=None, container_pid=None)
    log.info("sandbox %s: %s (%s)", name, status, supervisor.stop_reason)
    return 0


def main() -> int:
    """Entry point of `python -m sealbox.runtime.supervisor`: configuration on stdin, report on stdout."""
    config = json.loads(sys.stdin.read())
    sys.stdin.close()

    def report(message: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 1)
        os.close(devnull)

    return run_supervisor(config, report)


if __name__ == "__main__":
    sys.exit(main())
