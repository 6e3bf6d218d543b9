"""The `sealbox` command: a thin click layer over the async Python API."""

from __future__ import annotations

import asyncio
import json
import os
import secrets as random_source
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import click

from sealbox.errors import ExecTimeoutError, SandboxNotFoundError, SandboxStartError, SealboxError
from sealbox.runtime.execution import Exit, Stderr, Stdout
from sealbox.sandbox import Sandbox
from sealbox.spec.network import Action, Network, NetworkPolicy, parse_rule
from sealbox.spec.sandbox import SandboxSpec, Volume
from sealbox.spec.secret import Secret, parse_secret_option, read_secret_file
from sealbox.spec.units import parse_duration

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
DETACHED_LOG = "/tmp/sealbox-main.log"  # output of the command of `sealbox run --detach`, inside the sandbox


def _fail(message: str, code: int = 125) -> None:
    click.echo(f"sealbox: {message}", err=True)
    sys.exit(code)


def _run(coroutine: Any) -> Any:
    try:
        return asyncio.run(coroutine)
    except ExecTimeoutError as exc:
        # 124 is what timeout(1) exits with, so scripts can tell a timeout from sealbox's own errors (125).
        _fail(str(exc), 124)
    except SealboxError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        _fail("interrupted", 130)


# -- options shared by `run` and `create` ---------------------------------------------

def sandbox_options(function: Any) -> Any:
    options = [
        click.option("-m", "--memory", help="Memory limit, e.g. 512M or 2G (a bare number is MiB)."),
        click.option("--cpus", help="CPU limit as a number of CPUs, e.g. 1.5."),
        click.option("--pids", type=int, default=1024, show_default=True, help="Maximum number of processes."),
        click.option("-u", "--user", help="User inside the sandbox: UID[:GID] or NAME[:GROUP]."),
        click.option("-e", "--env", "env", multiple=True,
                     help="Environment variable K=V, or K to copy the caller's value (repeatable)."),
        click.option("-w", "--workdir", default="/", show_default=True, help="Working directory inside the sandbox."),
        click.option("--hostname", help="Host name inside the sandbox (default: the sandbox name)."),
        click.option("-v", "--volume", "volumes", multiple=True, help="Bind mount SRC:DST[:ro] (repeatable)."),
        click.option("--runtime", type=click.Choice(["runc", "gvisor"]), default="runc", show_default=True,
                     help="OCI runtime; gvisor needs runsc."),
        click.option("--replace", is_flag=True, help="Remove an existing sandbox of the same name first."),
        click.option("--no-net", is_flag=True, help="No network at all: only the sandbox's own loopback."),
        click.option("--net-default-egress", type=click.Choice(["allow", "deny"]),
                     help="Verdict for outgoing connections no rule matches (default: allow, with the "
                          "public_only rules denying private, loopback, link-local, metadata and multicast)."),
        click.option("--net-default-ingress", type=click.Choice(["allow", "deny"]),
                     help="Verdict for incoming connections to published ports that no rule matches."),
        click.option("--net-rule", "net_rules", multiple=True,
                     help="Policy rule ACTION@TARGET[:PROTO[:PORTS]], e.g. allow@github.com:tcp:443 (repeatable; "
                          "first match wins; checked before the public_only rules)."),
        click.option("--net-allow-all", is_flag=True, help="Start from the allow_all preset instead of public_only."),
        click.option("-p", "--publish", "publish", multiple=True, help="Publish a port HOST:SANDBOX[/udp] (repeatable)."),
        click.option("--connect-to", "connect_to", multiple=True,
                     help="Gateway static map NAME[:PORT]:ADDR:PORT, like curl --connect-to (repeatable)."),
        click.option("--add-host", "add_hosts", multiple=True,
                     help="NAME:IP, resolved inside the sandbox to that literal address (repeatable)."),
        click.option("--secret", "secrets", multiple=True,
                     help="Secret NAME=VALUE@HOST[,HOST...], or NAME@HOST[,...] to read the value from the "
                          "environment variable NAME (keeps it out of argv and ps)."),
        click.option("--secret-file", "secret_files", multiple=True, type=click.Path(dir_okay=False),
                     help="File with one NAME=VALUE@HOSTS per line (repeatable)."),
        click.option("--on-secret-violation", type=click.Choice(["block", "log"]),
                     help="What to do when a placeholder goes to a host its secret is not scoped to."),
        click.option("--upstream-ca", "upstream_ca", multiple=True, type=click.Path(exists=True, dir_okay=False),
                     help="Extra CA certificate file the gateway trusts for upstream servers (repeatable)."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def build_spec(name: str, image: str, detached: bool, options: dict[str, Any]) -> SandboxSpec:
    env = {}
    for item in options["env"]:
        key, separator, value = item.partition("=")
        if not separator:
            value = os.environ.get(key, "")
        env[key] = value

    secrets: list[Secret] = [parse_secret_option(text, os.environ) for text in options["secrets"]]
    for path in options["secret_files"]:
        secrets += read_secret_file(Path(path), os.environ)
    if options["on_secret_violation"]:
        secrets = [replace(secret, on_violation=options["on_secret_violation"]) for secret in secrets]

    base = Network.allow_all() if options["net_allow_all"] else Network.public_only()
    policy = base.policy
    rules = tuple(parse_rule(text) for text in options["net_rules"]) + tuple(policy.rules)
    policy = NetworkPolicy(
        default_egress=Action(options["net_default_egress"]) if options["net_default_egress"] else policy.default_egress,
        default_ingress=Action(options["net_default_ingress"]) if options["net_default_ingress"] else policy.default_ingress,
        rules=rules,
    )
    add_hosts = {}
    for item in options["add_hosts"]:
        host, separator, address = item.partition(":")
        if not separator or not host or not address:
            raise click.BadParameter(f"{item!r}: expected NAME:IP", param_hint="--add-host")
        add_hosts[host] = address
    network = Network(
        enabled=not options["no_net"],
        policy=policy,
        ports=tuple(options["publish"]),
        connect_to=tuple(options["connect_to"]),
        add_hosts=add_hosts,
    )
    return SandboxSpec.build(
        name,
        image=image,
        memory=options["memory"],
        cpus=options["cpus"],
        pids=options["pids"],
        user=options["user"],
        env=env,
        workdir=options["workdir"],
        hostname=options["hostname"],
        volumes=[Volume.parse(text) for text in options["volumes"]],
        detached=detached,
        runtime=options["runtime"],
        network=network,
        secrets=secrets,
        upstream_ca=[str(Path(path).resolve()) for path in options["upstream_ca"]],
    )


async def _stream_to_terminal(sandbox: Sandbox, command: Sequence[str], timeout: float | None,
                              cwd: str | None = None, env: dict[str, str] | None = None) -> int:
    stdin = None if sys.stdin is None or sys.stdin.isatty() else await asyncio.to_thread(sys.stdin.buffer.read)
    code = 0
    async for event in sandbox.exec_stream(command[0], list(command[1:]), timeout=timeout, stdin=stdin, cwd=cwd, env=env):
        if isinstance(event, Stdout):
            sys.stdout.buffer.write(event.data)
            sys.stdout.buffer.flush()
        elif isinstance(event, Stderr):
            sys.stderr.buffer.write(event.data)
            sys.stderr.buffer.flush()
        elif isinstance(event, Exit):
            code = event.exit_code
            if event.oom_killed:
                click.echo("sealbox: the command was killed by the sandbox's memory limit", err=True)
    return code


class CommandAfterDashes(click.Command):
    """Click command that takes its trailing COMMAND... after `--`, kept apart from IMAGE and NAME."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" in args:
            index = args.index("--")
            ctx.meta["sealbox.command"] = tuple(args[index + 1 :])
            args = args[:index]
        elif not any(arg in ("-h", "--help") for arg in args):
            example = "sealbox exec NAME -- echo hi" if ctx.info_name == "exec" else "sealbox run -- echo hi"
            raise click.UsageError(f"put `--` before the command to run, e.g. `{example}`", ctx)
        return super().parse_args(ctx, args)


def _command_after_dashes() -> tuple[str, ...]:
    command = click.get_current_context().meta.get("sealbox.command", ())
    if not command:
        raise click.UsageError("missing the command to run after `--`")
    return command


@click.group(context_settings=CONTEXT)
@click.version_option(package_name="sealbox")
def main() -> None:
    """Run untrusted code in Linux sandboxes whose only way out is a secret-injecting gateway."""


@main.command(cls=CommandAfterDashes, context_settings=CONTEXT)
@click.argument("image", required=False, default="host")
@sandbox_options
@click.option("--name", help="Sandbox name; without it the sandbox gets a generated name and is removed afterwards.")
@click.option("-d", "--detach", is_flag=True, help="Create the sandbox, start the command, and return at once.")
@click.option("--timeout", help="Kill the command after this long, e.g. 30s or 2m (exit code 124).")
def run(image: str, detach: bool, timeout: str | None, **options: Any) -> None:
    """Create a sandbox from IMAGE (default: host), run COMMAND in it, and exit with its exit code.

    Usage: sealbox run [IMAGE] [OPTIONS] -- COMMAND... Without --name the
    sandbox is removed afterwards.
    """
    command = _command_after_dashes()
    given_name = options.pop("name")
    name = given_name or f"run-{random_source.token_hex(4)}"
    ephemeral = given_name is None and not detach
    try:
        spec = build_spec(name, image, detach, options)
        limit = parse_duration(timeout) if timeout else None
    except SealboxError as exc:
        _fail(str(exc))

    async def go() -> int:
        try:
            sandbox = await Sandbox.create_from_spec(spec, replace=options["replace"])
        except SandboxStartError:
            if ephemeral:
                await _forget(name)
            raise
        if detach:
            await _start_detached(sandbox, command)
            click.echo(sandbox.name)
            return 0
        try:
            return await _stream_to_terminal(sandbox, command, limit)
        finally:
            if ephemeral:
                await sandbox.remove()
            else:
                await sandbox.stop()

    sys.exit(_run(go()))


async def _forget(name: str) -> None:
    """Remove what a failed start of a generated-name sandbox left, so `run` leaves nothing behind."""
    try:
        await (await Sandbox.get(name)).remove()
    except SealboxError:
        pass


async def _start_detached(sandbox: Sandbox, command: Sequence[str]) -> None:
    script = " ".join(_shell_quote(part) for part in command)
    await sandbox.exec("/bin/sh", ["-c", f"nohup {script} >{DETACHED_LOG} 2>&1 &"])


def _shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


@main.command(context_settings=CONTEXT)
@click.argument("name")
@click.argument("image", required=False, default="host")
@sandbox_options
@click.option("--attached", is_flag=True, help="Stop the sandbox when this command exits (it waits until Ctrl-C).")
def create(name: str, image: str, attached: bool, **options: Any) -> None:
    """Create and start a sandbox NAME that keeps running until `sealbox stop`."""
    try:
        spec = build_spec(name, image, not attached, options)
    except SealboxError as exc:
        _fail(str(exc))

    async def go() -> None:
        sandbox = await Sandbox.create_from_spec(spec, replace=options["replace"])
        click.echo(sandbox.name)
        if attached:
            await asyncio.Event().wait()

    _run(go())


@main.command("exec", cls=CommandAfterDashes, context_settings=CONTEXT)
@click.argument("name")
@click.option("-w", "--workdir", help="Working directory for the command.")
@click.option("-e", "--env", "env", multiple=True, help="Extra environment variable K=V (repeatable).")
@click.option("--timeout", help="Kill the command after this long, e.g. 30s.")
def exec_command(name: str, workdir: str | None, env: tuple[str, ...], timeout: str | None) -> None:
    """Run a command in the running sandbox NAME: sealbox exec NAME -- COMMAND..."""
    command = _command_after_dashes()
    extra = dict(item.partition("=")[::2] for item in env)

    async def go() -> int:
        sandbox = await Sandbox.get(name)
        return await _stream_to_terminal(sandbox, command, parse_duration(timeout) if timeout else None,
                                         cwd=workdir, env=extra)

    sys.exit(_run(go()))


@main.command("ls", context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_command(as_json: bool) -> None:
    """List sandboxes with their status."""

    async def go() -> list[dict[str, Any]]:
        rows = []
        for sandbox in await Sandbox.list():
            rows.append({"name": sandbox.name, "status": await sandbox.status(), "image": sandbox.spec["image"],
                         "runtime": sandbox.spec["runtime"], "created": sandbox._record.created_at})
        return rows

    rows = _run(go())
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("NAME", "STATUS", "IMAGE", "RUNTIME", "CREATED", box=None)
    for row in rows:
        table.add_row(row["name"], row["status"], row["image"], row["runtime"],
                      time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["created"])))
    Console().print(table)


@main.command(context_settings=CONTEXT)
@click.argument("name")
def inspect(name: str) -> None:
    """Print a sandbox's spec and state as JSON (secret names, hosts and placeholders; never values)."""

    async def go() -> dict[str, Any]:
        sandbox = await Sandbox.get(name)
        status = await sandbox.status()
        record = sandbox._record
        return {"name": record.name, "id": record.id, "status": status, "detail": record.detail,
                "created_at": record.created_at, "supervisor_pid": record.supervisor_pid,
                "container_pid": record.container_pid, "placeholders": record.placeholders,
                "audit_log": sandbox.audit_path, "spec": record.spec}

    click.echo(json.dumps(_run(go()), indent=2))


@main.command(context_settings=CONTEXT)
@click.argument("names", nargs=-1, required=True)
def stop(names: tuple[str, ...]) -> None:
    """Stop sandboxes; their state stays until `sealbox rm`."""

    async def go() -> None:
        for name in names:
            await (await Sandbox.get(name)).stop()
            click.echo(name)

    _run(go())


@main.command(context_settings=CONTEXT)
@click.argument("names", nargs=-1, required=True)
def rm(names: tuple[str, ...]) -> None:
    """Stop sandboxes if needed and delete them."""

    async def go() -> None:
        for name in names:
            await (await Sandbox.get(name)).remove()
            click.echo(name)

    _run(go())


@main.command(context_settings=CONTEXT)
@click.argument("name")
@click.option("--supervisor", is_flag=True, help="Print the supervisor's log instead of the command's output.")
def logs(name: str, supervisor: bool) -> None:
    """Print the output of the command started by `sealbox run --detach`, or the supervisor's log."""
    from sealbox.store import Paths

    state_dir = Paths.default().sandbox_dir(name)
    if not state_dir.exists():
        _fail(str(SandboxNotFoundError(name)))
    # The detached command writes its output inside the sandbox, so it lands in the root overlay's upper layer.
    command_log = state_dir / "layers" / "0" / "upper" / DETACHED_LOG.lstrip("/")
    path = state_dir / "supervisor.log" if supervisor or not command_log.exists() else command_log
    if not path.exists():
        _fail(f"sandbox {name!r} has no log yet at {path}")
    sys.stdout.buffer.write(path.read_bytes())


@main.command(context_settings=CONTEXT)
@click.argument("name")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new events.")
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON lines.")
def audit(name: str, follow: bool, as_json: bool) -> None:
    """Show the audit log of a sandbox: DNS answers, connections, requests, violations."""
    from sealbox.audit_view import show_audit

    show_audit(name, follow=follow, as_json=as_json)


@main.command(context_settings=CONTEXT)
def doctor() -> None:
    """Check every prerequisite and print how to fix what is missing."""
    from sealbox.doctor import run_checks

    sys.exit(run_checks())


if __name__ == "__main__":
    main()
