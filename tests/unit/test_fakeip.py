"""Fake address pool: stable sequential allocation, reverse lookup and LRU reuse."""

from __future__ import annotations

import socket
from ipaddress import IPv4Address, IPv6Address

import pytest

from sealbox.gateway.fakeip import FakeAddressPool


def test_pool_first_addresses() -> None:
    pool = FakeAddressPool()
    assert pool.address_for("github.com", 4) == IPv4Address("198.18.0.1")
    assert pool.address_for("github.com", 6) == IPv6Address("100::1")


def test_pool_sequential() -> None:
    pool = FakeAddressPool()
    addresses = [pool.address_for(f"host{index}.test", 4) for index in range(3)]
    assert addresses == [IPv4Address("198.18.0.1"), IPv4Address("198.18.0.2"), IPv4Address("198.18.0.3")]


def test_pool_stable_per_name() -> None:
    pool = FakeAddressPool()
    first = pool.address_for("github.com", 4)
    pool.address_for("pypi.test", 4)
    assert pool.address_for("github.com", 4) == first


def test_pool_case_insensitive() -> None:
    pool = FakeAddressPool()
    assert pool.address_for("GitHub.com.", 4) == pool.address_for("github.com", 4)


def test_pool_socket_families() -> None:
    pool = FakeAddressPool()
    assert pool.address_for("a.test", socket.AF_INET) == pool.address_for("a.test", 4)
    assert pool.address_for("a.test", socket.AF_INET6) == pool.address_for("a.test", 6)


def test_pool_bad_family() -> None:
    with pytest.raises(ValueError, match="invalid address family 5"):
        FakeAddressPool().address_for("a.test", 5)


def test_pool_name_for() -> None:
    pool = FakeAddressPool()
    v4 = pool.address_for("github.com", 4)
    v6 = pool.address_for("github.com", 6)
    assert pool.name_for(v4) == "github.com"
    assert pool.name_for(str(v6)) == "github.com"


def test_pool_name_for_mapped() -> None:
    pool = FakeAddressPool()
    pool.address_for("github.com", 4)
    assert pool.name_for("::ffff:198.18.0.1") == "github.com"


def test_pool_name_for_unallocated() -> None:
    pool = FakeAddressPool()
    assert pool.name_for("198.18.0.99") is None
    assert pool.name_for("8.8.8.8") is None
    assert pool.name_for("not-an-address") is None


@pytest.mark.parametrize(
    "address, inside",
    [
        ("198.18.0.0", True),
        ("198.19.255.255", True),
        ("198.20.0.1", False),
        ("100::abcd", True),
        ("100:0:0:1::1", False),
        ("::ffff:198.18.3.4", True),
        ("127.0.0.1", False),
        ("junk", False),
    ],
)
def test_pool_contains(address: str, inside: bool) -> None:
    assert FakeAddressPool().contains(address) == inside


def test_pool_custom_networks() -> None:
    pool = FakeAddressPool("198.18.4.0/30", "100::/126")
    assert pool.address_for("a.test", 4) == IPv4Address("198.18.4.1")
    assert pool.address_for("a.test", 6) == IPv6Address("100::1")


@pytest.mark.parametrize(
    "v4, v6",
    [
        ("100::/64", "100::/64"),
        ("198.18.0.0/15", "198.18.0.0/15"),
        ("198.18.0.1/15", "100::/64"),
        ("198.18.0.0/31", "100::/64"),
    ],
)
def test_pool_invalid_networks(v4: str, v6: str) -> None:
    with pytest.raises(ValueError):
        FakeAddressPool(v4, v6)


def test_pool_exhaustion_reuses_lru() -> None:
    # A /30 has two usable addresses: .1 and .2 (the network and broadcast addresses are skipped).
    pool = FakeAddressPool("198.18.4.0/30")
    first = pool.address_for("a.test", 4)
    second = pool.address_for("b.test", 4)
    pool.address_for("a.test", 4)  # a.test is now the most recently used
    third = pool.address_for("c.test", 4)
    assert third == second
    assert pool.name_for(second) == "c.test"
    assert pool.address_for("a.test", 4) == first


def test_pool_exhaustion_name_for_counts_as_use() -> None:
    pool = FakeAddressPool("198.18.4.0/30")
    first = pool.address_for("a.test", 4)
    second = pool.address_for("b.test", 4)
    assert pool.name_for(first) == "a.test"
    assert pool.address_for("c.test", 4) == second


def test_pool_exhaustion_evicted_name_gets_new_address() -> None:
    pool = FakeAddressPool("198.18.4.0/30")
    pool.address_for("a.test", 4)
    pool.address_for("b.test", 4)
    pool.address_for("c.test", 4)  # evicts a.test
    assert pool.name_for("198.18.4.1") == "c.test"
    assert pool.address_for("a.test", 4) == IPv4Address("198.18.4.2")
    assert pool.name_for("198.18.4.2") == "a.test"


def test_pool_max_names_bounds_v6() -> None:
    pool = FakeAddressPool(max_names=2)
    pool.address_for("a.test", 6)
    pool.address_for("b.test", 6)
    third = pool.address_for("c.test", 6)
    assert third == IPv6Address("100::1")
    assert pool.name_for("100::1") == "c.test"


def test_pool_many_names_distinct() -> None:
    pool = FakeAddressPool()
    addresses = {pool.address_for(f"host{index}.test", 4) for index in range(5000)}
    assert len(addresses) == 5000
