"""Tests of the test world's lifecycle and of each server responding."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from sealbox.testworld import DEFAULT_TOKEN, TestWorld, TestWorldError


def proc_state(pid: int) -> str | None:
    """Return the process state letter of pid, or None when no such process exists."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0].decode()
    except FileNotFoundError:
        return None


def test_world_stop_leaves_no_process(tmp_path: Path, large_repo_path: Path) -> None:
    world = TestWorld(tmp_path / "world", repo_cache=large_repo_path.parent)
    try:
        world.start()
        pids = world.process_ids()
        # servers, 4 fcgiwrap, the nginx master and its 2 workers
        assert len(pids) == 8
    finally:
        world.stop()
    assert [pid for pid in pids if proc_state(pid) is not None] == []


def test_world_start_idempotent(tmp_path: Path, large_repo_path: Path) -> None:
    with TestWorld(tmp_path / "world", repo_cache=large_repo_path.parent) as world:
        pids = world.process_ids()
        world.start()
        assert world.process_ids() == pids


def test_world_restart_same_directory(tmp_path: Path, large_repo_path: Path) -> None:
    world = TestWorld(tmp_path / "world", repo_cache=large_repo_path.parent)
    try:
        world.start()
        ca_pem = world.ca.cert_pem
        world.stop()
        world.start()
        assert TestWorld(tmp_path / "world").ca.cert_pem == ca_pem
        assert world.recordings("https") == []
    finally:
        world.stop()


def test_world_fixed_port(tmp_path: Path, large_repo_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    with TestWorld(tmp_path / "world", repo_cache=large_repo_path.parent, ports={"canary": port}) as world:
        assert world.canary.port == port


def test_world_long_directory(tmp_path: Path, large_repo_path: Path) -> None:
    # A unix socket path longer than 108 bytes cannot be bound, so the sockets move to a short directory.
    directory = tmp_path / ("d" * 100)
    with TestWorld(directory, repo_cache=large_repo_path.parent) as world:
        socket_dir = Path(world.describe()["control_socket"]).parent
        assert world.recordings("https") == []
    assert socket_dir != directory / "run"
    assert socket_dir.exists() is False


def test_world_unknown_port_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="invalid server names in ports"):
        TestWorld(tmp_path, ports={"ftp": 21})


def test_endpoint_before_start(tmp_path: Path) -> None:
    world = TestWorld(tmp_path)
    with pytest.raises(TestWorldError, match="call start"):
        _ = world.https


def test_default_token_format() -> None:
    assert DEFAULT_TOKEN.startswith("ghp_")
    assert len(DEFAULT_TOKEN) == 40


def test_endpoints_on_loopback(world: TestWorld) -> None:
    assert {endpoint.host for endpoint in world.endpoints().values()} == {"127.0.0.1"}


def test_describe_hides_token(world: TestWorld) -> None:
    text = json.dumps(world.describe())
    assert world.token not in text
    assert world.describe()["ca_cert"] == str(world.ca.cert_path)


@pytest.mark.parametrize(
    ("server", "path", "expected"),
    [
        ("https", "/", b"ok"),
        ("canary", "/", b"ok"),
        ("git", "/org/small.git/info/refs?service=git-upload-pack", b"# service=git-upload-pack"),
    ],
)
def test_tls_server_responds(world: TestWorld, curl, server: str, path: str, expected: bytes) -> None:
    endpoint = world.endpoints()[server]
    result = curl("--fail", f"https://{endpoint.addr}{path}")
    assert result.returncode == 0, result.stderr
    assert expected in result.stdout


@pytest.mark.parametrize("server", ["http", "canary_plain"])
def test_plain_server_responds(world: TestWorld, curl, server: str) -> None:
    result = curl("--fail", f"http://{world.endpoints()[server].addr}/")
    assert result.stdout == b"ok"


def test_pypi_responds_401(world: TestWorld, curl) -> None:
    result = curl("-o", "/dev/null", "-w", "%{http_code}", f"https://{world.pypi.addr}/simple/")
    assert result.stdout == b"401"


def test_name_map_reaches_server(world: TestWorld, curl) -> None:
    target = world.name_map()["api.github.com:443"]
    result = curl("--connect-to", f"api.github.com:443:{target}", "https://api.github.com/echo")
    headers = dict(json.loads(result.stdout)["headers"])
    assert headers[":authority"] == "api.github.com"


def test_wrong_name_fails_verification(world: TestWorld, curl) -> None:
    result = curl("--connect-to", f"github.com:443:{world.wrong_name.addr}", "https://github.com/")
    assert result.returncode == 60
    assert b"no alternative certificate subject name matches" in result.stderr


def test_wrong_name_valid_for_other_test(world: TestWorld, curl) -> None:
    result = curl("--connect-to", f"other.test:443:{world.wrong_name.addr}", "https://other.test/")
    assert result.stdout == b"ok"


def test_untrusted_fails_verification(world: TestWorld, curl) -> None:
    result = curl("--connect-to", f"github.com:443:{world.untrusted.addr}", "https://github.com/")
    assert result.returncode == 60
    assert b"unable to get local issuer certificate" in result.stderr


def test_untrusted_valid_with_its_ca(world: TestWorld, run_client) -> None:
    result = run_client(
        ["curl", "-sS", "--cacert", str(world.untrusted_ca.cert_path), f"https://{world.untrusted.addr}/"]
    )
    assert result.stdout == b"ok"


def test_tcp_echo_half_close(world: TestWorld) -> None:
    payload = os.urandom(3 << 20)
    with socket.create_connection((world.tcp_echo.host, world.tcp_echo.port), timeout=30) as connection:
        connection.sendall(payload)
        connection.shutdown(socket.SHUT_WR)
        received = bytearray()
        while data := connection.recv(1 << 20):
            received += data
    assert bytes(received) == payload


def test_cli_prints_description(tmp_path: Path, large_repo_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "sealbox.testworld", "--dir", str(tmp_path / "w"),
         "--repo-cache", str(large_repo_path.parent)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:
            lines.append(line)
            if line == b"}\n":
                break
        description = json.loads(b"".join(lines))
        assert set(description["endpoints"]) >= {"https", "git", "pypi", "canary", "tcp_echo"}
        pids = list(description["processes"].values())
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert process.returncode == 0
    assert [pid for pid in pids if proc_state(pid) is not None] == []
