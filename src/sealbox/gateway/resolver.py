"""Name resolution for the gateway's own upstream connections.

The gateway dials upstream by name. A name is looked up, in this order, in:

1. the connect_to entries (curl --connect-to semantics): entries for the
   name and this port win over entries for the name with no port, and they
   replace the port too;
2. the hosts map (name -> addresses, port unchanged);
3. the system resolver (loop.getaddrinfo), only if use_system is True and
   the name has no entry in either static map, whatever the port.

Addresses from the static maps were written by the operator, so they are
marked trusted and policy is checked against the name only. Addresses from
the system resolver, and IP literals given as the name, are untrusted.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from sealbox.errors import SealboxError
from sealbox.gateway.addresses import IPAddress
from sealbox.spec.network import ConnectTo, normalize_host_name

__all__ = ["ResolutionError", "ResolvedAddress", "Resolver"]

logger = logging.getLogger(__name__)


class ResolutionError(SealboxError, LookupError):
    """A host name could not be resolved to any address."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"cannot resolve {name!r}: {reason}")


@dataclass(frozen=True)
class ResolvedAddress:
    """Address and port to dial for a name, trusted when it came from a static map."""

    address: IPAddress
    port: int
    trusted: bool


class Resolver:
    """Resolve names through the static maps first and the system resolver last."""

    def __init__(
        self,
        connect_to: Sequence[ConnectTo] = (),
        hosts: Mapping[str, Sequence[str]] = {},
        *,
        use_system: bool = True,
        system_timeout: float = 5.0,
    ) -> None:
        self._connect_to: dict[str, list[ConnectTo]] = {}
        for entry in connect_to:
            self._connect_to.setdefault(entry.name, []).append(entry)
        self._hosts: dict[str, tuple[IPAddress, ...]] = {}
        for name, addresses in hosts.items():
            key = normalize_host_name(name, "hosts name")
            if isinstance(addresses, str):
                addresses = (addresses,)
            self._hosts[key] = tuple(ipaddress.ip_address(address) for address in addresses)
        self.use_system = use_system
        self.system_timeout = system_timeout

    def has_static(self, name: str) -> bool:
        """Return whether the name has a connect_to or hosts entry (for any port)."""
        key = _normalize(name)
        return key in self._connect_to or key in self._hosts

    async def resolve(self, name: str, port: int) -> list[ResolvedAddress]:
        """Return the addresses to dial for name:port, in preference order.

        Raises ResolutionError when the name is invalid, has a static entry
        that does not cover this port, or is not found.
        """
        key = _normalize(name)
        literal = _ip_literal(key)
        if literal is not None:
            return [ResolvedAddress(literal, port, trusted=False)]
        try:
            normalize_host_name(key)
        except ValueError as error:
            raise ResolutionError(name, f"invalid host name ({error})") from None

        if key in self._connect_to:
            entries = self._connect_to[key]
            chosen = [entry for entry in entries if entry.port == port]
            if not chosen:
                chosen = [entry for entry in entries if entry.port is None]
            if chosen:
                return _dedupe(
                    ResolvedAddress(ipaddress.ip_address(entry.address), entry.target_port, trusted=True)
                    for entry in chosen
                )
        if key in self._hosts:
            return [ResolvedAddress(address, port, trusted=True) for address in self._hosts[key]]
        if key in self._connect_to:
            raise ResolutionError(name, f"the connect_to entries for this name do not cover port {port}")
        if not self.use_system:
            raise ResolutionError(name, "not in the static name map, and system resolution is disabled")
        return await self._resolve_system(name, key, port)

    async def _resolve_system(self, name: str, key: str, port: int) -> list[ResolvedAddress]:
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(key, port, type=socket.SOCK_STREAM), timeout=self.system_timeout
            )
        except asyncio.TimeoutError:
            raise ResolutionError(name, f"system resolver timed out after {self.system_timeout:g} s") from None
        except socket.gaierror as error:
            raise ResolutionError(name, f"system resolver failed: {error.strerror or error}") from None
        results = _dedupe(
            ResolvedAddress(ipaddress.ip_address(sockaddr[0]), port, trusted=False)
            for family, _type, _proto, _canonname, sockaddr in infos
            if family in (socket.AF_INET, socket.AF_INET6)
        )
        if not results:
            raise ResolutionError(name, "system resolver returned no IPv4 or IPv6 address")
        logger.debug("resolved %s to %s", key, ", ".join(str(item.address) for item in results))
        return results


def _normalize(name: str) -> str:
    key = name.lower()
    if key.startswith("[") and key.endswith("]"):
        key = key[1:-1]
    return key[:-1] if key.endswith(".") else key


def _ip_literal(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _dedupe(items: Iterable[ResolvedAddress]) -> list[ResolvedAddress]:
    seen: set[ResolvedAddress] = set()
    unique: list[ResolvedAddress] = []
    for item in items:
        if item not in seen:
            seen.add(item)
            unique.append(item)
    return unique
