"""Published UDP ports: datagrams from the host relayed to a port inside the sandbox.

Each client address gets its own UDP socket created inside the sandbox's
namespace and connected to 127.0.0.1:PORT there, so replies find their way
back to that client. A flow that stays idle for IDLE_TIMEOUT seconds is
closed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
import socket
import time
from typing import Callable

from sealbox.gateway.audit import AuditLog
from sealbox.gateway.policy import Destination, PolicyEngine
from sealbox.netns.namespace import NetworkNamespace
from sealbox.spec.network import Action, Direction, PortPublish

log = logging.getLogger(__name__)

IDLE_TIMEOUT = 60.0
MAX_FLOWS = 1024


class _InsideProtocol(asyncio.DatagramProtocol):
    def __init__(self, deliver: Callable[[bytes], None]) -> None:
        self.deliver = deliver

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.deliver(data)


class UdpIngress(asyncio.DatagramProtocol):
    """The host-side socket of one published UDP port."""

    def __init__(self, sandbox: str, publish: PortPublish, namespace: NetworkNamespace, engine: PolicyEngine,
                 audit: AuditLog, connection_ids: itertools.count) -> None:
        self.sandbox = sandbox
        self.publish = publish
        self.namespace = namespace
        self.engine = engine
        self.audit = audit
        self.connection_ids = connection_ids
        self.transport: asyncio.DatagramTransport | None = None
        self.flows: dict[tuple, tuple[asyncio.DatagramTransport, float, int]] = {}
        self._sweeper: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._sweeper = asyncio.ensure_future(self._sweep())

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        flow = self.flows.get(addr)
        if flow is not None:
            inside, _, connection_id = flow
            self.flows[addr] = (inside, time.monotonic(), connection_id)
            inside.sendto(data)
            return
        asyncio.ensure_future(self._open_flow(data, addr))

    async def _open_flow(self, first: bytes, addr: tuple) -> None:
        connection_id = next(self.connection_ids)
        peer = ipaddress.ip_address(addr[0])
        verdict = self.engine.check(Destination(addresses=(peer,), port=self.publish.sandbox_port, protocol="udp",
                                                direction=Direction.INGRESS))
        if verdict.action is Action.DENY:
            self.audit.write("deny", conn=connection_id, direction="ingress", protocol="udp", ip=str(peer),
                             port=self.publish.sandbox_port, rule=verdict.rule_index, reason=verdict.reason)
            return
        if len(self.flows) >= MAX_FLOWS or addr in self.flows:
            return
        target = ("127.0.0.1", self.publish.sandbox_port)

        def make_socket() -> socket.socket:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.connect(target)
            sock.setblocking(False)
            return sock

        try:
            inside_socket = await asyncio.to_thread(self.namespace.run, make_socket)
        except OSError as exc:
            log.error("sandbox %s: UDP ingress %d to port %d failed: %s", self.sandbox, connection_id,
                      self.publish.sandbox_port, exc)
            self.audit.write("upstream_error", conn=connection_id, direction="ingress", protocol="udp",
                             port=self.publish.sandbox_port, error=str(exc))
            return
        loop = asyncio.get_running_loop()
        inside, _ = await loop.create_datagram_endpoint(
            lambda: _InsideProtocol(lambda data: self._reply(addr, data)), sock=inside_socket
        )
        self.flows[addr] = (inside, time.monotonic(), connection_id)  # type: ignore[assignment]
        self.audit.write("ingress", conn=connection_id, protocol="udp", ip=str(peer), host_port=self.publish.host_port,
                         port=self.publish.sandbox_port)
        inside.sendto(first)  # type: ignore[attr-defined]

    def _reply(self, addr: tuple, data: bytes) -> None:
        flow = self.flows.get(addr)
        if flow is not None:
            self.flows[addr] = (flow[0], time.monotonic(), flow[2])
        if self.transport is not None:
            self.transport.sendto(data, addr)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(IDLE_TIMEOUT / 4)
            now = time.monotonic()
            for addr, (inside, last_used, _) in list(self.flows.items()):
                if now - last_used > IDLE_TIMEOUT:
                    inside.close()
                    del self.flows[addr]

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for inside, _, _ in self.flows.values():
            inside.close()
        self.flows.clear()
        if self.transport is not None:
            self.transport.close()
