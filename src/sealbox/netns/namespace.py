"""Create a loopback-only network namespace and bind sockets inside it.

Namespaces belong to threads, so a short-lived helper thread unshares a new
network namespace, configures it (loopback up, default routes to `lo`, the
nftables rules of rules.py), binds the listener sockets, and keeps a file
descriptor of the namespace open. Sockets keep the namespace of the thread
that created them, so the supervisor's event loop serves them from the host
namespace. The namespace lives as long as that descriptor, the sockets or the
container's processes hold it: a crashed supervisor leaves nothing behind.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import threading
from dataclasses import dataclass
from typing import Callable, TypeVar

from sealbox.netns.rules import DNS_PORT, GATEWAY_PORT, ruleset
from sealbox.runtime.linux import CLONE_NEWNET, setns, unshare

log = logging.getLogger(__name__)

T = TypeVar("T")


class NamespaceError(RuntimeError):
    """A setup step of the network namespace failed."""


@dataclass
class NetworkNamespace:
    """An open handle on a sandbox network namespace."""

    fd: int

    @property
    def path(self) -> str:
        """A path that names the namespace for as long as this process keeps `fd` open."""
        return f"/proc/{os.getpid()}/fd/{self.fd}"

    def run(self, function: Callable[[], T]) -> T:
        """Call `function` in a thread that has joined this namespace and return its result."""
        return _in_thread(lambda: (setns(self.fd, CLONE_NEWNET, self.path), function())[1])

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _in_thread(function: Callable[[], T]) -> T:
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(function())
        except BaseException as exc:  # re-raised in the caller's thread
            error.append(exc)

    thread = threading.Thread(target=target, name="sealbox-netns")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def _run_step(args: list[str], stdin: str | None = None) -> None:
    completed = subprocess.run(args, input=stdin, capture_output=True, text=True)
    if completed.returncode != 0:
        raise NamespaceError(f"{' '.join(args)} failed with exit code {completed.returncode}: {completed.stderr.strip()}")


def create_namespace(*, forward_to_gateway: bool = True) -> NetworkNamespace:
    """Create and configure a new loopback-only network namespace.

    With `forward_to_gateway` false (no network at all) the default routes and
    the nftables rules are left out: the namespace then only has its own loopback.
    """

    def setup() -> NetworkNamespace:
        # Step 1: a new, empty network namespace for this thread only.
        unshare(CLONE_NEWNET)
        fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            # Step 2: loopback up, and when forwarding, default routes through
            # it. Without `src`, IPv4 SYNs leave with source 0.0.0.0 and never
            # complete. Without forwarding there is no default route, so a
            # connection to any other address fails at once with ENETUNREACH
            # instead of its SYN vanishing on `lo` until the connect times out.
            routes = "route add default dev lo src 127.0.0.1\nroute add ::/0 dev lo src ::1\n"
            _run_step(["ip", "-batch", "-"], stdin="link set lo up\n" + (routes if forward_to_gateway else ""))
            # Step 3: the forcing rules.
            if forward_to_gateway:
                _run_step(["nft", "-f", "-"], stdin=ruleset())
        except BaseException:
            os.close(fd)
            raise
        return NetworkNamespace(fd)

    return _in_thread(setup)


@dataclass
class ListenerSockets:
    """Sockets bound inside the sandbox namespace, served from the host namespace."""

    tcp: list[socket.socket]
    dns_udp: list[socket.socket]
    dns_tcp: list[socket.socket]

    def close(self) -> None:
        for sock in self.tcp + self.dns_udp + self.dns_tcp:
            sock.close()


def bind_listeners(namespace: NetworkNamespace, gateway_port: int = GATEWAY_PORT, dns_port: int = DNS_PORT) -> ListenerSockets:
    """Bind the gateway and DNS sockets on 127.0.0.1 and ::1 inside the namespace."""

    def bind() -> ListenerSockets:
        sockets = ListenerSockets([], [], [])
        try:
            for family, address in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
                tcp = socket.socket(family, socket.SOCK_STREAM)
                sockets.tcp.append(tcp)
                tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                tcp.bind((address, gateway_port))
                tcp.listen(4096)
                tcp.setblocking(False)

                udp = socket.socket(family, socket.SOCK_DGRAM)
                sockets.dns_udp.append(udp)
                udp.bind((address, dns_port))
                udp.setblocking(False)

                dns_tcp = socket.socket(family, socket.SOCK_STREAM)
                sockets.dns_tcp.append(dns_tcp)
                dns_tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                dns_tcp.bind((address, dns_port))
                dns_tcp.listen(256)
                dns_tcp.setblocking(False)
        except OSError as exc:
            sockets.close()
            raise NamespaceError(f"binding the gateway sockets in the sandbox namespace failed: {exc}") from exc
        return sockets

    return namespace.run(bind)


def connect_inside(namespace: NetworkNamespace, family: int, address: tuple[str, int], timeout: float = 5.0) -> socket.socket:
    """Return a non-blocking socket created inside the namespace and connected to `address` (for ingress).

    The connect is blocking, in the helper thread: it goes to the namespace's
    own loopback, so it completes or is refused at once.
    """

    def make() -> socket.socket:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(address)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        return sock

    return namespace.run(make)
