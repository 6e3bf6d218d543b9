"""`sealbox audit`: the audit log as a table or as raw JSON lines."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from sealbox.errors import SandboxNotFoundError
from sealbox.store import Paths

_COLUMNS = ("time", "event", "conn", "destination", "detail")


def _destination(event: dict[str, Any]) -> str:
    name = event.get("sni") or event.get("name") or event.get("host") or ""
    names = event.get("names")
    if not name and names:
        name = ",".join(names)
    ip = event.get("ip", "")
    port = event.get("port", "")
    text = name or ip
    if name and ip and ip != name:
        text += f" ({ip})"
    return f"{text}:{port}" if port else text


def _detail(event: dict[str, Any]) -> str:
    kind = event.get("event")
    if kind == "dns":
        return f"{event.get('qtype')} -> {', '.join(event.get('answer', [])) or event.get('rcode')}"
    if kind == "request":
        secrets = f" secrets={','.join(event['secrets'])}" if event.get("secrets") else ""
        return f"{event.get('method')} {event.get('path')} -> {event.get('status')}{secrets}"
    if kind == "close":
        error = f" error={event['error']}" if event.get("error") else ""
        return f"up={event.get('bytes_up')} down={event.get('bytes_down')} {event.get('duration_ms')} ms{error}"
    if kind in ("deny", "violation", "upstream_error", "reject"):
        return str(event.get("reason") or event.get("error") or event.get("secret") or "")
    if kind == "connect":
        return f"{event.get('kind')} rule={event.get('rule')} intercept={bool(event.get('intercept'))}"
    if kind == "substitute":
        return f"secrets={','.join(event.get('secrets', []))}"
    return ""


def show_audit(name: str, *, follow: bool, as_json: bool) -> None:
    state_dir = Paths.default().sandbox_dir(name)
    path = state_dir / "audit.jsonl"
    if not state_dir.exists():
        click.echo(f"sealbox: {SandboxNotFoundError(name)}", err=True)
        sys.exit(125)
    if not path.exists():
        click.echo(f"sealbox: sandbox {name!r} has no audit log (it has no network)", err=True)
        sys.exit(125)
    from rich.console import Console
    from rich.table import Table

    console = Console()
    with open(path) as audit_file:
        while True:
            lines = audit_file.readlines()
            if lines:
                if as_json:
                    for line in lines:
                        click.echo(line, nl=False)
                else:
                    table = Table(*_COLUMNS, box=None)
                    for line in lines:
                        try:
                            event = json.loads(line)
                        except json.JSONDecodeError:
                            continue
                        stamp = time.strftime("%H:%M:%S", time.localtime(event["time"])) + f"{event['time'] % 1:.3f}"[1:]
                        table.add_row(stamp, event.get("event", ""), str(event.get("conn", "")),
                                      _destination(event), _detail(event))
                    console.print(table)
            if not follow:
                return
            time.sleep(0.5)
