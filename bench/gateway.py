"""Gateway benchmark: passthrough throughput, connection setup and the supervisor's memory.

Usage: sudo .venv/bin/python bench/gateway.py [--runs N] [--size-mib M] [--json FILE]

Measures, each over N runs (default 20), against the local test world:
- a TLS download of M MiB (default 1024) from the world's https server with
  curl on the host, directly, and with curl inside a sandbox, by name
  through the gateway (passthrough: no secret, so no interception);
- short connections one after another (bench/clients/conn_loop.py): TLS
  handshake plus one GET, and TCP connect plus a one-byte echo, on the host
  and inside a sandbox, giving the time the gateway adds per connection;
- the supervisor's VmRSS when idle and with 1,000 open TCP connections
  (bench/clients/hold_conns.py), in a fresh sandbox each run.
Names are pointed at the world's servers on 127.0.0.1 through the gateway's
static map inside sandboxes, and with curl's --connect-to on the host.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/secrets.py would shadow the standard library's secrets module, which
# sealbox imports, so the script's own directory leaves the import path and
# the helpers are imported from the package "bench" instead.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

from bench.common import (  # noqa: E402
    CLIENTS_DIR,
    DEFAULT_RUNS,
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
    busy_percent,
    load_average,
    machine_cpu_jiffies,
    median,
    private_memory_kib,
    raise_open_file_limit,
    require_root,
    run_checked,
    sealbox_home,
    size_label,
    started_world,
    vm_rss_kib,
    world_server_pid,
    write_section,
)
from sealbox import Exit, Network, Sandbox, Stderr, Stdout  # noqa: E402

CONNECTIONS_PER_RUN = 200
HELD_CONNECTIONS = 1000
HOLD_SECONDS = 1.0
CURL_FORMAT = "%{http_code} %{size_download} %{time_total}\n"
WORLD_CA = f"{SANDBOX_CLIENTS}/world-ca.pem"
TRANSFER_TIMEOUT = 300.0
# Machine-wide busy share above which a transfer counts as CPU-bound.
SATURATED_PERCENT = 90.0


def gateway_network(world: Any) -> Network:
    """Return the default policy (public_only) with static map entries that point the world's names at it."""
    return Network(connect_to=world.connect_to_entries())


# -- throughput -----------------------------------------------------------------


async def measure_throughput(sandbox: Sandbox, world: Any, size: int, runs: int) -> dict[str, list[float]]:
    """Download size bytes directly and through the gateway, alternating; MiB/s and CPU seconds per run."""
    url = f"https://echo.test/bytes/{size}"
    host_curl = ["curl", "--http1.1", "-sS", "-o", "/dev/null", "-w", CURL_FORMAT,
                 "--connect-to", f"echo.test:443:{world.https.addr}", url]
    sandbox_curl = ["--http1.1", "-sS", "--cacert", WORLD_CA, "-o", "/dev/null", "-w", CURL_FORMAT, url]
    server = world_server_pid(world)
    supervisor = sandbox._record.supervisor_pid
    samples: dict[str, list[float]] = {key: [] for key in ("direct", "gateway", "ratio", "server cpu",
                                                           "gateway cpu", "direct busy", "gateway busy")}
    for _ in range(runs):
        machine_before = machine_cpu_jiffies()
        completed = run_checked(host_curl, env=world.client_env(), timeout=TRANSFER_TIMEOUT)
        samples["direct busy"].append(busy_percent(machine_before, machine_cpu_jiffies()))
        direct = size / curl_result(completed.stdout, "direct download", size) / MIB

        server_before, gateway_before = cpu_seconds(server), cpu_seconds(supervisor)
        machine_before = machine_cpu_jiffies()
        output = await sandbox.exec("curl", sandbox_curl, timeout=TRANSFER_TIMEOUT)
        samples["gateway busy"].append(busy_percent(machine_before, machine_cpu_jiffies()))
        seconds = curl_result(expect_success(output, "download through the gateway"), "gateway download", size)
        samples["server cpu"].append(cpu_seconds(server) - server_before)
        samples["gateway cpu"].append(cpu_seconds(supervisor) - gateway_before)
        through = size / seconds / MIB
        samples["direct"].append(direct)
        samples["gateway"].append(through)
        samples["ratio"].append(through / direct)
        world.clear_recordings()
    return samples


# -- connection setup -----------------------------------------------------------------


def host_loop(arguments: list[str]) -> dict[str, Any]:
    completed = run_checked([SYSTEM_PYTHON, str(CLIENTS_DIR / "conn_loop.py"), *arguments])
    return json.loads(completed.stdout)


async def sandbox_loop(sandbox: Sandbox, arguments: list[str]) -> dict[str, Any]:
    output = await sandbox.exec("python3", [f"{SANDBOX_CLIENTS}/conn_loop.py", *arguments], timeout=120)
    return json.loads(expect_success(output, "conn_loop.py"))


async def measure_connections(sandbox: Sandbox, world: Any, runs: int) -> dict[str, list[float]]:
    """Run the TLS and TCP connection loops on the host and in the sandbox, alternating, runs times."""
    count = str(CONNECTIONS_PER_RUN)
    host_ca = str(world.ca.cert_path)
    samples: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        samples.setdefault(key, []).append(value)

    for _ in range(runs):
        for mode in ("tls", "tcp"):
            if mode == "tls":
                host = host_loop(["tls", "127.0.0.1", str(world.https.port), count,
                                  "--server-name", "echo.test", "--cafile", host_ca])
                inside = await sandbox_loop(sandbox, ["tls", "echo.test", "443", count, "--cafile", WORLD_CA])
            else:
                host = host_loop(["tcp", "127.0.0.1", str(world.tcp_echo.port), count])
                inside = await sandbox_loop(sandbox, ["tcp", "echo.test", "7", count])
            add(f"{mode} direct", median(host["ms"]))
            add(f"{mode} gateway", median(inside["ms"]))
            add(f"{mode} added", median(inside["ms"]) - median(host["ms"]))
            add(f"{mode} direct rate", CONNECTIONS_PER_RUN / host["seconds"])
            add(f"{mode} gateway rate", CONNECTIONS_PER_RUN / inside["seconds"])
            add("lookup", inside["resolve_ms"])
        world.clear_recordings()
    return samples


# -- memory ------------------------------------------------------------------------


async def hold_connections(sandbox: Sandbox, pid: int) -> tuple[int, int, int, float]:
    """Open HELD_CONNECTIONS through the gateway; return VmRSS KiB, private KiB and fds while open, and open time."""
    arguments = [f"{SANDBOX_CLIENTS}/hold_conns.py", "echo.test", "7", str(HELD_CONNECTIONS), str(HOLD_SECONDS)]
    measured: tuple[int, int, int, float] | None = None
    stdout = b""
    stderr = b""
    async for event in sandbox.exec_stream("python3", arguments, timeout=120):
        if isinstance(event, Stderr):
            stderr += event.data
        elif isinstance(event, Stdout):
            stdout += event.data
            if measured is None and b"\n" in stdout:
                report = json.loads(stdout.split(b"\n", 1)[0])
                if report.get("open") != HELD_CONNECTIONS:
                    raise RuntimeError(f"hold_conns.py opened {report.get('open')} connections: "
                                       f"expected {HELD_CONNECTIONS}")
                measured = (vm_rss_kib(pid), private_memory_kib(pid), len(os.listdir(f"/proc/{pid}/fd")),
                            float(report["seconds"]))
        elif isinstance(event, Exit) and event.exit_code != 0:
            raise RuntimeError(f"hold_conns.py exited with {event.exit_code}: {stderr[-500:]!r}")
    if measured is None:
        raise RuntimeError(f"hold_conns.py printed no report: {stdout[:300]!r}")
    return measured


async def cli_created_rss(world: Any, name: str) -> int:
    """Create a detached sandbox with `sealbox create`, return its supervisor's VmRSS in KiB, and remove it."""
    arguments = [str(Path(sys.executable).parent / "sealbox"), "create", name]
    for entry in world.connect_to_entries():
        arguments += ["--connect-to", entry]
    run_checked(arguments)
    sandbox = await Sandbox.get(name)
    try:
        return vm_rss_kib(sandbox._record.supervisor_pid)
    finally:
        await sandbox.remove()


async def measure_memory(world: Any, volume: str, runs: int) -> dict[str, list[float]]:
    """In a fresh sandbox per run: supervisor memory idle, then with HELD_CONNECTIONS open connections."""
    samples: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        samples.setdefault(key, []).append(value)

    for index in range(runs):
        # NOTE: the supervisor is forked from this process, so its VmRSS includes pages shared with the
        # benchmark; the `sealbox create` sample shows one forked from the smaller CLI process.
        async with await Sandbox.create(f"bench-rss-{index}", network=gateway_network(world),
                                        volumes=[volume]) as sandbox:
            pid = sandbox._record.supervisor_pid
            expect_success(await sandbox.exec("/bin/true"), "/bin/true")
            idle_rss, idle_private = vm_rss_kib(pid), private_memory_kib(pid)
            held_rss, held_private, descriptors, seconds = await hold_connections(sandbox, pid)
        add("cli idle rss", await cli_created_rss(world, f"bench-cli-{index}") * 1024 / 1e6)
        add("idle rss", idle_rss * 1024 / 1e6)
        add("idle private", idle_private * 1024 / 1e6)
        add("held rss", held_rss * 1024 / 1e6)
        add("per connection rss", (held_rss - idle_rss) / HELD_CONNECTIONS)
        add("per connection private", (held_private - idle_private) / HELD_CONNECTIONS)
        add("descriptors", descriptors)
        add("open seconds", seconds)
    return samples


# -- the report ------------------------------------------------------------------------


def add_rows(section: Section, size: int, throughput: dict[str, list[float]], connections: dict[str, list[float]],
             memory: dict[str, list[float]], cores: int) -> None:
    label = size_label(size)
    direct = section.add(Row(f"{label} TLS download, curl on the host, direct", "MiB/s", throughput["direct"],
                             higher_is_better=True))
    through = section.add(Row(f"{label} TLS download, curl in a sandbox, through the gateway (passthrough)",
                              "MiB/s", throughput["gateway"], higher_is_better=True))
    ratio = section.add(Row("gateway throughput ÷ direct (paired runs)", "x", throughput["ratio"],
                            higher_is_better=True, target=Target("≥ 0.9x", 0.9, "min")))
    section.add(Row(f"gateway CPU time per {label} (supervisor, user + system)", "s", throughput["gateway cpu"]))
    section.add(Row(f"test world server CPU time per {label} through the gateway", "s", throughput["server cpu"]))
    section.add(Row(f"machine CPU busy during the direct download (share of all {cores} cores)", "%",
                    throughput["direct busy"]))
    section.add(Row(f"machine CPU busy during the download through the gateway (share of all {cores} cores)", "%",
                    throughput["gateway busy"]))
    seconds = size / MIB / through.median
    server_cpu = median(throughput["server cpu"])
    gateway_cpu = median(throughput["gateway cpu"])
    gateway_busy = median(throughput["gateway busy"])
    ratio.bound = (
        f"The machine was {median(throughput['direct busy']):.0f} % busy during direct downloads and "
        f"{gateway_busy:.0f} % through the gateway (share of all {cores} cores, which also carry the test "
        f"world's Python TLS server and curl). Per {label} the server used {server_cpu:.2f} s of CPU "
        f"({server_cpu / seconds * 100:.0f} % of one core) and the gateway {gateway_cpu:.2f} s during a "
        f"{seconds:.2f} s transfer, because it moves the bytes with splice(2) without copying them into Python. "
    )
    if gateway_busy < SATURATED_PERCENT:
        ratio.bound += (
            "With neither the cores nor the gateway saturated, waiting sets the pace: the relay moves each chunk "
            "in two steps (socket to pipe, pipe to socket) and waits whenever a buffer is empty or full, a hop "
            "the direct path does not have. This cause is inferred from the CPU figures, not measured on its "
            "own. "
        )
    else:
        ratio.bound += "The cores were saturated, so the extra hop's kernel work competes with the server and curl. "
    ratio.bound += f"Direct: {direct.median:,.0f} MiB/s."

    names = {"tls": ("TLS connection + GET / (one after another)", "TLS"),
             "tcp": ("TCP connect + one-byte echo (one after another)", "TCP")}
    added_rows = {}
    for mode, (what, short) in names.items():
        section.add(Row(f"{what}, on the host, direct", "ms", connections[f"{mode} direct"]))
        section.add(Row(f"{what}, in a sandbox, through the gateway", "ms", connections[f"{mode} gateway"]))
        added_rows[mode] = section.add(Row(f"time added per {short} connection by the gateway (paired runs)", "ms",
                                           connections[f"{mode} added"],
                                           target=Target("≤ 1 ms", 1.0, "max") if mode == "tls" else None))
        section.add(Row(f"short {short} connections per second, direct", "1/s", connections[f"{mode} direct rate"],
                        higher_is_better=True))
        section.add(Row(f"short {short} connections per second, through the gateway", "1/s",
                        connections[f"{mode} gateway rate"], higher_is_better=True))
    tcp_added = added_rows["tcp"].median
    added_rows["tcp"].bound = (
        "Per connection the gateway accepts the redirected connection, reads SO_ORIGINAL_DST and maps the fake "
        "address back to the name. It waits for the first bytes to classify them, checks the policy, dials "
        "upstream and starts two splice relays. All of this runs on one Python event loop, which shares the "
        "cores with the client and the server."
    )
    added_rows["tls"].bound = (
        f"The set-up of a relayed connection (TCP row below) accounts for {tcp_added:.2f} ms. The remaining "
        f"{added_rows['tls'].median - tcp_added:.2f} ms come with the TLS exchange, whose further round trips "
        "(handshake, request, response, close) each cross the two splice relays and wake the event loop."
    )
    section.add(Row("name lookup of echo.test in a sandbox (getaddrinfo, gateway DNS)", "ms", connections["lookup"]))

    idle = section.add(Row("supervisor VmRSS, idle (fresh sandbox after one exec)", "MB", memory["idle rss"],
                           target=Target("≤ 30 MB", 30.0, "max")))
    section.add(Row("supervisor private memory (USS), idle", "MB", memory["idle private"]))
    section.add(Row("supervisor VmRSS, idle, sandbox made by `sealbox create` (detached)", "MB",
                    memory["cli idle rss"]))
    section.add(Row(f"supervisor VmRSS with {HELD_CONNECTIONS:,} open TCP connections", "MB", memory["held rss"]))
    per_connection = section.add(Row("VmRSS growth per open connection", "KiB", memory["per connection rss"],
                                     target=Target("≤ 64 KiB", 64.0, "max")))
    section.add(Row("private memory growth per open connection", "KiB", memory["per connection private"]))
    section.add(Row(f"supervisor open descriptors with {HELD_CONNECTIONS:,} connections", "fds",
                    memory["descriptors"]))
    section.add(Row(f"time to open {HELD_CONNECTIONS:,} connections with an echo each, in a sandbox", "s",
                    memory["open seconds"]))
    idle.bound = (
        "The supervisor is forked from the creating process, so VmRSS counts the creator's pages that it shares "
        "copy-on-write: the interpreter, every module loaded (the gateway, cryptography, dnspython) and, here, "
        f"the benchmark's own data. Only {median(memory['idle private']):.1f} MB are its own; a supervisor forked "
        f"by `sealbox create` has {median(memory['cli idle rss']):.1f} MB VmRSS."
    )
    per_connection.bound = (
        f"Growth from idle to {HELD_CONNECTIONS:,} connections, divided by {HELD_CONNECTIONS:,}, so one-time "
        "allocations on the first connections count too. Private memory grows more than VmRSS because pages "
        "shared with the creator turn private when written. Each connection holds two sockets, two splice pipes "
        f"({median(memory['descriptors']) / HELD_CONNECTIONS:.0f} descriptors per connection; pipe buffers are "
        "kernel memory, outside VmRSS) and the relay's coroutines and Python objects."
    )


async def run_benchmarks(runs: int, size: int, directory: Path) -> Section:
    section = Section("Gateway", "bench/gateway.py", command_line(), runs)
    with started_world(directory / "world") as world:
        volume = client_volume(world, directory / "clients")
        async with await Sandbox.create("bench-gateway", network=gateway_network(world), volumes=[volume]) as sandbox:
            throughput = await measure_throughput(sandbox, world, size, runs)
            connections = await measure_connections(sandbox, world, runs)
        memory = await measure_memory(world, volume, runs)
    add_rows(section, size, throughput, connections, memory, os.cpu_count() or 0)
    section.notes.append(
        "curl runs with --http1.1 on both sides, so the server's HTTP/2 code is not part of the comparison; "
        "its own -w '%{time_total}' times each transfer, which leaves out process start and sandbox exec. "
        "The connection loops run the host's /usr/bin/python3 on both sides, resolve the name once before "
        f"the loop, and make {CONNECTIONS_PER_RUN} connections per run. A run's value is the median of its "
        "connections, and the added time is the sandbox's value minus the host's of the same run."
    )
    return section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS, help="runs per measurement (default 20)")
    parser.add_argument("--size-mib", type=int, default=1024, help="download size in MiB (default 1024)")
    parser.add_argument("--json", help="write the results to this file instead of printing them")
    options = parser.parse_args()
    require_root()
    raise_open_file_limit()
    load_before = load_average()
    started = time.time()
    with sealbox_home(), tempfile.TemporaryDirectory(prefix="sealbox-bench-gateway-") as directory:
        section = asyncio.run(run_benchmarks(options.runs, options.size_mib * MIB, Path(directory)))
    section.started = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started))
    section.seconds = time.time() - started
    section.load_before = load_before
    section.load_after = load_average()
    write_section(section, options.json)


if __name__ == "__main__":
    main()
