"""Runtime benchmark: sandbox create, first exec, exec and `sealbox run`, beside bare runc.

Usage: sudo .venv/bin/python bench/runtime.py [--runs N] [--json FILE]

Measures, each over N runs (default 20):
- the floors: bare `runc run` of a minimal bundle (a static busybox running
  `true`), bare `runc exec` in a running busybox container, the Python
  start-up and the imports of the SDK and the CLI;
- SDK `Sandbox.create` to the end of the first `exec` of /bin/true, with
  `Network.none()` and with the default network;
- `exec` of /bin/true on a running sandbox;
- `sealbox run -- true` wall time, with the default network and --no-net;
- where create time goes, by timing the supervisor's setup functions
  (SetupTracer).
Nothing here opens a network connection.
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
import importlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import ssl  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from typing import Any  # noqa: E402

from bench.common import (  # noqa: E402
    DEFAULT_RUNS,
    REPO,
    Row,
    Section,
    Table,
    Target,
    command_line,
    load_average,
    median,
    nearest_rank,
    require_root,
    run_checked,
    sealbox_home,
    timed,
    write_section,
)
from sealbox import Network, Sandbox  # noqa: E402

BUSYBOX = "/bin/busybox"
SDK_IMPORT = "import sealbox"
CLI_IMPORT = "import sealbox.cli"
# The CLI imports the gateway before it forks a supervisor with a network.
CLI_GATEWAY_IMPORT = "import sealbox.cli, sealbox.gateway.server"
RUNC_RUN_FLOOR = "floor: bare `runc run` of the busybox bundle (true)"
RUNC_EXEC_FLOOR = "floor: bare `runc exec` of true in a running busybox container"
TRUST_STORE_FLOOR = "floor: `ssl.create_default_context()` (loads the system trust store)"
EXEC_OVERHEAD = "exec time beyond bare `runc exec` (paired runs)"
EXEC_WARMUP = 5
FIRST_EXEC_TARGET_MS = 60.0
IMPORT_TABLE_SIZE = 12


# -- floors: bare runc and Python ---------------------------------------------------


def runc_binary() -> str:
    binary = shutil.which("runc")
    if binary is None:
        raise SystemExit("runc not found: install it with `apt-get install runc`")
    return binary


def build_busybox_bundle(bundle: Path, args: list[str]) -> dict[str, Any]:
    """Write an OCI bundle whose read-only rootfs contains only a static busybox, running args; return its config.

    The config is `runc spec`'s default (new pid, network, ipc, uts and mount
    namespaces) with the process changed to args and no terminal.
    """
    if not os.access(BUSYBOX, os.X_OK):
        raise SystemExit(f"{BUSYBOX} not found: install the static busybox with `apt-get install busybox-static`")
    (bundle / "rootfs" / "bin").mkdir(parents=True)
    shutil.copy(BUSYBOX, bundle / "rootfs" / "bin" / "busybox")
    run_checked([runc_binary(), "spec", "--bundle", str(bundle)])
    config_path = bundle / "config.json"
    config = json.loads(config_path.read_text())
    config["process"]["args"] = args
    config["process"]["terminal"] = False
    config["root"] = {"path": "rootfs", "readonly": True}
    config_path.write_text(json.dumps(config, indent=1))
    return config


class BusyboxFloor:
    """Bare runc with minimal busybox bundles, in a temporary --root: the floor of create and exec.

    While active, one container (busybox sleep) runs for `exec_once`, and
    `run_once` starts and ends a fresh container running `true`. Containers
    left in the --root are deleted at the end.
    """

    def __enter__(self) -> BusyboxFloor:
        self.directory = Path(tempfile.mkdtemp(prefix="sealbox-bench-runc-"))
        self.root = str(self.directory / "state")
        self.run_bundle = self.directory / "run-bundle"
        self.config = build_busybox_bundle(self.run_bundle, ["/bin/busybox", "true"])
        exec_bundle = self.directory / "exec-bundle"
        build_busybox_bundle(exec_bundle, ["/bin/busybox", "sleep", "600"])
        # Detached, the container's stdio must not be pipes that this process would wait on.
        subprocess.run([runc_binary(), "--root", self.root, "run", "--detach", "--bundle", str(exec_bundle),
                        "floor-exec"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=True, timeout=60)
        self.runs = 0
        for _ in range(EXEC_WARMUP):
            self.exec_once()
        return self

    def run_once(self) -> float:
        """Time `runc run` of `true` in ms; runc deletes the container when it exits."""
        self.runs += 1
        command = [runc_binary(), "--root", self.root, "run", "--bundle", str(self.run_bundle), f"floor-{self.runs}"]
        return timed(command) * 1000

    def exec_once(self) -> float:
        """Time `runc exec` of `true` in the running container, in ms."""
        return timed([runc_binary(), "--root", self.root, "exec", "floor-exec", "/bin/busybox", "true"]) * 1000

    def __exit__(self, *exc_info: object) -> None:
        listed = subprocess.run([runc_binary(), "--root", self.root, "list", "-q"], capture_output=True, text=True)
        for container in listed.stdout.split():
            subprocess.run([runc_binary(), "--root", self.root, "delete", "--force", container], capture_output=True)
        shutil.rmtree(self.directory, ignore_errors=True)


def measure_python(code: str, runs: int) -> list[float]:
    """Time `python -c code` with the interpreter that the SDK starts supervisors with, in ms."""
    return [timed([sys.executable, "-c", code]) * 1000 for _ in range(runs)]


def measure_trust_store_load(runs: int) -> list[float]:
    """Time ssl.create_default_context() in this process, which loads the system trust store, in ms."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        ssl.create_default_context()
        times.append((time.perf_counter() - started) * 1000)
    return times


def import_times(code: str, runs: int) -> dict[str, tuple[int, list[float]]]:
    """Run `python -X importtime -c code` runs times; return each module's nesting level and cumulative ms."""
    found: dict[str, tuple[int, list[float]]] = {}
    for _ in range(runs):
        completed = run_checked([sys.executable, "-X", "importtime", "-c", code])
        for line in completed.stderr.splitlines():
            if not line.startswith("import time:") or "imported package" in line:
                continue
            _, cumulative, package = line[len("import time:"):].split("|")
            name = package.strip()
            level = (len(package) - len(package.lstrip()) - 1) // 2
            found.setdefault(name, (level, []))[1].append(int(cumulative) / 1000)
    return found


# -- the SDK and the CLI -----------------------------------------------------------


async def measure_create_and_exec(runs: int, floor: BusyboxFloor) -> dict[str, list[float]]:
    """Create a sandbox, exec /bin/true once, remove it; per network, after one bare `runc run`; times in ms."""
    samples: dict[str, list[float]] = defaultdict(list)
    for index in range(runs):
        samples["runc run"].append(floor.run_once())
        for label, network in (("none", Network.none()), ("default", None)):
            started = time.perf_counter()
            sandbox = await Sandbox.create(f"bench-{label}-{index}", network=network)
            try:
                created = time.perf_counter()
                output = await sandbox.exec("/bin/true")
                finished = time.perf_counter()
                if output.exit_code != 0:
                    raise RuntimeError(f"/bin/true exited with {output.exit_code}: {output.stderr_text[:300]}")
            finally:
                removing = time.perf_counter()
                await sandbox.remove()
                removed = time.perf_counter()
            samples[f"create {label}"].append((created - started) * 1000)
            samples[f"first exec {label}"].append((finished - created) * 1000)
            samples[f"total {label}"].append((finished - started) * 1000)
            samples[f"remove {label}"].append((removed - removing) * 1000)
    return samples


async def measure_exec(runs: int, floor: BusyboxFloor) -> dict[str, list[float]]:
    """Time `exec` of /bin/true on a running sandbox (default network) and bare `runc exec`, alternating, in ms."""
    samples: dict[str, list[float]] = defaultdict(list)
    async with await Sandbox.create("bench-exec") as sandbox:
        for _ in range(EXEC_WARMUP):
            await sandbox.exec("/bin/true")
        for _ in range(runs):
            samples["runc exec"].append(floor.exec_once())
            started = time.perf_counter()
            output = await sandbox.exec("/bin/true")
            samples["exec"].append((time.perf_counter() - started) * 1000)
            if output.exit_code != 0:
                raise RuntimeError(f"/bin/true exited with {output.exit_code}: {output.stderr_text[:300]}")
    return samples


def measure_cli_run(runs: int, extra: list[str]) -> list[float]:
    """Time `sealbox run [extra] -- true` as a new process, in ms."""
    sealbox = str(Path(sys.executable).parent / "sealbox")
    return [timed([sealbox, "run", *extra, "--", "true"]) * 1000 for _ in range(runs)]


# -- where create time goes --------------------------------------------------------

# Functions timed during the traced runs: (module, attribute path). The
# supervisor is forked from the creating process, so wrappers installed here
# also run in it. Each call appends its start and end to a trace file.
TRACED = (
    ("sealbox.runtime.manager", "_spawn_supervisor"),
    ("sealbox.runtime.supervisor", "make_mounts_private"),
    ("sealbox.runtime.supervisor", "create_namespace"),
    ("sealbox.runtime.supervisor", "bind_listeners"),
    ("sealbox.runtime.supervisor", "assemble_rootfs"),
    ("sealbox.runtime.supervisor", "write_etc"),
    ("sealbox.gateway.server", "Gateway.__init__"),
    ("sealbox.runtime.supervisor", "build_config"),
    ("sealbox.runtime.oci", "OciRuntime.run_detached"),
)

# Checkpoints in the order they happen: (key, description of the step that ends there).
STEPS = (
    ("_spawn_supervisor start", "SDK before forking the supervisor: image and runtime checks, lock, registry row"),
    ("make_mounts_private start", "double fork, supervisor logging and registry set-up, spec parsing"),
    ("create_namespace start", "private mounts, child subreaper"),
    ("create_namespace end", "network namespace with its nftables rules"),
    ("bind_listeners end", "gateway listener sockets bound inside the namespace"),
    ("assemble_rootfs end", "root filesystem overlay"),
    ("write_etc end", "generated /etc files"),
    ("Gateway.__init__ end", "gateway construction"),
    ("build_config end", "OCI config built"),
    ("OciRuntime.run_detached start", "config.json written"),
    ("OciRuntime.run_detached end", "`runc run --detach` (container init started)"),
    ("_spawn_supervisor end", "registry row set to running, report read by the SDK"),
    ("created", "SDK: registry row read, create returns"),
    ("exec done", "first exec of /bin/true (`runc exec` and the SDK around it)"),
)


class SetupTracer:
    """Wrap the TRACED functions while active; each call appends its start and end to trace_path.

    A function that no longer exists under its name is skipped and listed in
    `missing`, so a refactored supervisor leaves a step out of the table
    instead of breaking the benchmark.
    """

    def __init__(self, trace_path: Path) -> None:
        self.trace_path = trace_path
        self.missing: list[str] = []
        self._restore: list[tuple[Any, str, Any]] = []

    def _wrap(self, event: str, function: Any) -> Any:
        trace_path = self.trace_path

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.time()
            try:
                return function(*args, **kwargs)
            finally:
                end = time.time()
                with open(trace_path, "a") as trace:
                    trace.write(json.dumps({"event": event, "start": start, "end": end}) + "\n")

        return wrapper

    def __enter__(self) -> SetupTracer:
        for module_name, dotted in TRACED:
            owner: Any = importlib.import_module(module_name)
            *owners, attribute = dotted.split(".")
            for name in owners:
                owner = getattr(owner, name, None)
            original = getattr(owner, attribute, None) if owner is not None else None
            if original is None:
                self.missing.append(f"{module_name}.{dotted}")
                continue
            self._restore.append((owner, attribute, original))
            setattr(owner, attribute, self._wrap(dotted, original))
        return self

    def __exit__(self, *exc_info: object) -> None:
        for owner, attribute, original in reversed(self._restore):
            setattr(owner, attribute, original)
        self._restore.clear()


def read_trace(path: Path) -> dict[str, float]:
    """Return checkpoint times from a trace file: the first start and end of each event."""
    checkpoints: dict[str, float] = {}
    if not path.exists():
        return checkpoints
    for line in path.read_text().splitlines():
        event = json.loads(line)
        checkpoints.setdefault(f"{event['event']} start", event["start"])
        checkpoints.setdefault(f"{event['event']} end", event["end"])
    return checkpoints


async def measure_breakdown(runs: int, home: Path) -> tuple[dict[str, list[float]], int, list[str], dict[str, Any]]:
    """Create, exec once and remove `runs` sandboxes (default network) with the setup traced.

    Return the ms of each step, the number of runs in which every checkpoint
    was seen, the traced functions that were not found, and the OCI config
    that sealbox wrote for the last sandbox.
    """
    trace = home / "bench-trace.jsonl"
    steps: dict[str, list[float]] = defaultdict(list)
    complete = 0
    config: dict[str, Any] = {}
    with SetupTracer(trace) as tracer:
        for index in range(runs):
            trace.unlink(missing_ok=True)
            started = time.time()
            sandbox = await Sandbox.create(f"bench-trace-{index}")
            try:
                created = time.time()
                await sandbox.exec("/bin/true")
                done = time.time()
                config = json.loads((Path(sandbox.audit_path).parent / "bundle" / "config.json").read_text())
            finally:
                await sandbox.remove()
            checkpoints = read_trace(trace)
            checkpoints["created"] = created
            checkpoints["exec done"] = done
            previous = started
            seen = 0
            for key, _ in STEPS:
                if key in checkpoints:
                    steps[key].append((checkpoints[key] - previous) * 1000)
                    previous = checkpoints[key]
                    seen += 1
            complete += seen == len(STEPS)
    trace.unlink(missing_ok=True)
    return steps, complete, tracer.missing, config


# -- the report ------------------------------------------------------------------------


def breakdown_table(steps: dict[str, list[float]], complete: int, runs: int, missing: list[str]) -> Table:
    total = sum(median(values) for values in steps.values())
    rows = []
    for key, description in STEPS:
        values = steps.get(key)
        if not values:
            continue
        share = median(values) / total * 100 if total else 0.0
        rows.append([description, f"{median(values):.1f}", f"{nearest_rank(values, 0.9):.1f}", f"{share:.0f} %"])
    rows.append(["sum of the step medians", f"{total:.1f}", "", "100 %"])
    note = (
        "Each step ends at a traced function's start or end, named in the step, and starts where the previous "
        "step ended. The wrappers are installed in the benchmark process; the supervisor is forked from it, so "
        f"they run in the supervisor too. {complete} of {runs} runs recorded every checkpoint."
    )
    if missing:
        note += f" Not found, so left out: {', '.join(missing)}."
    return Table("Where `Sandbox.create` and the first exec spend their time (default network)",
                 ["step", "median ms", "p90 ms", "share"], rows, note)


def import_table(found: dict[str, tuple[int, list[float]]], runs: int) -> Table:
    """Show the modules with the largest cumulative import time, nested at most three levels deep."""
    candidates = [(median(values), level, name) for name, (level, values) in found.items()
                  if 1 <= level <= 3 and len(values) == runs]
    candidates.sort(reverse=True)
    rows = [[name, str(level), f"{value:.1f}"]
            for value, level, name in candidates[:IMPORT_TABLE_SIZE]]
    note = (f"`python -X importtime -c '{CLI_GATEWAY_IMPORT}'`, {runs} runs: what `sealbox run` imports before it "
            "forks a supervisor with a network. Cumulative time includes the modules each one imports, so a "
            "module's time also counts in the modules above it (nesting level 1 is imported by the command "
            "itself). -X importtime itself slows imports down.")
    return Table("Largest imports of `sealbox run`", ["module", "nesting level", "median ms"], rows, note)


def describe_bundle(config: dict[str, Any]) -> str:
    """Summarise an OCI config: mounts, namespaces, seccomp rules and the program runc starts."""
    linux = config.get("linux", {})
    namespaces = ", ".join(namespace["type"] for namespace in linux.get("namespaces", []))
    seccomp = linux.get("seccomp")
    rules = f"{len(seccomp.get('syscalls', []))} seccomp rules" if seccomp else "no seccomp"
    process = config.get("process", {}).get("args", ["?"])[0]
    return f"{len(config.get('mounts', []))} mounts, namespaces {namespaces}, {rules}, process {process}"


def fill_bounds(section: Section, steps: dict[str, list[float]], config: dict[str, Any],
                floor_config: dict[str, Any]) -> None:
    """Write what bounds each targeted result, from the measured floors and the breakdown."""
    step = {key: median(values) for key, values in steps.items()}
    runc_run = section.row(RUNC_RUN_FLOOR).median
    runc_exec = section.row(RUNC_EXEC_FLOOR).median
    python_start = section.row("floor: `python -c pass`").median
    cli_import = section.row(f"floor: `python -c '{CLI_GATEWAY_IMPORT}'`").median
    trust_store = section.row(TRUST_STORE_FLOOR).median
    exec_row = section.row("exec of /bin/true on a running sandbox")
    sdk_share = section.row(EXEC_OVERHEAD).median

    runc_detached = step.get("OciRuntime.run_detached end", 0.0)
    namespace = step.get("create_namespace end", 0.0) + step.get("bind_listeners end", 0.0)
    gateway = step.get("Gateway.__init__ end", 0.0)
    for label, network in (("none", "Network.none()"), ("default", "default network")):
        row = section.row(f"SDK create to first exec finished, {network}")
        create = section.row(f"of which Sandbox.create, {network}").median
        first_exec = section.row(f"of which the first exec, {network}").median
        extra = first_exec - exec_row.median
        row.bound = (
            f"runc: bare `runc run` of a busybox bundle takes {runc_run:.0f} ms and bare `runc exec` "
            f"{runc_exec:.0f} ms, together {runc_run + runc_exec:.0f} ms or "
            f"{(runc_run + runc_exec) / FIRST_EXEC_TARGET_MS * 100:.0f} % of the target. "
            f"Here Sandbox.create takes {create:.0f} ms and the first exec {first_exec:.0f} ms "
            f"({abs(extra):.0f} ms {'more' if extra >= 0 else 'less'} than a later exec)."
        )
        if label == "default":
            row.bound += (
                f" Traced: `runc run --detach` {runc_detached:.0f} ms for sealbox's bundle "
                f"({describe_bundle(config)}; the busybox bundle has {describe_bundle(floor_config)}), "
                f"gateway construction {gateway:.0f} ms, namespace, nftables and listeners {namespace:.0f} ms "
                f"(table below). For scale, `ssl.create_default_context()` takes {trust_store:.0f} ms because it "
                "loads the system trust store."
            )
    if sdk_share > 0:
        share = (f"the SDK's exec took {sdk_share:.1f} ms more (median of the paired differences). That share "
                 "covers the registry read, the process settings, runc's --log and --pid-file, the subprocess "
                 "and its pipes")
    else:
        share = (f"the SDK's exec took {-sdk_share:.1f} ms less (median of the paired differences), so its own "
                 "work is within the noise")
    exec_row.bound = f"runc: bare `runc exec` takes {runc_exec:.1f} ms, and in the same loop {share}."
    run_row = section.row("`sealbox run -- true` wall time")
    create_default = section.row("SDK create to first exec finished, default network").median
    remove_default = section.row("Sandbox.remove, default network").median
    run_row.bound = (
        f"Python: the CLI's interpreter start and imports take {cli_import:.0f} ms (`python -c pass` "
        f"{python_start:.0f} ms), before create and first exec ({create_default:.0f} ms in the SDK) and "
        f"removal ({remove_default:.0f} ms) run in series."
    )


async def run_benchmarks(runs: int, home: Path) -> Section:
    section = Section("Runtime", "bench/runtime.py", command_line(), runs)
    with BusyboxFloor() as floor:
        samples = await measure_create_and_exec(runs, floor)
        exec_samples = await measure_exec(runs, floor)

    section.add(Row(RUNC_RUN_FLOOR, "ms", samples["runc run"]))
    section.add(Row(RUNC_EXEC_FLOOR, "ms", exec_samples["runc exec"]))
    section.add(Row(TRUST_STORE_FLOOR, "ms", measure_trust_store_load(runs)))
    section.add(Row("floor: `python -c pass`", "ms", measure_python("pass", runs)))
    for code in (SDK_IMPORT, CLI_IMPORT, CLI_GATEWAY_IMPORT):
        section.add(Row(f"floor: `python -c '{code}'`", "ms", measure_python(code, runs)))

    first_exec_target = Target(f"≤ {FIRST_EXEC_TARGET_MS:g} ms", FIRST_EXEC_TARGET_MS, "max")
    for label, network in (("none", "Network.none()"), ("default", "default network")):
        section.add(Row(f"SDK create to first exec finished, {network}", "ms", samples[f"total {label}"],
                        target=first_exec_target))
    for label, network in (("none", "Network.none()"), ("default", "default network")):
        section.add(Row(f"of which Sandbox.create, {network}", "ms", samples[f"create {label}"]))
        section.add(Row(f"of which the first exec, {network}", "ms", samples[f"first exec {label}"]))
    for label, network in (("none", "Network.none()"), ("default", "default network")):
        section.add(Row(f"Sandbox.remove, {network}", "ms", samples[f"remove {label}"]))

    section.add(Row("exec of /bin/true on a running sandbox", "ms", exec_samples["exec"],
                    target=Target("≤ 25 ms", 25.0, "max")))
    section.add(Row(EXEC_OVERHEAD, "ms", [sdk - bare for sdk, bare in zip(exec_samples["exec"],
                                                                          exec_samples["runc exec"])]))
    section.add(Row("`sealbox run -- true` wall time", "ms", measure_cli_run(runs, []),
                    target=Target("≤ 200 ms", 200.0, "max")))
    section.add(Row("`sealbox run --no-net -- true` wall time", "ms", measure_cli_run(runs, ["--no-net"])))

    steps, complete, missing, config = await measure_breakdown(runs, home)
    section.tables.append(breakdown_table(steps, complete, runs, missing))
    section.tables.append(import_table(import_times(CLI_GATEWAY_IMPORT, runs), runs))
    fill_bounds(section, steps, config, floor.config)
    interpreter = Path(sys.executable)
    if interpreter.is_relative_to(REPO):
        interpreter = interpreter.relative_to(REPO)
    section.notes.append(
        "Sandboxes use the default `host` image. The floors run the same work without sealbox: bare runc with "
        "a minimal bundle, and the interpreter that the SDK and the CLI run in "
        f"({interpreter}). Bare runc runs in the same loops as the sandboxes it is compared with: one bare "
        "`runc run` before each pair of creates, and one bare `runc exec` before each exec."
    )
    return section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS, help="runs per measurement (default 20)")
    parser.add_argument("--json", help="write the results to this file instead of printing them")
    options = parser.parse_args()
    require_root()
    load_before = load_average()
    started = time.time()
    with sealbox_home() as home:
        section = asyncio.run(run_benchmarks(options.runs, home))
    section.started = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started))
    section.seconds = time.time() - started
    section.load_before = load_before
    section.load_after = load_average()
    write_section(section, options.json)


if __name__ == "__main__":
    main()
