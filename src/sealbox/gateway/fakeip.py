"""Fake addresses that the gateway's DNS responder hands to the sandbox, one per name.

When a sandbox process later connects to a fake address, the gateway looks the
name up again with name_for() and dials the name itself, so the policy is
checked against the name that the sandbox resolved. The default ranges are the IPv4 benchmarking
range 198.18.0.0/15 and the IPv6 discard-only prefix 100::/64: addresses from
them route nowhere even if one escapes the sandbox by mistake.

Addresses are allocated sequentially and stay stable per name. The pool is
bounded: when a family's range (or max_names) is used up, the least recently
used name of that family gives its address to the new name. A sandbox that
still holds the old address then reaches the new name, and the policy is
checked against that new name. A use is address_for() or name_for().

The pool is not thread-safe, so use it from one event loop.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections import OrderedDict
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from sealbox.gateway.addresses import IPAddress

__all__ = ["FakeAddressPool"]

logger = logging.getLogger(__name__)

DEFAULT_V4_NETWORK = "198.18.0.0/15"
DEFAULT_V6_NETWORK = "100::/64"
DEFAULT_MAX_NAMES = 65536


class _FamilyPool:
    """Sequential allocator with LRU reuse for one address family."""

    def __init__(self, network: IPv4Network | IPv6Network, capacity: int) -> None:
        self.network = network
        self.capacity = capacity
        # The network address itself is skipped, so the first address is network + 1.
        self._next = int(network.network_address) + 1
        self._by_name: OrderedDict[str, IPAddress] = OrderedDict()
        self._by_address: dict[IPAddress, str] = {}

    def address_for(self, name: str) -> IPAddress:
        address = self._by_name.get(name)
        if address is not None:
            self._by_name.move_to_end(name)
            return address
        if len(self._by_name) < self.capacity:
            address = ipaddress.ip_address(self._next)
            self._next += 1
        else:
            evicted, address = self._by_name.popitem(last=False)
            del self._by_address[address]
            logger.debug("fake address %s moves from %s to %s", address, evicted, name)
        self._by_name[name] = address
        self._by_address[address] = name
        return address

    def name_for(self, address: IPAddress) -> str | None:
        name = self._by_address.get(address)
        if name is not None:
            self._by_name.move_to_end(name)
        return name


class FakeAddressPool:
    """Stable, bounded map between host names and fake IPv4 and IPv6 addresses."""

    def __init__(
        self,
        v4_network: str = DEFAULT_V4_NETWORK,
        v6_network: str = DEFAULT_V6_NETWORK,
        *,
        max_names: int = DEFAULT_MAX_NAMES,
    ) -> None:
        """Create an empty pool.

        max_names bounds the entries per family, and so the memory a sandbox
        can make the gateway spend by resolving random names: 65536 names of
        50 characters in both families took about 40 MB (Python 3.11,
        measured with tracemalloc). The usable addresses exclude the network
        address and, for IPv4, the broadcast address, so 198.18.0.0/15 has
        131070 of them and the default max_names is the smaller bound.
        """
        v4 = ipaddress.ip_network(v4_network, strict=True)
        v6 = ipaddress.ip_network(v6_network, strict=True)
        if not isinstance(v4, IPv4Network):
            raise ValueError(f"invalid v4_network {v4_network!r}: expected an IPv4 network")
        if not isinstance(v6, IPv6Network):
            raise ValueError(f"invalid v6_network {v6_network!r}: expected an IPv6 network")
        if max_names < 1:
            raise ValueError(f"invalid max_names {max_names!r}: expected at least 1")
        v4_usable = v4.num_addresses - 2
        v6_usable = v6.num_addresses - 1
        if v4_usable < 1 or v6_usable < 1:
            raise ValueError(f"fake address ranges {v4} and {v6} are too small, use /30 and /127 or larger")
        self._v4 = _FamilyPool(v4, min(v4_usable, max_names))
        self._v6 = _FamilyPool(v6, min(v6_usable, max_names))

    @property
    def v4_network(self) -> IPv4Network:
        return self._v4.network  # type: ignore[return-value]

    @property
    def v6_network(self) -> IPv6Network:
        return self._v6.network  # type: ignore[return-value]

    def address_for(self, name: str, family: int) -> IPAddress:
        """Return the fake address of `name` in `family`, allocating one if needed.

        family is 4 or socket.AF_INET for IPv4, 6 or socket.AF_INET6 for IPv6.
        Names are compared case-insensitively and without a trailing dot.
        """
        key = _normalize(name)
        if family in (4, socket.AF_INET):
            return self._v4.address_for(key)
        if family in (6, socket.AF_INET6):
            return self._v6.address_for(key)
        raise ValueError(f"invalid address family {family!r}: expected 4, 6, socket.AF_INET or socket.AF_INET6")

    def name_for(self, address: IPAddress | str) -> str | None:
        """Return the name a fake address is allocated to, or None if it is not allocated."""
        ip = _parse(address)
        if ip is None:
            return None
        if isinstance(ip, IPv4Address):
            return self._v4.name_for(ip)
        return self._v6.name_for(ip)

    def contains(self, address: IPAddress | str) -> bool:
        """Return whether `address` lies in one of the fake ranges, allocated or not.

        Callers must not dial a fake address. An address in range for which
        name_for() returns None has no name, so a connection to it has no
        destination.
        """
        ip = _parse(address)
        if ip is None:
            return False
        if isinstance(ip, IPv4Address):
            return ip in self._v4.network
        return ip in self._v6.network


def _normalize(name: str) -> str:
    key = name.lower()
    return key[:-1] if key.endswith(".") else key


def _parse(address: IPAddress | str) -> IPAddress | None:
    if isinstance(address, (IPv4Address, IPv6Address)):
        ip: IPAddress = address
    else:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return None
    if isinstance(ip, IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip.scope_id is not None:
            return IPv6Address(int(ip))
    return ip
