"""Gateway resolver with static maps. The host's resolver is never queried.

The tests that cover the system-resolver branch run on an event loop whose
getaddrinfo is replaced by a stand-in, so no lookup leaves the process.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Coroutine
from ipaddress import ip_address
from typing import Any, TypeVar

import pytest

from sealbox.gateway.resolver import ResolutionError, ResolvedAddress, Resolver
from sealbox.spec.network import ConnectTo

T = TypeVar("T")


class StandInLoop(asyncio.SelectorEventLoop):
    """Event loop whose getaddrinfo records each call and runs `handler` instead of the host resolver."""

    def __init__(self, handler: Callable[..., Coroutine[Any, Any, Any]]) -> None:
        super().__init__()
        self.handler = handler
        self.calls: list[tuple[object, object]] = []

    async def getaddrinfo(self, host: object, port: object, **kwargs: Any) -> Any:  # type: ignore[override]
        self.calls.append((host, port))
        return await self.handler(host, port, **kwargs)


async def fail_lookup(host: object, port: object, **kwargs: Any) -> Any:
    raise AssertionError(f"the system resolver was queried for {host!r}")


def run_on(loop: StandInLoop, coroutine: Coroutine[Any, Any, T]) -> T:
    try:
        return loop.run_until_complete(coroutine)
    finally:
        loop.close()


def resolve(resolver: Resolver, name: str, port: int) -> list[ResolvedAddress]:
    return run_on(StandInLoop(fail_lookup), resolver.resolve(name, port))


CONNECT_TO = (
    ConnectTo.parse("github.com:443:127.0.0.1:8443"),
    ConnectTo.parse("github.com::127.0.0.1:8080"),
    ConnectTo.parse("api.github.com:443:[::1]:9443"),
    ConnectTo.parse("api.github.com:443:127.0.0.1:9443"),
    ConnectTo.parse("pypi.test:443:127.0.0.1:7443"),
)
HOSTS = {"canary.test": ["127.0.0.1", "::1"], "pypi.test": ["127.0.0.9"]}


@pytest.fixture
def resolver() -> Resolver:
    return Resolver(CONNECT_TO, HOSTS, use_system=True)


def test_connect_to_port_match(resolver: Resolver) -> None:
    assert resolve(resolver, "github.com", 443) == [ResolvedAddress(ip_address("127.0.0.1"), 8443, trusted=True)]


def test_connect_to_any_port(resolver: Resolver) -> None:
    assert resolve(resolver, "github.com", 80) == [ResolvedAddress(ip_address("127.0.0.1"), 8080, trusted=True)]


def test_connect_to_case_and_dot(resolver: Resolver) -> None:
    assert resolve(resolver, "GitHub.com.", 443)[0].port == 8443


def test_connect_to_several_addresses(resolver: Resolver) -> None:
    addresses = [item.address for item in resolve(resolver, "api.github.com", 443)]
    assert addresses == [ip_address("::1"), ip_address("127.0.0.1")]


def test_connect_to_port_mismatch_no_system(resolver: Resolver) -> None:
    with pytest.raises(ResolutionError, match="do not cover port 80"):
        resolve(resolver, "api.github.com", 80)


def test_connect_to_before_hosts(resolver: Resolver) -> None:
    assert resolve(resolver, "pypi.test", 443) == [ResolvedAddress(ip_address("127.0.0.1"), 7443, trusted=True)]


def test_hosts_when_connect_to_port_differs(resolver: Resolver) -> None:
    assert resolve(resolver, "pypi.test", 80) == [ResolvedAddress(ip_address("127.0.0.9"), 80, trusted=True)]


def test_hosts_keep_port(resolver: Resolver) -> None:
    assert resolve(resolver, "canary.test", 8000) == [
        ResolvedAddress(ip_address("127.0.0.1"), 8000, trusted=True),
        ResolvedAddress(ip_address("::1"), 8000, trusted=True),
    ]


def test_hosts_string_value() -> None:
    resolver = Resolver(hosts={"Echo.Test": "127.0.0.3"}, use_system=False)
    assert resolve(resolver, "echo.test", 80) == [ResolvedAddress(ip_address("127.0.0.3"), 80, trusted=True)]


def test_has_static(resolver: Resolver) -> None:
    assert resolver.has_static("github.com")
    assert resolver.has_static("API.github.com.")
    assert resolver.has_static("canary.test")
    assert not resolver.has_static("example.com")


def test_ip_literal_untrusted(resolver: Resolver) -> None:
    assert resolve(resolver, "127.0.0.1", 80) == [ResolvedAddress(ip_address("127.0.0.1"), 80, trusted=False)]


def test_ip_literal_bracketed(resolver: Resolver) -> None:
    assert resolve(resolver, "[::1]", 80) == [ResolvedAddress(ip_address("::1"), 80, trusted=False)]


def test_system_disabled_not_found() -> None:
    resolver = Resolver(CONNECT_TO, HOSTS, use_system=False)
    with pytest.raises(ResolutionError) as caught:
        resolve(resolver, "example.com", 443)
    assert caught.value.name == "example.com"
    assert str(caught.value) == (
        "cannot resolve 'example.com': not in the static name map, and system resolution is disabled"
    )


def test_invalid_name() -> None:
    with pytest.raises(ResolutionError, match="invalid host name"):
        resolve(Resolver(use_system=False), "bad name", 80)


def test_static_name_never_asks_system(resolver: Resolver) -> None:
    loop = StandInLoop(fail_lookup)
    run_on(loop, resolver.resolve("github.com", 443))
    assert loop.calls == []


def test_system_fallback_untrusted() -> None:
    async def return_addresses(host: object, port: object, **kwargs: Any) -> Any:
        assert kwargs["type"] == socket.SOCK_STREAM
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("2606:2800:220:1::1", port, 0, 0)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
        ]

    loop = StandInLoop(return_addresses)
    results = run_on(loop, Resolver(CONNECT_TO).resolve("Example.com", 443))
    assert results == [
        ResolvedAddress(ip_address("93.184.216.34"), 443, trusted=False),
        ResolvedAddress(ip_address("2606:2800:220:1::1"), 443, trusted=False),
    ]
    assert loop.calls == [("example.com", 443)]


def test_system_not_found() -> None:
    async def fail(host: object, port: object, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with pytest.raises(ResolutionError, match="system resolver failed: Name or service not known"):
        run_on(StandInLoop(fail), Resolver().resolve("missing.test", 80))


def test_system_timeout() -> None:
    async def hang(host: object, port: object, **kwargs: Any) -> Any:
        await asyncio.sleep(10)

    resolver = Resolver(system_timeout=0.05)
    with pytest.raises(ResolutionError, match="timed out after 0.05 s"):
        run_on(StandInLoop(hang), resolver.resolve("slow.test", 80))


def test_system_empty_result() -> None:
    async def empty(host: object, port: object, **kwargs: Any) -> Any:
        return []

    with pytest.raises(ResolutionError, match="no IPv4 or IPv6 address"):
        run_on(StandInLoop(empty), Resolver().resolve("empty.test", 80))
