"""Shared parts of the benchmark scripts: statistics, results, machine facts, the test world.

Every benchmark script writes one JSON document (a Section) that run_all.py
renders into docs/benchmarks.md. A Row contains every sample of one measurement,
so the document can show the median and the 90th percentile of the same runs.

"p90" is the 90th percentile on the worse side, by the nearest-rank method.
For times, sizes and overheads it is the value that 90 % of the runs stayed
at or below. For rates and throughput ratios it is the value that 90 % of
the runs reached or beat. A target is judged on the median.

Traffic goes only to the test world's servers on 127.0.0.1 and to the network
namespaces of the sandboxes that a script creates: names such as echo.test are
pointed at the world through the gateway's static map (sandboxes) or curl's
--connect-to and git's http.curloptResolve (host clients), never through the
host's resolver.
"""

from __future__ import annotations

import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

# Sandboxes in benchmarks resolve names only through the gateway's static map, never the host's resolver.
os.environ.setdefault("SEALBOX_SYSTEM_RESOLVER", "0")

REPO = Path(__file__).resolve().parent.parent
BENCH_DIR = REPO / "bench"
# The host's own interpreter, which the default `host` image also has, so the
# client scripts run with the same Python and OpenSSL inside a sandbox and out.
SYSTEM_PYTHON = "/usr/bin/python3"
CLIENTS_DIR = BENCH_DIR / "clients"
# Mount point of the client scripts and the world CA inside a sandbox.
SANDBOX_CLIENTS = "/bench"
DEFAULT_RUNS = 20
GIB = 1 << 30
MIB = 1 << 20
COMMAND_TIMEOUT = 300.0


# -- statistics ----------------------------------------------------------------


def nearest_rank(values: Sequence[float], fraction: float) -> float:
    """Return the nearest-rank percentile (fraction in 0..1) of values."""
    if not values:
        raise ValueError("nearest_rank needs at least one value")
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    """Return the median (the mean of the two middle values for an even count)."""
    if not values:
        raise ValueError("median needs at least one value")
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


@dataclass(frozen=True)
class Target:
    """A goal for the median: at most (``max``) or at least (``min``) ``limit``, in the row's unit."""

    text: str
    limit: float
    kind: Literal["max", "min"]

    def met(self, value: float) -> bool:
        return value <= self.limit if self.kind == "max" else value >= self.limit


@dataclass
class Row:
    """One measurement: every sample, its unit, the target and what bounds the result."""

    name: str
    unit: str
    samples: list[float]
    higher_is_better: bool = False
    target: Target | None = None
    bound: str = ""

    @property
    def median(self) -> float:
        return median(self.samples)

    @property
    def p90(self) -> float:
        """The 90th percentile on the worse side (see the module docstring)."""
        return nearest_rank(self.samples, 0.1 if self.higher_is_better else 0.9)

    @property
    def status(self) -> str:
        """``met`` or ``missed`` for a row with a target, else an empty string."""
        if self.target is None:
            return ""
        return "met" if self.target.met(self.median) else "missed"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(median=self.median, p90=self.p90, status=self.status)
        return data


@dataclass
class Table:
    """A free-form table of a section, such as a breakdown of create time."""

    title: str
    header: list[str]
    rows: list[list[str]]
    note: str = ""


@dataclass
class Section:
    """The result of one benchmark script."""

    title: str
    script: str
    command: str
    runs: int
    started: str = ""
    seconds: float = 0.0
    load_before: str = ""
    load_after: str = ""
    rows: list[Row] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        return row

    def row(self, name: str) -> Row:
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(f"no row named {name!r} in section {self.title!r}")

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "script": self.script,
            "command": self.command,
            "runs": self.runs,
            "started": self.started,
            "seconds": self.seconds,
            "load_before": self.load_before,
            "load_after": self.load_after,
            "rows": [row.to_json() for row in self.rows],
            "tables": [asdict(table) for table in self.tables],
            "notes": self.notes,
        }


def format_value(value: float, unit: str) -> str:
    """Format a number for a table with a precision that suits its size."""
    if unit in ("x",):
        return f"{value:.2f}x"
    if abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}"


def print_section(section: Section) -> None:
    """Print a section's rows as plain text, for a script run on its own."""
    print(f"\n== {section.title} ({section.runs} runs, {section.seconds:.0f} s)")
    for row in section.rows:
        target = f"  target {row.target.text}: {row.status}" if row.target else ""
        print(f"  {row.name}: median {format_value(row.median, row.unit)}, "
              f"p90 {format_value(row.p90, row.unit)}{target}")
        if row.bound:
            print(f"    bound: {row.bound}")
    for table in section.tables:
        print(f"  -- {table.title}")
        for cells in table.rows:
            print("     " + " | ".join(cells))
    for note in section.notes:
        print(f"  note: {note}")


# -- script plumbing -------------------------------------------------------------


def load_average() -> str:
    """Return the 1, 5 and 15 minute load averages from /proc/loadavg."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def command_line() -> str:
    """Return the command that started this process, with paths inside the repository made relative."""
    parts = []
    for part in sys.orig_argv:
        path = Path(part)
        if path.is_absolute() and path.is_relative_to(REPO):
            part = str(path.relative_to(REPO))
        parts.append(part)
    prefix = "sudo " if os.environ.get("SUDO_USER") else ""
    return prefix + " ".join(parts)


def require_root() -> None:
    if os.geteuid() != 0:
        sys.exit("the benchmarks create sandboxes and must run as root: sudo .venv/bin/python bench/run_all.py")


def raise_open_file_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit and return the new soft limit.

    Sandbox supervisors inherit the limit from their creator; the gateway
    needs about three descriptors per relayed connection.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@contextmanager
def sealbox_home() -> Iterator[Path]:
    """Point SEALBOX_HOME at a fresh temporary directory for the duration of the block."""
    previous = os.environ.get("SEALBOX_HOME")
    directory = Path(tempfile.mkdtemp(prefix="sealbox-bench-"))
    os.environ["SEALBOX_HOME"] = str(directory)
    try:
        yield directory
    finally:
        if previous is None:
            os.environ.pop("SEALBOX_HOME", None)
        else:
            os.environ["SEALBOX_HOME"] = previous
        shutil.rmtree(directory, ignore_errors=True)


def write_section(section: Section, json_path: str | None) -> None:
    """Write the section as JSON to json_path, or print it when no path is given."""
    if json_path:
        Path(json_path).write_text(json.dumps(section.to_json(), indent=1))
    else:
        print_section(section)


def run_checked(argv: Sequence[str], *, env: dict[str, str] | None = None, timeout: float = COMMAND_TIMEOUT,
                cwd: str | Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command on the host and raise RuntimeError with its stderr if it fails."""
    completed = subprocess.run(list(argv), env=env, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])} ... failed with exit code {completed.returncode}: "
                           f"{completed.stderr.strip()[-800:]}")
    return completed


def timed(argv: Sequence[str], **options: Any) -> float:
    """Run a command to completion and return its wall time in seconds; raise if it fails."""
    started = time.perf_counter()
    run_checked(argv, **options)
    return time.perf_counter() - started


# -- sandboxes -------------------------------------------------------------------


def client_volume(world: Any, directory: Path) -> str:
    """Copy the client scripts and the world CA into directory; return the read-only volume spec for it."""
    directory.mkdir(parents=True, exist_ok=True)
    for script in CLIENTS_DIR.glob("*.py"):
        shutil.copy(script, directory / script.name)
    shutil.copy(world.ca.cert_path, directory / "world-ca.pem")
    return f"{directory}:{SANDBOX_CLIENTS}:ro"


def vm_rss_kib(pid: int) -> int:
    """Return a process's resident set size in KiB, from VmRSS in /proc/PID/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS line in /proc/{pid}/status")


def expect_success(output: Any, what: str) -> str:
    """Return a sandbox command's stdout, or raise RuntimeError with its exit code and stderr."""
    if output.exit_code != 0:
        raise RuntimeError(f"{what} failed in the sandbox with exit code {output.exit_code}: "
                           f"{output.stderr_text.strip()[-800:]}")
    return output.stdout_text


def curl_result(stdout: str, what: str, expected_size: int, *, upload: bool = False) -> float:
    """Parse the ``-w '%{http_code} %{size_*} %{time_total}'`` line of curl; return the time in seconds.

    Raise RuntimeError unless the status is 200 and expected_size bytes moved.
    """
    line = stdout.strip().splitlines()[-1] if stdout.strip() else ""
    fields = line.split()
    if len(fields) != 3:
        raise RuntimeError(f"{what}: unexpected curl output {line[:200]!r}: expected 'STATUS SIZE SECONDS'")
    status, size, seconds = fields
    if status != "200" or int(float(size)) != expected_size:
        direction = "uploaded" if upload else "downloaded"
        raise RuntimeError(f"{what}: status {status}, {size} bytes {direction}: expected 200 and {expected_size}")
    return float(seconds)


def private_memory_kib(pid: int) -> int:
    """Return the memory only this process maps (Private_Clean + Private_Dirty of smaps_rollup), in KiB."""
    total = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            total += int(line.split()[1])
    return total


def machine_cpu_jiffies() -> tuple[int, int]:
    """Return (busy, total) CPU time of all cores since boot, in clock ticks, from the cpu line of /proc/stat."""
    fields = [int(value) for value in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is already counted in user and nice).
    total = sum(fields[:8])
    idle = fields[3] + fields[4]
    return total - idle, total


def busy_percent(before: tuple[int, int], after: tuple[int, int]) -> float:
    """Return the share of all cores' time that was busy between two machine_cpu_jiffies() readings."""
    busy = after[0] - before[0]
    total = after[1] - before[1]
    return busy / total * 100 if total else 0.0


def size_label(size: int) -> str:
    """Return a transfer size as ``1 GiB`` or ``256 MiB``."""
    return f"{size // GIB} GiB" if size % GIB == 0 else f"{size // MIB} MiB"


def cpu_seconds(pid: int) -> float:
    """Return the user plus system CPU time of a process (all its threads) so far, in seconds."""
    # The command name in field 2 may contain spaces, so count fields from its closing parenthesis.
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def started_world(directory: Path) -> Iterator[Any]:
    """Start the sealbox test world in directory (the large repository comes from its cache) and stop it after."""
    from sealbox.testworld.repogen import default_cache_dir, ensure_large_repo
    from sealbox.testworld.world import TestWorld

    repo = ensure_large_repo(default_cache_dir())
    world = TestWorld(directory, repo_cache=repo.parent)
    world.start()
    try:
        yield world
    finally:
        world.stop()


def world_server_pid(world: Any) -> int:
    """Return the PID of the world's Python servers (https, tcp echo and the others)."""
    return int(world.describe()["processes"]["servers"])
