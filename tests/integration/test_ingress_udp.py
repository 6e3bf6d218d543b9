"""Published UDP ports relay datagrams both ways, per client, and honour ingress policy."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from sealbox import Action, Network, NetworkPolicy, Sandbox
from sealbox.gateway.audit import read_events

UPPERCASE_ECHO = (
    "import socket\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "s.bind(('127.0.0.1', 5353))\n"
    "while True:\n"
    "    data, peer = s.recvfrom(2048)\n"
    "    s.sendto(data.upper(), peer)\n"
)


def _free_udp_port() -> int:
    # NOTE: the port could be taken between this check and the sandbox binding it.
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


async def _start_echo(sandbox: Sandbox) -> None:
    await sandbox.exec("sh", ["-c", "nohup python3 -c \"$0\" >/dev/null 2>&1 &", UPPERCASE_ECHO])
    await asyncio.sleep(0.5)


def test_udp_publish_round_trip(run):
    host_port = _free_udp_port()

    async def scenario():
        async with await Sandbox.create("udpin", network=Network(ports=[f"{host_port}:5353/udp"])) as sandbox:
            await _start_echo(sandbox)
            clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
            try:
                for index, client in enumerate(clients):
                    client.settimeout(5)
                    client.sendto(f"client {index}".encode(), ("127.0.0.1", host_port))
                    reply, _ = client.recvfrom(2048)
                    assert reply == f"CLIENT {index}".encode()
            finally:
                for client in clients:
                    client.close()
            ingress = [event for event in read_events(Path(sandbox.audit_path)) if event["event"] == "ingress"]
            assert len(ingress) == 2
            assert ingress[0]["protocol"] == "udp"
            assert ingress[0]["port"] == 5353

    run(scenario())


def test_udp_publish_denied_by_ingress_policy(run):
    host_port = _free_udp_port()
    network = Network(ports=[f"{host_port}:5353/udp"], policy=NetworkPolicy(default_ingress=Action.DENY))

    async def scenario():
        async with await Sandbox.create("udpdeny", network=network) as sandbox:
            await _start_echo(sandbox)
            client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            client.settimeout(1)
            try:
                client.sendto(b"blocked", ("127.0.0.1", host_port))
                try:
                    client.recvfrom(2048)
                    answered = True
                except (TimeoutError, socket.timeout):
                    answered = False
            finally:
                client.close()
            assert answered is False
            denies = [event for event in read_events(Path(sandbox.audit_path)) if event["event"] == "deny"]
            assert denies[0]["direction"] == "ingress"
            assert denies[0]["protocol"] == "udp"

    run(scenario())
