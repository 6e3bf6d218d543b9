"""Run every benchmark script and rewrite docs/benchmarks.md with the results.

Usage: sudo .venv/bin/python bench/run_all.py [--runs N] [--size-mib M] [--only NAME ...]
                                              [--no-mitmproxy] [--output FILE]

Runs bench/runtime.py, bench/gateway.py and bench/secrets.py one after
another, each as its own process with --json, then renders their results,
the machine's facts and the exact command into one Markdown page. A script
that fails gets a section with its error instead of numbers. With the
defaults (20 runs, 1 GiB transfers) the whole suite takes about 15 minutes
on 2 cores.

Before each script it waits, at most QUIET_WAIT seconds, until other work
leaves the CPU mostly idle. Every sample is also kept in bench/results.json,
next to the page it came from; `--render-only` rewrites the page from that
file without measuring, and `--only` replaces just the named scripts'
sections in it.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/secrets.py would shadow the standard library's secrets module, so the
# script's own directory leaves the import path and the helpers are imported
# from the package "bench" instead.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

from bench.common import (  # noqa: E402
    BENCH_DIR,
    DEFAULT_RUNS,
    REPO,
    busy_percent,
    command_line,
    format_value,
    load_average,
    machine_cpu_jiffies,
    require_root,
)

SCRIPTS = ("runtime", "gateway", "secrets")
SIZED_SCRIPTS = ("gateway", "secrets")
MITMDUMP = BENCH_DIR / ".venv-mitmproxy" / "bin" / "mitmdump"
RESULTS = BENCH_DIR / "results.json"
SCRIPT_TIMEOUT = 1800.0
# Before each script, wait up to QUIET_WAIT seconds for the machine to be at
# most QUIET_PERCENT busy over a QUIET_SAMPLE-second sample, so that other
# work on a shared machine disturbs fewer runs. The script starts anyway after that.
QUIET_PERCENT = 25.0
QUIET_SAMPLE = 2.0
QUIET_WAIT = 120.0


# -- machine facts ------------------------------------------------------------------


def first_line(argv: list[str]) -> str:
    """Return the first output line of a command, or 'not found' if it cannot run."""
    try:
        completed = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return "not found"
    output = (completed.stdout or completed.stderr).strip()
    return output.splitlines()[0] if output else "not found"


def source_revision() -> str:
    """Return the commit that HEAD names, noting uncommitted changes under src/ that the run also measured."""
    commit = first_line(["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"])
    changed = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "src"],
                             capture_output=True, text=True, timeout=60).stdout.split("\n")
    changed = [line[3:] for line in changed if line.strip()]
    if changed:
        return f"{commit} with uncommitted changes in {', '.join(changed)}"
    return commit


def machine_facts() -> list[tuple[str, str]]:
    """Return (name, value) pairs: CPU, cores, memory, kernel, Debian and tool versions."""
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory_kib = int(line.split()[1])
    debian = Path("/etc/debian_version").read_text().strip() if Path("/etc/debian_version").exists() else "not Debian"
    return [
        ("CPU", cpu),
        ("cores", str(os.cpu_count())),
        ("memory", f"{memory_kib / (1 << 20):.1f} GiB"),
        ("kernel", platform.release()),
        ("Debian", debian),
        ("runc", first_line(["runc", "--version"])),
        ("Python (SDK, CLI, supervisor)", platform.python_version()),
        ("Python (clients)", first_line(["/usr/bin/python3", "--version"])),
        ("curl", first_line(["curl", "--version"])),
        ("git", first_line(["git", "--version"])),
        ("OpenSSL", first_line(["openssl", "version"])),
        ("mitmproxy", first_line([str(MITMDUMP), "--version"]) if MITMDUMP.exists() else "not installed"),
    ]


# -- running the scripts ------------------------------------------------------------


def wait_for_quiet() -> float:
    """Wait until the machine's CPU is at most QUIET_PERCENT busy or QUIET_WAIT passed; return the last busy %."""
    deadline = time.monotonic() + QUIET_WAIT
    while True:
        before = machine_cpu_jiffies()
        time.sleep(QUIET_SAMPLE)
        busy = busy_percent(before, machine_cpu_jiffies())
        if busy <= QUIET_PERCENT or time.monotonic() > deadline:
            return busy
        print(f"waiting for other work: the machine is {busy:.0f} % busy", file=sys.stderr, flush=True)


def run_script(name: str, options: argparse.Namespace, directory: Path) -> dict[str, Any]:
    """Run bench/NAME.py with --json and return its section, or a section that carries the error."""
    json_path = directory / f"{name}.json"
    argv = [sys.executable, str(BENCH_DIR / f"{name}.py"), "--runs", str(options.runs), "--json", str(json_path)]
    if name in SIZED_SCRIPTS:
        argv += ["--size-mib", str(options.size_mib)]
    if name == "secrets" and options.no_mitmproxy:
        argv.append("--no-mitmproxy")
    busy = wait_for_quiet()
    print(f"running bench/{name}.py ...", file=sys.stderr, flush=True)
    # Other work may commit to this tree during a run, so each script records the code it started with.
    revision = source_revision()
    started = time.time()
    try:
        completed = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   timeout=SCRIPT_TIMEOUT, cwd=REPO)
        error = completed.stderr.strip()[-2000:] if completed.returncode != 0 else ""
        if completed.returncode != 0:
            error = f"exit code {completed.returncode}: {error}"
    except subprocess.TimeoutExpired:
        error = f"timed out after {SCRIPT_TIMEOUT:g} s"
    print(f"bench/{name}.py finished in {time.time() - started:.0f} s", file=sys.stderr, flush=True)
    if error or not json_path.exists():
        return {"title": name.capitalize(), "script": f"bench/{name}.py", "revision": revision,
                "error": error or "no results written"}
    section = json.loads(json_path.read_text())
    section["revision"] = revision
    section["busy_before"] = busy
    return section


# -- Markdown ------------------------------------------------------------------------


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def result_text(row: dict[str, Any]) -> str:
    """Return met or missed for the median, noting a p90 on the other side of the target."""
    if not row["target"]:
        return ""
    target = row["target"]
    p90_met = row["p90"] <= target["limit"] if target["kind"] == "max" else row["p90"] >= target["limit"]
    if row["status"] == "met":
        return "met" if p90_met else "met (p90 misses)"
    return "**missed**" if not p90_met else "**missed** (p90 meets)"


def rows_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| measurement | median | p90 | target | result |", "|---|---:|---:|---|---|"]
    for row in rows:
        target = row["target"]["text"] if row["target"] else ""
        lines.append(f"| {cell(row['name'])} | {format_value(row['median'], row['unit'])} | "
                     f"{format_value(row['p90'], row['unit'])} | {target} | {result_text(row)} |")
    return lines


def machine_summary(facts: list[tuple[str, str]]) -> str:
    """Return one line naming the machine: CPU, cores, memory, kernel, Debian and runc versions."""
    values = dict(facts)
    return (f"machine: {values['CPU']}, {values['cores']} cores, {values['memory']}, kernel {values['kernel']}, "
            f"Debian {values['Debian']}, {values['runc']}.")


def render_section(section: dict[str, Any], facts: list[tuple[str, str]]) -> list[str]:
    lines = [f"## {section['title']}", ""]
    quiet = ""
    if "busy_before" in section:
        quiet = f"; CPU {section['busy_before']:.0f} % busy over the {QUIET_SAMPLE:g} s before the start"
    if "error" in section:
        lines += [f"`{section['script']}` failed at sealbox {section['revision']}, so this run has no numbers "
                  "for it:", "", "```",
                  section["error"], "```", ""]
        return lines
    lines += [
        f"- command: `{section['command']}`",
        f"- runs: {section['runs']} of each measurement, started {section['started']}, "
        f"{section['seconds'] / 60:.1f} minutes",
        f"- load average: {section['load_before']} before, {section['load_after']} after{quiet}",
        f"- code: sealbox at {section['revision']}",
        f"- {machine_summary(facts)}",
        "",
    ]
    lines += rows_table(section["rows"]) + [""]
    bounded = [row for row in section["rows"] if row["bound"]]
    if bounded:
        lines += ["What bounds each result:", ""]
        for row in bounded:
            status = f" ({row['status']})" if row["status"] else ""
            lines.append(f"- **{cell(row['name'])}**{status}: {row['bound']}")
        lines.append("")
    for table in section["tables"]:
        lines += [f"### {table['title']}", "", "| " + " | ".join(table["header"]) + " |",
                  "|" + "---|" * len(table["header"])]
        lines += ["| " + " | ".join(cell(value) for value in values) + " |" for values in table["rows"]]
        lines.append("")
        if table["note"]:
            lines += [table["note"], ""]
    for note in section["notes"]:
        lines += [note, ""]
    return lines


def render(sections: list[dict[str, Any]], facts: list[tuple[str, str]], command: str, started: float,
           seconds: float, kept: list[str]) -> str:
    lines = [
        "# Benchmarks",
        "",
        "Measured speed and memory of sealbox's runtime, its egress gateway and its secret interception, each "
        "beside the floor or the direct path it is compared with. `bench/run_all.py` wrote this page on the "
        "machine below, and bench/README.md says what each script does. Everything runs against the local "
        "test world on 127.0.0.1. To measure again (about 10 minutes on 2 cores), from the repository root:",
        "",
        "    sudo .venv/bin/python bench/run_all.py",
        "",
        "## Machine and run",
        "",
        "| | |",
        "|---|---|",
        f"| date | {time.strftime('%Y-%m-%d %H:%M %Z', time.localtime(started))} |",
        f"| command | `{cell(command)}`, from the repository root |",
        f"| total time | {seconds / 60:.1f} minutes |",
    ]
    if kept:
        lines.append(f"| sections kept from an earlier run | {', '.join(kept)} (each section names its own date, "
                     "command and commit) |")
    lines += [f"| {name} | {cell(value)} |" for name, value in facts]
    lines += [
        "",
        "Each number is the median of the runs stated in its section. p90 is the 90th percentile on the "
        "worse side, by the nearest-rank method. For times, sizes and overheads it is the value that 90 % of "
        "the runs stayed at or below. For rates and ratios it is the value that 90 % of the runs reached or "
        "beat. Ratios come from paired runs, made one right after the other. A target is met when the median "
        "meets it. The machine is shared with other work, which the load averages in each section show.",
        "",
        "## Targets",
        "",
    ]
    targeted = [row for section in sections if "error" not in section for row in section["rows"] if row["target"]]
    lines += rows_table(targeted) + [""]
    for section in sections:
        lines += render_section(section, facts)
    return "\n".join(lines).rstrip() + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS, help="runs per measurement (default 20)")
    parser.add_argument("--size-mib", type=int, default=1024, help="transfer size in MiB (default 1024)")
    parser.add_argument("--only", nargs="+", choices=SCRIPTS, help="run only these scripts")
    parser.add_argument("--no-mitmproxy", action="store_true", help="leave out the mitmproxy comparison")
    parser.add_argument("--output", default=str(REPO / "docs" / "benchmarks.md"),
                        help="page to write (default docs/benchmarks.md); the samples go to a .json beside it, "
                             "or to bench/results.json for the default page")
    parser.add_argument("--render-only", action="store_true",
                        help="rewrite the page from the saved samples without measuring")
    options = parser.parse_args()
    output = Path(options.output)
    default_output = output.resolve() == (REPO / "docs" / "benchmarks.md").resolve()
    results_path = RESULTS if default_output else output.with_suffix(".json")

    if options.render_only:
        results = json.loads(results_path.read_text())
    else:
        require_root()
        if options.runs < 1:
            parser.error(f"invalid --runs {options.runs}: expected 1 or more")
        results = measure_all(options)
        if options.only and results_path.exists():
            results = merge_results(json.loads(results_path.read_text()), results)
        results_path.write_text(json.dumps(results, indent=1) + "\n")
    facts = [(name, value) for name, value in results["facts"]]
    output.write_text(render(results["sections"], facts, results["command"], results["started"],
                             results["seconds"], results.get("kept", [])))
    written = str(output) if options.render_only else f"{output} and {results_path}"
    print(f"wrote {written}", file=sys.stderr)
    failed = [section["script"] for section in results["sections"] if "error" in section]
    if failed:
        sys.exit(f"failed: {', '.join(failed)} (see {output})")


def merge_results(previous: dict[str, Any], latest: dict[str, Any]) -> dict[str, Any]:
    """Put the sections of a run with --only into the saved results, keeping the other scripts' sections."""
    ran = {section["script"] for section in latest["sections"]}
    by_script = {section["script"]: section for section in previous["sections"]}
    by_script.update({section["script"]: section for section in latest["sections"]})
    kept = [section["title"] for script, section in by_script.items() if script not in ran]
    merged = dict(latest)
    merged["sections"] = [by_script[f"bench/{name}.py"] for name in SCRIPTS if f"bench/{name}.py" in by_script]
    merged["kept"] = kept
    return merged


def measure_all(options: argparse.Namespace) -> dict[str, Any]:
    """Run the scripts and return their sections with the command, times and machine facts."""
    command = command_line()
    started = time.time()
    load_before = load_average()
    first_revision = source_revision()
    with tempfile.TemporaryDirectory(prefix="sealbox-bench-") as directory:
        sections = [run_script(name, options, Path(directory)) for name in (options.only or SCRIPTS)]
    last_revision = source_revision()
    revisions = first_revision if first_revision == last_revision else \
        f"{first_revision} at the start, {last_revision} at the end (each section names its own)"
    facts = [("sealbox commit", revisions)] + machine_facts()
    facts.append(("load average before / after", f"{load_before} / {load_average()}"))
    return {"command": command, "started": started, "seconds": time.time() - started, "facts": facts,
            "sections": sections}


if __name__ == "__main__":
    main()
