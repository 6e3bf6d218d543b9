"""Secrets benchmark: intercepted transfers, git clone and keep-alive requests, beside mitmproxy.

Usage: sudo .venv/bin/python bench/secrets.py [--runs N] [--size-mib M] [--no-mitmproxy] [--json FILE]

A sandbox gets the secret TOKEN (the test world's token) scoped to
echo.test and github.com, so the gateway intercepts TLS to those names and
swaps the placeholder in the request head for the value. Measured, each
over N runs (default 20), against the local test world:
- an M MiB (default 1024) download and upload through the interception,
  directly with curl on the host (real token), and through mitmproxy;
- a full `git clone` of the large private repository inside the sandbox
  (placeholder in the URL) and on the host (real token in the URL);
- small GET requests one after another on one kept-alive connection
  (bench/clients/ka_loop.py), directly, intercepted and through mitmproxy.

mitmproxy runs from its own virtual environment, bench/.venv-mitmproxy,
created with pip on the first run unless --no-mitmproxy is given. It is a
forward proxy on 127.0.0.1 that verifies the world's server against the
world's CA and swaps the placeholder with bench/mitmproxy_addon.py. Host-side
clients reach echo.test and github.com with curl's --connect-to and git's
http.curloptResolve. mitmproxy is given the address 127.0.0.1, so no name
goes to the host's resolver.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file's name shadows the standard library's secrets module, which
# sealbox imports, so the script's own directory leaves the import path and
# the helpers are imported from the package "bench" instead.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse  # noqa: E402
import asyncio  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from contextlib import ExitStack, contextmanager  # noqa: E402
from typing import Any  # noqa: E402

from bench.common import (  # noqa: E402
    BENCH_DIR,
    CLIENTS_DIR,
    DEFAULT_RUNS,
    GIB,
    MIB,
    SANDBOX_CLIENTS,
    SYSTEM_PYTHON,
    Row,
    Section,
    Target,
    client_volume,
    command_line,
    cpu_seconds,
    curl_result,
    expect_success,
    load_average,
    median,
    require_root,
    run_checked,
    sealbox_home,
    size_label,
    started_world,
    write_section,
)
from sealbox import Network, Sandbox, Secret  # noqa: E402
from sealbox.testworld.pattern import pattern_chunks  # noqa: E402
from sealbox.testworld.repogen import LARGE_REPO_HEAD  # noqa: E402

MITMPROXY_VENV = BENCH_DIR / ".venv-mitmproxy"
MITMDUMP = MITMPROXY_VENV / "bin" / "mitmdump"
MITMPROXY_ADDON = BENCH_DIR / "mitmproxy_addon.py"
MITMPROXY_START_TIMEOUT = 30.0
MITMPROXY_INSTALL_TIMEOUT = 600.0
KEEPALIVE_REQUESTS = 500
KEEPALIVE_WARMUP = 20  # the untimed requests ka_loop.py sends first
CURL_FORMAT = "%{http_code} %{size_download} %{time_total}\n"
UPLOAD_FORMAT = "\n%{http_code} %{size_upload} %{time_total}\n"
TRANSFER_TIMEOUT = 300.0
DATA_DIR = "/bench-data"
REPOSITORY = "private"


# -- mitmproxy ---------------------------------------------------------------------


def ensure_mitmproxy(install: bool) -> str | None:
    """Return mitmdump's version line, installing it into MITMPROXY_VENV first if allowed; None if unavailable."""
    if not MITMDUMP.exists() and install:
        print(f"installing mitmproxy into {MITMPROXY_VENV} ...", file=sys.stderr, flush=True)
        try:
            run_checked([sys.executable, "-m", "venv", str(MITMPROXY_VENV)])
            run_checked([str(MITMPROXY_VENV / "bin" / "pip"), "install", "--quiet", "mitmproxy"],
                        timeout=MITMPROXY_INSTALL_TIMEOUT)
        except (RuntimeError, subprocess.TimeoutExpired) as error:
            print(f"mitmproxy could not be installed: {error}", file=sys.stderr)
            return None
    if not MITMDUMP.exists():
        return None
    completed = subprocess.run([str(MITMDUMP), "--version"], capture_output=True, text=True, timeout=60)
    return completed.stdout.splitlines()[0] if completed.returncode == 0 and completed.stdout else None


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Mitmproxy:
    """A running mitmdump: a forward proxy on 127.0.0.1 that swaps the placeholder for the world's server."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, ca_path: Path) -> None:
        self.process = process
        self.port = port
        self.ca_path = ca_path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@contextmanager
def mitmproxy(world: Any, directory: Path, placeholder: str) -> Iterator[Mitmproxy]:
    """Start mitmdump with a new CA in a temporary HOME and stop it (by its PID) at the end."""
    home = directory / "mitmproxy-home"
    home.mkdir(parents=True)
    port = free_port()
    env = world.client_env({
        "HOME": str(home),
        "BENCH_PLACEHOLDER": placeholder,
        "BENCH_VALUE": world.token,
        "BENCH_SWAP_HOST": "127.0.0.1",
        "BENCH_SWAP_PORT": str(world.https.port),
    })
    argv = [
        str(MITMDUMP), "--quiet", "--listen-host", "127.0.0.1", "--listen-port", str(port),
        "--set", "ssl_insecure=false",
        "--set", f"ssl_verify_upstream_trusted_ca={world.ca.cert_path}",
        # Without it mitmproxy keeps each whole body in memory before passing it on.
        "--set", "stream_large_bodies=1m",
        "-s", str(MITMPROXY_ADDON),
    ]
    log_path = directory / "mitmdump.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    ca_path = home / ".mitmproxy" / "mitmproxy-ca-cert.pem"
    try:
        deadline = time.monotonic() + MITMPROXY_START_TIMEOUT
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"mitmdump exited with {process.returncode}: {log_path.read_text()[-800:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                if ca_path.exists():
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"mitmdump not ready after {MITMPROXY_START_TIMEOUT:g} s: "
                                   f"{log_path.read_text()[-800:]}")
            time.sleep(0.05)
        yield Mitmproxy(process, port, ca_path)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# -- the three routes ----------------------------------------------------------------


class Clients:
    """Clients of the world's https and git servers on each route: direct, intercepted and through mitmproxy."""

    def __init__(self, world: Any, sandbox: Sandbox, proxy: Mitmproxy | None, upload_file: Path) -> None:
        self.world = world
        self.sandbox = sandbox
        self.proxy = proxy
        self.upload_file = upload_file
        self.placeholder = sandbox.placeholders["TOKEN"]
        self.env = world.client_env()

    # curl against https://echo.test

    def direct_curl(self, arguments: list[str], path: str) -> str:
        argv = ["curl", "--http1.1", "-sS", "--connect-to", f"echo.test:443:{self.world.https.addr}",
                "-H", f"Authorization: Bearer {self.world.token}", *arguments, f"https://echo.test{path}"]
        return run_checked(argv, env=self.env, timeout=TRANSFER_TIMEOUT).stdout

    async def sandbox_curl(self, arguments: list[str], path: str) -> str:
        quoted = " ".join(f"'{argument}'" for argument in arguments)
        script = f'curl --http1.1 -sS -H "Authorization: Bearer $TOKEN" {quoted} "https://echo.test{path}"'
        output = await self.sandbox.shell(script, timeout=TRANSFER_TIMEOUT)
        return expect_success(output, f"curl {path} through the interception")

    def proxy_curl(self, arguments: list[str], path: str) -> str:
        # NOTE: mitmproxy is given the world's address, not echo.test, so that it never asks the host's
        # resolver; its TLS to the client and to the server therefore carries no SNI name.
        assert self.proxy is not None
        argv = ["curl", "--http1.1", "-sS", "--proxy", f"http://{self.proxy.address}",
                "--cacert", str(self.proxy.ca_path), "-H", f"Authorization: Bearer {self.placeholder}",
                *arguments, f"https://{self.world.https.addr}{path}"]
        return run_checked(argv, env=self.env, timeout=TRANSFER_TIMEOUT).stdout

    async def curl(self, route: str, arguments: list[str], path: str) -> str:
        if route == "direct":
            return self.direct_curl(arguments, path)
        if route == "intercepted":
            return await self.sandbox_curl(arguments, path)
        return self.proxy_curl(arguments, path)

    # keep-alive request loop

    async def keepalive_rate(self, route: str) -> float:
        script = str(CLIENTS_DIR / "ka_loop.py")
        count = str(KEEPALIVE_REQUESTS)
        if route == "direct":
            completed = run_checked([SYSTEM_PYTHON, script, "127.0.0.1", str(self.world.https.port), count,
                                     "--server-name", "echo.test", "--cafile", str(self.world.ca.cert_path),
                                     "--header", f"Authorization: Bearer {self.world.token}"])
            stdout = completed.stdout
        elif route == "intercepted":
            output = await self.sandbox.shell(
                f'python3 {SANDBOX_CLIENTS}/ka_loop.py echo.test 443 {count} --header "Authorization: Bearer $TOKEN"',
                timeout=120)
            stdout = expect_success(output, "ka_loop.py")
        else:
            assert self.proxy is not None
            completed = run_checked([SYSTEM_PYTHON, script, "127.0.0.1", str(self.world.https.port), count,
                                     "--proxy", self.proxy.address, "--cafile", str(self.proxy.ca_path),
                                     "--header", f"Authorization: Bearer {self.placeholder}"])
            stdout = completed.stdout
        report = json.loads(stdout)
        return report["requests"] / report["seconds"]

    # git clone of the private repository

    def direct_clone(self, destination: Path) -> float:
        port = self.world.git.port
        url = f"https://x-access-token:{self.world.token}@github.com:{port}/org/{REPOSITORY}.git"
        argv = ["git", "-c", f"http.curloptResolve=github.com:{port}:127.0.0.1", "clone", "-q", url,
                str(destination)]
        started = time.perf_counter()
        run_checked(argv, env=self.env, timeout=TRANSFER_TIMEOUT)
        return time.perf_counter() - started

    async def sandbox_clone(self, check_head: bool = False) -> float:
        """Clone inside the sandbox; the time is taken inside, around git, as on the host."""
        url = f"https://x-access-token:$TOKEN@github.com/org/{REPOSITORY}.git"
        head = "git -C /tmp/clone rev-parse HEAD >&2;" if check_head else ""
        script = (f'start=$(date +%s%N); git clone -q "{url}" /tmp/clone || exit 1; end=$(date +%s%N); {head}'
                  'rm -rf /tmp/clone; echo $(( (end - start) / 1000 ))')
        output = await self.sandbox.shell(script, timeout=TRANSFER_TIMEOUT)
        stdout = expect_success(output, "git clone through the interception")
        if check_head and output.stderr_text.strip() != LARGE_REPO_HEAD:
            raise RuntimeError(f"the clone's HEAD is {output.stderr_text.strip()[:80]!r}: expected {LARGE_REPO_HEAD}")
        return int(stdout.strip()) / 1e6


# -- checks and measurements ---------------------------------------------------------


async def check_substitution(clients: Clients, routes: list[str]) -> None:
    """Raise RuntimeError unless the server receives the real token, not the placeholder, on every route."""
    expected = f"Bearer {clients.world.token}"
    for route in routes:
        body = await clients.curl(route, [], "/echo")
        headers = {name.lower(): value for name, value in json.loads(body)["headers"]}
        if headers.get("authorization") != expected:
            shown = (headers.get("authorization") or "")[:12]
            raise RuntimeError(f"{route}: the server received Authorization {shown!r}...: "
                               "expected the real token, so the placeholder was not swapped")


async def transfer(clients: Clients, route: str, direction: str, size: int, expected_sha256: str) -> float:
    """Download or upload size bytes on one route; return MiB/s after checking status, size and digest."""
    if direction == "download":
        stdout = await clients.curl(route, ["-o", "/dev/null", "-w", CURL_FORMAT], f"/bytes/{size}")
        return size / curl_result(stdout, f"{route} download", size) / MIB
    upload = f"{DATA_DIR}/{clients.upload_file.name}" if route == "intercepted" else str(clients.upload_file)
    stdout = await clients.curl(route, ["-T", upload, "-w", UPLOAD_FORMAT], "/upload")
    body, _, status = stdout.rstrip("\n").rpartition("\n")
    seconds = curl_result(status, f"{route} upload", size, upload=True)
    received = json.loads(body)
    if received.get("length") != size or received.get("sha256") != expected_sha256:
        raise RuntimeError(f"{route} upload: the server received {received}: expected {size} bytes with "
                           f"SHA-256 {expected_sha256}")
    return size / seconds / MIB


async def measure(clients: Clients, runs: int, size: int, expected_sha256: str, clone_dir: Path,
                  supervisor: int) -> dict[str, list[float]]:
    """Run every comparison runs times, alternating the routes within each run."""
    routes = ["direct", "intercepted"] + (["mitmproxy"] if clients.proxy else [])
    samples: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        samples.setdefault(key, []).append(value)

    def process_cpu(route: str) -> float:
        if route == "intercepted":
            return cpu_seconds(supervisor)
        if route == "mitmproxy" and clients.proxy is not None:
            return cpu_seconds(clients.proxy.process.pid)
        return 0.0

    for _ in range(runs):
        for direction in ("download", "upload"):
            for route in routes:
                before = process_cpu(route)
                add(f"{direction} {route}", await transfer(clients, route, direction, size, expected_sha256))
                add(f"{direction} {route} cpu", process_cpu(route) - before)
                clients.world.clear_recordings()
        destination = clone_dir / "clone"
        add("clone direct", clients.direct_clone(destination))
        add("clone pack bytes", sum(pack.stat().st_size for pack in (destination / ".git" / "objects" / "pack").iterdir()))
        shutil.rmtree(destination)
        before = cpu_seconds(supervisor)
        add("clone intercepted", await clients.sandbox_clone())
        add("clone intercepted cpu", cpu_seconds(supervisor) - before)
        for route in routes:
            before = process_cpu(route)
            add(f"keepalive {route}", await clients.keepalive_rate(route))
            add(f"keepalive {route} cpu", (process_cpu(route) - before) / (KEEPALIVE_REQUESTS + KEEPALIVE_WARMUP))
        clients.world.clear_recordings()
    return samples


# -- the report ------------------------------------------------------------------------


def paired(numerators: list[float], denominators: list[float]) -> list[float]:
    return [top / bottom for top, bottom in zip(numerators, denominators)]


def add_rows(section: Section, samples: dict[str, list[float]], size: int, mitmproxy_version: str | None) -> None:
    label = size_label(size)
    mib = size / MIB
    has_proxy = "download mitmproxy" in samples
    for direction in ("download", "upload"):
        direct = section.add(Row(f"{label} {direction}, curl on the host, direct", "MiB/s",
                                 samples[f"{direction} direct"], higher_is_better=True))
        intercepted = section.add(Row(f"{label} {direction}, curl in a sandbox, intercepted", "MiB/s",
                                      samples[f"{direction} intercepted"], higher_is_better=True))
        ratio = section.add(Row(f"intercepted {direction} ÷ direct (paired runs)", "x",
                                paired(samples[f"{direction} intercepted"], samples[f"{direction} direct"]),
                                higher_is_better=True, target=Target("≥ 0.6x", 0.6, "min")))
        section.add(Row(f"gateway CPU time per {label} {direction}, intercepted (supervisor, user + system)", "s",
                        samples[f"{direction} intercepted cpu"]))
        cpu = median(samples[f"{direction} intercepted cpu"])
        seconds = mib / intercepted.median
        ratio.bound = (
            f"CPU of the gateway: the supervisor used {cpu:.2f} s of CPU per {label} during a {seconds:.2f} s "
            f"transfer ({cpu / seconds * 100:.0f} % of one core). It decrypts and re-encrypts every byte with "
            "Python's ssl module on one event loop, in 256 KiB reads, while the test world's server and curl "
            f"share the 2 cores with it. Direct: {direct.median:,.0f} MiB/s."
        )
        if has_proxy:
            section.add(Row(f"{label} {direction}, curl on the host, through mitmproxy", "MiB/s",
                            samples[f"{direction} mitmproxy"], higher_is_better=True))
            section.add(Row(f"mitmproxy {direction} ÷ direct (paired runs)", "x",
                            paired(samples[f"{direction} mitmproxy"], samples[f"{direction} direct"]),
                            higher_is_better=True))
            section.add(Row(f"mitmproxy CPU time per {label} {direction}", "s",
                            samples[f"{direction} mitmproxy cpu"]))

    direct_clone = section.add(Row(f"full clone of org/{REPOSITORY}.git, git on the host, direct", "s",
                                   samples["clone direct"]))
    intercepted_clone = section.add(Row(f"full clone of org/{REPOSITORY}.git, git in a sandbox, intercepted", "s",
                                        samples["clone intercepted"]))
    clone_ratio = section.add(Row("intercepted clone time ÷ direct (paired runs)", "x",
                                  paired(samples["clone intercepted"], samples["clone direct"]),
                                  target=Target("≤ 1.15x", 1.15, "max")))
    pack_bytes = median(samples["clone pack bytes"])
    cpu_per_gib = median(samples["download intercepted cpu"]) * GIB / size
    delta = intercepted_clone.median - direct_clone.median
    clone_ratio.bound = (
        f"The clone fetches a {pack_bytes / 1e6:.0f} MB pack and 4,000 refs. The server side (nginx, fcgiwrap, "
        "git http-backend and pack-objects) and git's index-pack and checkout share the 2 cores with the "
        f"gateway, which used {median(samples['clone intercepted cpu']):.2f} s of CPU per clone. The intercepted "
        f"clone took {delta:.2f} s longer than the direct one ({direct_clone.median:.2f} s); decrypting and "
        f"re-encrypting the pack alone costs the gateway about {pack_bytes / GIB * cpu_per_gib:.2f} s of CPU at "
        f"the {cpu_per_gib:.2f} s per GiB of the intercepted download."
    )

    section.add(Row(f"keep-alive GET / rate, {KEEPALIVE_REQUESTS} requests on one connection, direct", "req/s",
                    samples["keepalive direct"], higher_is_better=True))
    intercepted_rate = section.add(Row(f"keep-alive GET / rate, {KEEPALIVE_REQUESTS} requests, intercepted",
                                       "req/s", samples["keepalive intercepted"], higher_is_better=True))
    section.add(Row("gateway CPU time per keep-alive request, intercepted", "µs",
                    [seconds * 1e6 for seconds in samples["keepalive intercepted cpu"]]))
    if has_proxy:
        section.add(Row(f"keep-alive GET / rate, {KEEPALIVE_REQUESTS} requests, through mitmproxy", "req/s",
                        samples["keepalive mitmproxy"], higher_is_better=True))
        section.add(Row("mitmproxy CPU time per keep-alive request", "µs",
                        [seconds * 1e6 for seconds in samples["keepalive mitmproxy cpu"]]))
        versus = section.add(Row("intercepted keep-alive rate ÷ mitmproxy's (paired runs)", "x",
                                 paired(samples["keepalive intercepted"], samples["keepalive mitmproxy"]),
                                 higher_is_better=True, target=Target("≥ 10x", 10.0, "min")))
        gateway_cpu = median(samples["keepalive intercepted cpu"]) * 1e6
        needed = 10 * median(samples["keepalive mitmproxy"])
        direct_rate = median(samples["keepalive direct"])
        proxy_cpu = median(samples["keepalive mitmproxy cpu"]) * 1e6
        versus.bound = (
            "Both proxies are Python asyncio programs that parse each request head, swap the placeholder and "
            "relay the response. A request and its response take "
            f"{1000 / intercepted_rate.median:.2f} ms through the gateway, "
            f"{1000 / median(samples['keepalive mitmproxy']):.2f} ms through mitmproxy and "
            f"{1000 / median(samples['keepalive direct']):.2f} ms directly; the gateway spends {gateway_cpu:,.0f} µs "
            f"of CPU on each, mitmproxy {proxy_cpu:,.0f} µs. Ten times mitmproxy's rate is {needed:,.0f} req/s, "
            f"{'more' if needed > direct_rate else 'less'} than the {direct_rate:,.0f} req/s of the same client and "
            "server with no proxy at all."
        )
    else:
        section.notes.append("mitmproxy could not be installed or started, so its rows and the comparison with it "
                             "are missing from this run.")
    if mitmproxy_version:
        section.notes.append(
            f"{mitmproxy_version}, installed from PyPI into bench/.venv-mitmproxy, run as `mitmdump` with "
            "ssl_insecure=false, ssl_verify_upstream_trusted_ca=<world CA>, stream_large_bodies=1m and "
            "bench/mitmproxy_addon.py, which swaps the placeholder in the request headers. Its clients tunnel "
            "to 127.0.0.1:<port> with CONNECT and trust its CA from a temporary HOME."
        )
    section.notes.append(
        "Every transfer is checked: status 200, the byte count, and for uploads the SHA-256 the server computed. "
        "Before the timed runs the server's /echo must show the real token on every route. curl runs with "
        "--http1.1 everywhere (the gateway intercepts HTTP/1.1 only) and times itself with -w '%{time_total}'. "
        "Clone times are taken around git on both sides (date +%s%N inside the sandbox)."
    )


def write_upload_file(path: Path, size: int) -> str:
    """Write size bytes of the world's incompressible pattern to path; return their SHA-256."""
    digest = hashlib.sha256()
    with open(path, "wb") as output:
        for chunk in pattern_chunks(size):
            output.write(chunk)
            digest.update(chunk)
    return digest.hexdigest()


async def run_benchmarks(runs: int, size: int, directory: Path, use_mitmproxy: bool) -> Section:
    section = Section("Secrets", "bench/secrets.py", command_line(), runs)
    mitmproxy_version = ensure_mitmproxy(install=True) if use_mitmproxy else None
    data = directory / "data"
    data.mkdir()
    upload_file = data / "upload.bin"
    expected_sha256 = write_upload_file(upload_file, size)
    with started_world(directory / "world") as world:
        volumes = [client_volume(world, directory / "clients"), f"{data}:{DATA_DIR}:ro"]
        secret = Secret.env("TOKEN", value=world.token, allow_hosts=["echo.test", "github.com"])
        network = Network(connect_to=world.connect_to_entries())
        async with await Sandbox.create("bench-secrets", network=network, secrets=[secret], volumes=volumes,
                                        upstream_ca=[str(world.ca.cert_path)]) as sandbox:
            with ExitStack() as stack:
                proxy = None
                if mitmproxy_version:
                    proxy = stack.enter_context(mitmproxy(world, directory, sandbox.placeholders["TOKEN"]))
                clients = Clients(world, sandbox, proxy, upload_file)
                await check_substitution(clients, ["direct", "intercepted"] + (["mitmproxy"] if proxy else []))
                await clients.sandbox_clone(check_head=True)
                samples = await measure(clients, runs, size, expected_sha256, directory,
                                        sandbox._record.supervisor_pid)
    add_rows(section, samples, size, mitmproxy_version)
    return section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS, help="runs per measurement (default 20)")
    parser.add_argument("--size-mib", type=int, default=1024, help="download and upload size in MiB (default 1024)")
    parser.add_argument("--no-mitmproxy", action="store_true", help="leave out the mitmproxy comparison")
    parser.add_argument("--json", help="write the results to this file instead of printing them")
    options = parser.parse_args()
    require_root()
    load_before = load_average()
    started = time.time()
    with sealbox_home(), tempfile.TemporaryDirectory(prefix="sealbox-bench-secrets-") as directory:
        section = asyncio.run(run_benchmarks(options.runs, options.size_mib * MIB, Path(directory),
                                             not options.no_mitmproxy))
    section.started = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started))
    section.seconds = time.time() - started
    section.load_before = load_before
    section.load_after = load_average()
    write_section(section, options.json)


if __name__ == "__main__":
    main()
