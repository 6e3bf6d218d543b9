"""Address groups used by network policy rules, and IPv4 addresses embedded in IPv6.

Pure data: nothing here opens a socket. The groups are:

- private: RFC 1918 (10/8, 172.16/12, 192.168/16), CGNAT 100.64.0.0/10, and
  unique local fc00::/7;
- loopback: 127.0.0.0/8 and ::1, plus the unspecified addresses 0.0.0.0 and ::,
  because on Linux connect() to an unspecified address reaches the local host;
- link-local: 169.254.0.0/16 and fe80::/10;
- metadata: the cloud instance metadata services 169.254.169.254 and
  fd00:ec2::254 (so these are also link-local or private);
- multicast: 224.0.0.0/4 and ff00::/8;
- public: every address in none of the groups above that is also not in a
  reserved special-purpose range (RESERVED_NETWORKS, and for IPv6 anything
  outside the global unicast block 2000::/3).

IPv6 addresses that embed an IPv4 address are classified by the embedded
address: IPv4-mapped ::ffff:0:0/96, NAT64 64:ff9b::/96, 6to4 2002::/16 (bits
16-48), Teredo 2001::/32 (the client address is the last 32 bits XOR
0xffffffff) and IPv4-compatible ::/96. So ::ffff:169.254.169.254 is metadata.
The tables are written out here instead of taken from the ipaddress module,
whose is_private and is_global lists changed between Python patch releases.
"""

from __future__ import annotations

import ipaddress
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

__all__ = [
    "GROUP_NETWORKS",
    "RESERVED_NETWORKS",
    "IPAddress",
    "classify_address",
    "embedded_ipv4",
    "unwrap_address",
]

IPAddress = IPv4Address | IPv6Address

_net = ipaddress.ip_network

GROUP_NETWORKS: dict[str, tuple[IPv4Network | IPv6Network, ...]] = {
    "private": (
        _net("10.0.0.0/8"),
        _net("172.16.0.0/12"),
        _net("192.168.0.0/16"),
        _net("100.64.0.0/10"),
        _net("fc00::/7"),
    ),
    "loopback": (
        _net("127.0.0.0/8"),
        _net("0.0.0.0/32"),
        _net("::1/128"),
        _net("::/128"),
    ),
    "link-local": (_net("169.254.0.0/16"), _net("fe80::/10")),
    "metadata": (_net("169.254.169.254/32"), _net("fd00:ec2::254/128")),
    "multicast": (_net("224.0.0.0/4"), _net("ff00::/8")),
}

# Special-purpose ranges that are not publicly routable but belong to no group
# (IANA IPv4 and IPv6 Special-Purpose Address Registries, RFC 6890 and later).
RESERVED_NETWORKS: tuple[IPv4Network | IPv6Network, ...] = (
    _net("0.0.0.0/8"),  # "this network"
    _net("192.0.0.0/24"),  # IETF protocol assignments
    _net("192.0.2.0/24"),  # documentation TEST-NET-1
    _net("198.18.0.0/15"),  # benchmarking
    _net("198.51.100.0/24"),  # documentation TEST-NET-2
    _net("203.0.113.0/24"),  # documentation TEST-NET-3
    _net("240.0.0.0/4"),  # reserved, including broadcast 255.255.255.255
    _net("64:ff9b:1::/48"),  # local-use NAT64
    _net("100::/64"),  # discard-only
    _net("2001:2::/48"),  # benchmarking
    _net("2001:10::/28"),  # ORCHID, deprecated
    _net("2001:db8::/32"),  # documentation
    _net("3fff::/20"),  # documentation
    _net("fec0::/10"),  # site-local, deprecated
)

_GLOBAL_UNICAST_V6 = _net("2000::/3")
_MAPPED = _net("::ffff:0:0/96")
_NAT64 = _net("64:ff9b::/96")
_SIX_TO_FOUR = _net("2002::/16")
_TEREDO = _net("2001::/32")
_COMPATIBLE = _net("::/96")


def _as_address(ip: IPAddress | str) -> IPAddress:
    if isinstance(ip, (IPv4Address, IPv6Address)):
        return ip
    return ipaddress.ip_address(ip)


def embedded_ipv4(ip: IPAddress | str) -> IPv4Address | None:
    """Return the IPv4 address embedded in an IPv6 address, or None.

    Recognized forms: IPv4-mapped, NAT64 well-known prefix, 6to4, Teredo
    (client address) and IPv4-compatible. :: and ::1 are not treated as
    IPv4-compatible, because they are the IPv6 unspecified and loopback
    addresses. IPv4
    input returns None. Raises ValueError for a string that is not an address.
    """
    address = _as_address(ip)
    if isinstance(address, IPv4Address):
        return None
    value = int(address)
    if address in _MAPPED or address in _NAT64:
        return IPv4Address(value & 0xFFFFFFFF)
    if address in _SIX_TO_FOUR:
        return IPv4Address((value >> 80) & 0xFFFFFFFF)
    if address in _TEREDO:
        return IPv4Address((value & 0xFFFFFFFF) ^ 0xFFFFFFFF)
    if address in _COMPATIBLE and value > 1:
        return IPv4Address(value & 0xFFFFFFFF)
    return None


def unwrap_address(ip: IPAddress | str) -> IPAddress:
    """Return the embedded IPv4 address of `ip` if it has one, else `ip` itself."""
    address = _as_address(ip)
    embedded = embedded_ipv4(address)
    return address if embedded is None else embedded


def classify_address(ip: IPAddress | str) -> frozenset[str]:
    """Return the names of the groups `ip` belongs to, e.g. {"link-local", "metadata"}.

    An empty set means a reserved address that is neither public nor in any
    group. Raises ValueError for a string that is not an address.
    """
    address = unwrap_address(ip)
    groups = {
        group
        for group, networks in GROUP_NETWORKS.items()
        if any(address in network for network in networks)
    }
    if groups:
        return frozenset(groups)
    if any(address in network for network in RESERVED_NETWORKS):
        return frozenset()
    if isinstance(address, IPv6Address) and address not in _GLOBAL_UNICAST_V6:
        return frozenset()
    return frozenset({"public"})
