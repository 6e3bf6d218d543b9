"""Socket-level helpers of the gateway: original destination, peeking, dialing, resets."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
from typing import Sequence

from sealbox.gateway.clienthello import MAX_PEEK, Classification, classify

SO_ORIGINAL_DST = 80
IP6T_SO_ORIGINAL_DST = 80
PEEK_POLL_INTERVAL = 0.005

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def original_destination(sock: socket.socket) -> tuple[IPAddress, int]:
    """Return the destination the sandbox connected to, before the nftables redirect."""
    if sock.family == socket.AF_INET:
        raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
        port, packed = struct.unpack("!2xH4s8x", raw)
        return ipaddress.IPv4Address(packed), port
    raw = sock.getsockopt(socket.IPPROTO_IPV6, IP6T_SO_ORIGINAL_DST, 28)
    port = struct.unpack("!H", raw[2:4])[0]
    return ipaddress.IPv6Address(raw[8:24]), port


async def peek_classification(sock: socket.socket, first_byte_timeout: float, total_timeout: float) -> Classification:
    """Classify the connection from its first bytes without consuming them (MSG_PEEK).

    Protocols where the server speaks first send nothing; after
    `first_byte_timeout` without a byte the connection is classified "other".
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + total_timeout
    first_deadline = loop.time() + first_byte_timeout
    seen = 0
    while True:
        try:
            data = sock.recv(MAX_PEEK, socket.MSG_PEEK)
        except BlockingIOError:
            data = None
        if data is not None:
            eof = data == b"" or len(data) >= MAX_PEEK
            result = classify(data, eof=eof)
            if result is not None:
                return result
            if len(data) == seen:
                # Nothing new since the last peek: wait a little for the next segment.
                if loop.time() > deadline:
                    return classify(data, eof=True) or Classification(kind="other", error="timed out")
                await asyncio.sleep(PEEK_POLL_INTERVAL)
            seen = len(data)
            continue
        remaining = (first_deadline if seen == 0 else deadline) - loop.time()
        if remaining <= 0:
            return Classification(kind="other", error="no data from the client" if seen == 0 else "timed out")
        future = loop.create_future()
        loop.add_reader(sock.fileno(), lambda: future.done() or future.set_result(None))
        try:
            await asyncio.wait_for(future, remaining)
        except asyncio.TimeoutError:
            pass
        finally:
            loop.remove_reader(sock.fileno())


def reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0), the reply to a denied connection."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


async def dial(addresses: Sequence[tuple[IPAddress, int]], timeout: float) -> socket.socket:
    """Connect to the first address that accepts; raise the last error otherwise."""
    loop = asyncio.get_running_loop()
    last_error: Exception = OSError("no address to connect to")
    for address, port in addresses:
        family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, (str(address), port)), timeout)
            return sock
        except (OSError, asyncio.TimeoutError) as exc:
            sock.close()
            last_error = exc if isinstance(exc, OSError) else TimeoutError(f"connect to {address}:{port} timed out")
    raise last_error
