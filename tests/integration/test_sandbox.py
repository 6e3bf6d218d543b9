"""The sandbox runtime through the Python API, with real runc and namespaces."""

from __future__ import annotations

import asyncio
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sealbox import (
    ExecTimeoutError,
    ImageNotFoundError,
    InvalidSpecError,
    Network,
    Sandbox,
    SandboxExistsError,
    SandboxNotFoundError,
    Stderr,
    Stdout,
    Exit,
)


def test_lifecycle(run):
    async def scenario():
        sandbox = await Sandbox.create("life", network=Network.none())
        try:
            assert await sandbox.status() == "running"
            names = [item.name for item in await Sandbox.list()]
            assert names == ["life"]
            again = await Sandbox.get("life")
            output = await again.exec("echo", ["hello"])
            assert output.stdout_text == "hello\n"
            await sandbox.stop()
            assert await sandbox.status() == "stopped"
        finally:
            await sandbox.remove()
        with pytest.raises(SandboxNotFoundError):
            await Sandbox.get("life")

    run(scenario())


def test_shell_output_and_exit_code(run):
    async def scenario():
        async with await Sandbox.create("shell", network=Network.none()) as sandbox:
            output = await sandbox.shell("echo hi; echo err >&2; exit 3")
            assert output.exit_code == 3
            assert output.success is False
            assert output.stdout_text == "hi\n"
            assert output.stderr_text == "err\n"

    run(scenario())


def test_binary_stdout_and_stderr_kept_apart(run):
    script = (
        "import sys; data = bytes(range(256)) * 64;"
        "sys.stdout.buffer.write(data); sys.stdout.flush();"
        "sys.stderr.buffer.write(data[::-1]); sys.stderr.flush()"
    )

    async def scenario():
        async with await Sandbox.create("binary", network=Network.none()) as sandbox:
            output = await sandbox.exec("python3", ["-c", script])
            assert output.exit_code == 0
            assert output.stdout_bytes == bytes(range(256)) * 64
            assert output.stderr_bytes == (bytes(range(256)) * 64)[::-1]

    run(scenario())


def test_stdin_reaches_command(run):
    async def scenario():
        async with await Sandbox.create("stdin", network=Network.none()) as sandbox:
            output = await sandbox.exec("sha256sum", stdin=b"x" * 1_000_000)
            import hashlib

            assert output.stdout_text.split()[0] == hashlib.sha256(b"x" * 1_000_000).hexdigest()

    run(scenario())


def test_stream_200mb_without_holding_it(run):
    async def scenario():
        async with await Sandbox.create("stream", network=Network.none()) as sandbox:
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            total = 0
            exit_code = None
            async for event in sandbox.exec_stream("head", ["-c", str(200 * 1024 * 1024), "/dev/zero"]):
                if isinstance(event, Stdout):
                    total += len(event.data)
                elif isinstance(event, Exit):
                    exit_code = event.exit_code
            grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
            assert total == 200 * 1024 * 1024
            assert exit_code == 0
            assert grown_kib < 64 * 1024, f"peak RSS grew by {grown_kib} KiB while streaming"

    run(scenario())


def test_exit_by_signal(run):
    async def scenario():
        async with await Sandbox.create("signal", network=Network.none()) as sandbox:
            output = await sandbox.shell("kill -TERM $$")
            assert output.exit_code == 143
            assert output.signal == 15

    run(scenario())


def test_missing_command_is_127(run):
    async def scenario():
        async with await Sandbox.create("missing", network=Network.none()) as sandbox:
            output = await sandbox.exec("no-such-program")
            assert output.exit_code == 127
            assert output.stderr_text == "sealbox: no-such-program: command not found\n"

    run(scenario())


def test_timeout_kills_process_tree(run):
    async def scenario():
        async with await Sandbox.create("timeout", network=Network.none()) as sandbox:
            started = time.monotonic()
            with pytest.raises(ExecTimeoutError):
                await sandbox.shell("sleep 1000 & sleep 1001 & wait", timeout=1.0)
            assert time.monotonic() - started < 10
            listing = await sandbox.shell("cat /proc/[0-9]*/cmdline | tr '\\0' ' '")
            assert "sleep 1000" not in listing.stdout_text
            assert "sleep 1001" not in listing.stdout_text

    run(scenario())


def test_memory_limit_kills_allocation(run):
    script = "chunks = []\nwhile True:\n    chunks.append(bytearray(16 * 1024 * 1024))\n"

    async def scenario():
        async with await Sandbox.create("memory", network=Network.none(), memory="64M") as sandbox:
            output = await sandbox.exec("python3", ["-c", script], timeout=60)
            assert output.exit_code == 137
            assert output.oom_killed is True

    run(scenario())


def test_fork_bomb_contained_by_pids_limit(run):
    async def scenario():
        async with await Sandbox.create("forks", network=Network.none(), pids=64) as sandbox:
            bomb = await sandbox.shell("i=0; while [ $i -lt 200 ]; do sleep 30 & i=$((i+1)); done", timeout=60)
            assert bomb.exit_code != 0
            assert "fork" in bomb.stderr_text.lower()
            parent = os.environ["SEALBOX_CGROUP_PARENT"]
            current = Path(f"/sys/fs/cgroup/pids/{parent}/{sandbox.id}/pids.current")
            if not current.exists():
                current = Path(f"/sys/fs/cgroup/{parent}/{sandbox.id}/pids.current")
            assert int(current.read_text()) <= 64

    run(scenario())


def test_user_env_workdir(run):
    async def scenario():
        async with await Sandbox.create("identity", network=Network.none(), user="1000:1000",
                                        env={"GREETING": "hello world"}, workdir="/work") as sandbox:
            output = await sandbox.shell('id -u; id -g; pwd; printf "%s\\n" "$GREETING"; echo $HOME')
            assert output.stdout_text.splitlines() == ["1000", "1000", "/work", "hello world", "/home/sandbox"]
            override = await sandbox.exec("sh", ["-c", 'echo "$GREETING"'], env={"GREETING": "override"}, cwd="/tmp")
            assert override.stdout_text == "override\n"

    run(scenario())


def test_volumes_rw_and_ro(run, tmp_path):
    writable = tmp_path / "rw"
    readonly = tmp_path / "ro"
    writable.mkdir()
    readonly.mkdir()
    (readonly / "data.txt").write_text("host data\n")

    async def scenario():
        async with await Sandbox.create("volumes", network=Network.none(),
                                        volumes=[f"{writable}:/mnt/rw", f"{readonly}:/mnt/ro:ro"]) as sandbox:
            written = await sandbox.shell("echo from-sandbox > /mnt/rw/out.txt")
            assert written.exit_code == 0
            read = await sandbox.exec("cat", ["/mnt/ro/data.txt"])
            assert read.stdout_text == "host data\n"
            refused = await sandbox.shell("echo x > /mnt/ro/new.txt")
            assert refused.exit_code != 0
            assert "Read-only file system" in refused.stderr_text

    run(scenario())
    assert (writable / "out.txt").read_text() == "from-sandbox\n"
    assert not (readonly / "new.txt").exists()


def test_host_image_hides_host_data(run):
    assert os.listdir("/root"), "the host's /root should have entries for this test to mean something"

    async def scenario():
        async with await Sandbox.create("hidden", network=Network.none()) as sandbox:
            output = await sandbox.exec("python3", ["-c", (
                "import os; print(os.listdir('/root')); print(os.listdir('/home'));"
                "print(os.path.exists('/etc/shadow')); print(os.path.exists('/etc/ssh'));"
                "print(os.path.exists('/etc/ssl/private')); print(os.listdir('/var/lib'))"
            )])
            assert output.stdout_text.splitlines() == ["[]", "[]", "False", "False", "False", "[]"]

    run(scenario())


def test_image_is_never_modified(run, tmp_path):
    async def scenario():
        async with await Sandbox.create("writes", network=Network.none()) as sandbox:
            output = await sandbox.shell("echo changed > /usr/share/sealbox-probe && rm -f /usr/bin/env && echo done")
            assert output.stdout_text == "done\n"

    run(scenario())
    assert not Path("/usr/share/sealbox-probe").exists()
    assert Path("/usr/bin/env").exists()


def test_only_own_loopback_reachable(run):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    probe = (
        "import socket, sys\n"
        "s = socket.socket(); s.settimeout(3)\n"
        f"try:\n    s.connect(('127.0.0.1', {port})); print('connected')\n"
        "except OSError as e:\n    print(type(e).__name__)\n"
    )

    async def scenario():
        for network in (Network.none(), Network.public_only()):
            async with await Sandbox.create("loopback", network=network) as sandbox:
                output = await sandbox.exec("python3", ["-c", probe])
                assert output.stdout_text == "ConnectionRefusedError\n"

    try:
        run(scenario())
    finally:
        listener.close()


def test_exists_error_and_replace(run):
    async def scenario():
        first = await Sandbox.create("twice", network=Network.none())
        try:
            with pytest.raises(SandboxExistsError, match="replace=True"):
                await Sandbox.create("twice", network=Network.none())
            second = await Sandbox.create("twice", network=Network.none(), replace=True)
            output = await second.exec("true")
            assert output.exit_code == 0
        finally:
            await (await Sandbox.get("twice")).remove()
        del first

    run(scenario())


def test_invalid_spec_names_field(run):
    async def scenario():
        with pytest.raises(InvalidSpecError, match="memory"):
            await Sandbox.create("bad", memory="lots")
        with pytest.raises(InvalidSpecError, match="name"):
            await Sandbox.create("Bad Name")
        with pytest.raises(ImageNotFoundError):
            await Sandbox.create("noimage", image="/nonexistent/rootfs")

    run(scenario())


def test_local_rootfs_image(run, tmp_path):
    rootfs = tmp_path / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    (rootfs / "etc").mkdir()
    busybox = Path("/bin/busybox")
    if not busybox.exists():
        pytest.skip("busybox is not installed")
    import shutil

    shutil.copy(busybox, rootfs / "bin/busybox")
    os.symlink("busybox", rootfs / "bin/sh")
    os.symlink("busybox", rootfs / "bin/echo")
    (rootfs / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (rootfs / "etc/group").write_text("root:x:0:\n")

    async def scenario():
        async with await Sandbox.create("rootfs", image=str(rootfs), network=Network.none()) as sandbox:
            output = await sandbox.shell("echo from-rootfs > /created; echo ok")
            assert output.stdout_text == "ok\n"

    run(scenario())
    assert not (rootfs / "created").exists()


def _python(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_detached_survives_creator(run):
    creator = _python(
        "import asyncio, sealbox\n"
        "async def main():\n"
        "    await sealbox.Sandbox.create('keeper', network=sealbox.Network.none(), detached=True)\n"
        "    print('ready')\n"
        "asyncio.run(main())\n"
    )
    try:
        assert creator.stdout.readline() == "ready\n"
        assert creator.wait(timeout=30) == 0
    finally:
        creator.kill()
        creator.wait()

    async def scenario():
        sandbox = await Sandbox.get("keeper")
        try:
            assert await sandbox.status() == "running"
            output = await sandbox.exec("echo", ["still here"])
            assert output.stdout_text == "still here\n"
        finally:
            await sandbox.remove()

    run(scenario())


def test_attached_dies_with_killed_creator(run):
    creator = _python(
        "import asyncio, sealbox\n"
        "async def main():\n"
        "    await sealbox.Sandbox.create('tethered', network=sealbox.Network.none())\n"
        "    print('ready')\n"
        "    await asyncio.sleep(600)\n"
        "asyncio.run(main())\n"
    )
    try:
        assert creator.stdout.readline() == "ready\n"
        creator.kill()  # SIGKILL: no cleanup code of the creator runs
        creator.wait()

        async def scenario():
            sandbox = await Sandbox.get("tethered")
            deadline = time.monotonic() + 20
            while await sandbox.status() == "running" and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            try:
                assert await sandbox.status() == "stopped"
                assert sandbox._record.detail == "creator exited"
            finally:
                await sandbox.remove()

        run(scenario())
    finally:
        if creator.poll() is None:
            creator.kill()
            creator.wait()


def test_crashed_supervisor_detected_and_cleaned(run):
    async def scenario():
        sandbox = await Sandbox.create("crashy", network=Network.none(), detached=True)
        try:
            os.kill(sandbox._record.supervisor_pid, 9)
            deadline = time.monotonic() + 10
            while await sandbox.status() != "crashed" and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert await sandbox.status() == "crashed"
        finally:
            await sandbox.remove()

    run(scenario())


@pytest.mark.gvisor
def test_gvisor_runtime(run):
    if not Path("/usr/bin/runsc").exists():
        pytest.skip("runsc is not installed")

    async def scenario():
        async with await Sandbox.create("gvisor", network=Network.none(), runtime="gvisor") as sandbox:
            output = await sandbox.shell("echo inside; dmesg | head -1", timeout=60)
            assert output.stdout_text.splitlines()[0] == "inside"
            assert "gVisor" in output.stdout_text

    run(scenario())
