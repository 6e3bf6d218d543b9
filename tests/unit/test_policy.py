"""Address groups and the policy engine. Addresses here are data only, and nothing is sent."""

from __future__ import annotations

from ipaddress import IPv4Address, ip_address

import pytest

from sealbox.gateway.addresses import classify_address, embedded_ipv4, unwrap_address
from sealbox.gateway.policy import Destination, PolicyEngine
from sealbox.spec.network import Action, Direction, NetworkPolicy, Rule

# ---------------------------------------------------------------------------
# Address groups


@pytest.mark.parametrize(
    "address, groups",
    [
        ("8.8.8.8", {"public"}),
        ("2606:4700::1111", {"public"}),
        ("10.1.2.3", {"private"}),
        ("172.16.0.1", {"private"}),
        ("172.32.0.1", {"public"}),
        ("192.168.1.1", {"private"}),
        ("100.64.0.1", {"private"}),
        ("100.128.0.1", {"public"}),
        ("fd12::1", {"private"}),
        ("127.0.0.1", {"loopback"}),
        ("127.255.0.9", {"loopback"}),
        ("::1", {"loopback"}),
        ("0.0.0.0", {"loopback"}),
        ("::", {"loopback"}),
        ("169.254.1.1", {"link-local"}),
        ("fe80::1", {"link-local"}),
        ("169.254.169.254", {"link-local", "metadata"}),
        ("fd00:ec2::254", {"private", "metadata"}),
        ("224.0.0.251", {"multicast"}),
        ("239.255.255.250", {"multicast"}),
        ("ff02::fb", {"multicast"}),
        ("0.1.2.3", set()),
        ("192.0.2.10", set()),
        ("198.51.100.7", set()),
        ("203.0.113.9", set()),
        ("198.18.0.1", set()),
        ("240.0.0.1", set()),
        ("255.255.255.255", set()),
        ("2001:db8::1", set()),
        ("100::1", set()),
        ("4000::1", set()),
    ],
)
def test_classify_address_groups(address: str, groups: set[str]) -> None:
    assert classify_address(address) == frozenset(groups)


# Every IPv6 form that embeds 169.254.169.254 or 10.0.0.5.
EMBEDDED = [
    ("::ffff:169.254.169.254", "169.254.169.254"),  # IPv4-mapped
    ("64:ff9b::a9fe:a9fe", "169.254.169.254"),  # NAT64
    ("2002:a9fe:a9fe::1", "169.254.169.254"),  # 6to4
    ("2001:0:4136:e378:8000:63bf:5601:5601", "169.254.169.254"),  # Teredo, client XOR 0xffffffff
    ("::169.254.169.254", "169.254.169.254"),  # IPv4-compatible
    ("::ffff:10.0.0.5", "10.0.0.5"),
    ("64:ff9b::a00:5", "10.0.0.5"),
    ("2002:a00:5::", "10.0.0.5"),
    ("2001:0:4136:e378:8000:63bf:f5ff:fffa", "10.0.0.5"),
    ("::10.0.0.5", "10.0.0.5"),
]


@pytest.mark.parametrize("address, inner", EMBEDDED)
def test_embedded_ipv4_forms(address: str, inner: str) -> None:
    assert embedded_ipv4(address) == IPv4Address(inner)


@pytest.mark.parametrize("address, inner", EMBEDDED)
def test_classify_embedded_forms(address: str, inner: str) -> None:
    assert classify_address(address) == classify_address(inner)


def test_classify_mapped_metadata() -> None:
    assert "metadata" in classify_address("::ffff:169.254.169.254")


def test_classify_nat64_public() -> None:
    assert classify_address("64:ff9b::808:808") == frozenset({"public"})


@pytest.mark.parametrize("address", ["::1", "::", "2606:4700::1111", "10.0.0.1", "fe80::1"])
def test_embedded_ipv4_none(address: str) -> None:
    assert embedded_ipv4(address) is None


def test_unwrap_address_mapped() -> None:
    assert unwrap_address("::ffff:1.2.3.4") == IPv4Address("1.2.3.4")


def test_unwrap_address_plain() -> None:
    assert unwrap_address("2606:4700::1111") == ip_address("2606:4700::1111")


def test_classify_invalid_raises() -> None:
    with pytest.raises(ValueError):
        classify_address("not-an-address")


# ---------------------------------------------------------------------------
# Rule matching


def make_engine(*rules: Rule, egress: Action = Action.ALLOW, ingress: Action = Action.ALLOW) -> PolicyEngine:
    return PolicyEngine(NetworkPolicy(default_egress=egress, default_ingress=ingress, rules=rules))


def make_dest(
    *names: str,
    addresses: tuple[str, ...] = (),
    port: int = 443,
    protocol: str = "tcp",
    trusted: bool = False,
    direction: Direction = Direction.EGRESS,
) -> Destination:
    return Destination(
        names=names,
        addresses=tuple(ip_address(address) for address in addresses),
        trusted_addresses=trusted,
        port=port,
        protocol=protocol,
        direction=direction,
    )


def test_domain_rule_exact() -> None:
    verdict = make_engine(Rule.deny("github.com")).check(make_dest("github.com"))
    assert verdict.action is Action.DENY
    assert verdict.rule_index == 0
    assert verdict.reason == "rule 0 (deny github.com) matched name github.com"


def test_domain_rule_case_insensitive() -> None:
    verdict = make_engine(Rule.deny("github.com")).check(make_dest("GitHub.COM."))
    assert verdict.action is Action.DENY


def test_domain_rule_not_subdomain() -> None:
    verdict = make_engine(Rule.deny("github.com")).check(make_dest("api.github.com"))
    assert verdict.action is Action.ALLOW
    assert verdict.rule_index is None


def test_domain_rule_any_name_matches() -> None:
    verdict = make_engine(Rule.deny("evil.test")).check(make_dest("good.test", "evil.test"))
    assert verdict.action is Action.DENY


@pytest.mark.parametrize(
    "name, denied",
    [
        ("a.example.com", True),
        ("a.b.c.example.com", True),
        ("example.com", False),
        ("badexample.com", False),
        ("example.com.evil.test", False),
    ],
)
def test_wildcard_depth(name: str, denied: bool) -> None:
    verdict = make_engine(Rule.deny("*.example.com")).check(make_dest(name))
    assert (verdict.action is Action.DENY) == denied


def test_ip_rule() -> None:
    verdict = make_engine(Rule.deny("93.184.216.34")).check(make_dest(addresses=("93.184.216.34",)))
    assert verdict.action is Action.DENY
    assert verdict.reason == "rule 0 (deny 93.184.216.34) matched address 93.184.216.34"


def test_cidr_rule() -> None:
    rules = make_engine(Rule.deny("10.1.2.0/24"))
    assert rules.check(make_dest(addresses=("10.1.2.200",))).action is Action.DENY
    assert rules.check(make_dest(addresses=("10.1.3.1",))).action is Action.ALLOW


def test_cidr_rule_ipv6() -> None:
    verdict = make_engine(Rule.deny("2001:db8::/32")).check(make_dest(addresses=("2001:db8::5",)))
    assert verdict.action is Action.DENY


def test_cidr_rule_embedded_ipv4() -> None:
    verdict = make_engine(Rule.deny("10.0.0.0/8")).check(make_dest(addresses=("::ffff:10.0.0.5",)))
    assert verdict.action is Action.DENY


def test_cidr_rule_ipv6_prefix_raw() -> None:
    verdict = make_engine(Rule.deny("64:ff9b::/96")).check(make_dest(addresses=("64:ff9b::808:808",)))
    assert verdict.action is Action.DENY


@pytest.mark.parametrize("address, inner", EMBEDDED[:5])
def test_group_rule_embedded(address: str, inner: str) -> None:
    verdict = make_engine(Rule.deny(group="metadata")).check(make_dest(addresses=(address,), port=80))
    assert verdict.action is Action.DENY
    assert verdict.reason == f"rule 0 (deny group metadata) matched address {ip_address(address)}"


def test_group_rule_public() -> None:
    rules = make_engine(Rule.allow(group="public"), egress=Action.DENY)
    assert rules.check(make_dest(addresses=("8.8.8.8",))).action is Action.ALLOW
    assert rules.check(make_dest(addresses=("192.0.2.1",))).action is Action.DENY


def test_any_rule_matches_everything() -> None:
    verdict = make_engine(Rule.deny()).check(make_dest("github.com", addresses=("8.8.8.8",)))
    assert verdict.action is Action.DENY
    assert verdict.rule_index == 0


def test_any_rule_matches_empty_destination() -> None:
    verdict = make_engine(Rule.deny()).check(Destination())
    assert verdict.action is Action.DENY


# ---------------------------------------------------------------------------
# Ports, protocol, direction


@pytest.mark.parametrize(
    "port, denied", [(80, True), (443, True), (8000, True), (8500, True), (9000, True), (22, False), (9001, False)]
)
def test_ports_list_and_range(port: int, denied: bool) -> None:
    verdict = make_engine(Rule.deny("github.com", ports="80,443,8000-9000")).check(make_dest("github.com", port=port))
    assert (verdict.action is Action.DENY) == denied


def test_ports_unknown_port_no_match() -> None:
    verdict = make_engine(Rule.deny("github.com", port=443)).check(make_dest("github.com", port=0))
    assert verdict.action is Action.ALLOW


@pytest.mark.parametrize("protocol, denied", [("udp", True), ("tcp", False)])
def test_protocol_udp_rule(protocol: str, denied: bool) -> None:
    verdict = make_engine(Rule.deny("github.com", protocol="udp")).check(make_dest("github.com", protocol=protocol))
    assert (verdict.action is Action.DENY) == denied


def test_protocol_any_rule() -> None:
    rules = make_engine(Rule.deny("github.com", protocol="any"))
    assert rules.check(make_dest("github.com", protocol="udp")).action is Action.DENY
    assert rules.check(make_dest("github.com", protocol="tcp")).action is Action.DENY


def test_direction_egress_rule_ignores_ingress() -> None:
    rules = make_engine(Rule.deny("10.0.0.0/8"))
    verdict = rules.check(make_dest(addresses=("10.0.0.1",), direction=Direction.INGRESS))
    assert verdict.action is Action.ALLOW


def test_direction_ingress_rule() -> None:
    rules = make_engine(Rule.deny(group="private", direction="ingress"))
    assert rules.check(make_dest(addresses=("10.0.0.1",), direction=Direction.INGRESS)).action is Action.DENY
    assert rules.check(make_dest(addresses=("10.0.0.1",))).action is Action.ALLOW


# ---------------------------------------------------------------------------
# Order and defaults


def test_first_match_allow_before_deny() -> None:
    rules = make_engine(Rule.allow("api.github.com"), Rule.deny("*.github.com"))
    verdict = rules.check(make_dest("api.github.com"))
    assert verdict.action is Action.ALLOW
    assert verdict.rule_index == 0


def test_first_match_deny_before_allow() -> None:
    rules = make_engine(Rule.deny("*.github.com"), Rule.allow("api.github.com"))
    verdict = rules.check(make_dest("api.github.com"))
    assert verdict.action is Action.DENY
    assert verdict.rule_index == 0


def test_first_match_skips_other_ports() -> None:
    rules = make_engine(Rule.allow("github.com", port=22), Rule.deny("github.com"))
    verdict = rules.check(make_dest("github.com", port=443))
    assert verdict.action is Action.DENY
    assert verdict.rule_index == 1


def test_default_egress_deny() -> None:
    verdict = make_engine(egress=Action.DENY).check(make_dest("github.com", port=443))
    assert verdict.action is Action.DENY
    assert verdict.rule_index is None
    assert verdict.reason == "no rule matched github.com tcp port 443; default egress is deny"


def test_default_ingress_deny() -> None:
    rules = make_engine(egress=Action.ALLOW, ingress=Action.DENY)
    assert rules.check(make_dest(addresses=("8.8.8.8",), direction=Direction.INGRESS)).action is Action.DENY
    assert rules.check(make_dest(addresses=("8.8.8.8",))).action is Action.ALLOW


def test_default_allow_all() -> None:
    verdict = PolicyEngine(NetworkPolicy.allow_all()).check(make_dest(addresses=("10.0.0.1",)))
    assert verdict.action is Action.ALLOW


# ---------------------------------------------------------------------------
# public_only and trusted addresses


PUBLIC_ONLY = PolicyEngine(NetworkPolicy.public_only())


@pytest.mark.parametrize(
    "address, allowed",
    [
        ("8.8.8.8", True),
        ("2606:4700::1111", True),
        ("10.0.0.5", False),
        ("127.0.0.1", False),
        ("0.0.0.0", False),
        ("169.254.169.254", False),
        ("::ffff:169.254.169.254", False),
        ("fd00:ec2::254", False),
        ("224.0.0.1", False),
        ("::ffff:127.0.0.1", False),
    ],
)
def test_public_only_addresses(address: str, allowed: bool) -> None:
    verdict = PUBLIC_ONLY.check(make_dest(addresses=(address,)))
    assert verdict.allowed == allowed


def test_trusted_addresses_skip_address_rules() -> None:
    verdict = PUBLIC_ONLY.check(make_dest("github.com", addresses=("127.0.0.1",), trusted=True))
    assert verdict.action is Action.ALLOW
    assert verdict.rule_index is None


def test_trusted_addresses_names_checked() -> None:
    rules = make_engine(Rule.deny("github.com"), Rule.deny(group="loopback"))
    verdict = rules.check(make_dest("github.com", addresses=("127.0.0.1",), trusted=True))
    assert verdict.action is Action.DENY
    assert verdict.rule_index == 0


# ---------------------------------------------------------------------------
# Rebinding guard


def test_rebinding_guard_domain_allow() -> None:
    policy = NetworkPolicy.public_only()
    rules = PolicyEngine(NetworkPolicy(rules=(Rule.allow("internal.example"), *policy.rules)))
    verdict = rules.check(make_dest("internal.example", addresses=("10.0.0.5",)))
    assert verdict.action is Action.DENY
    assert verdict.rule_index == 1
    assert verdict.reason == (
        "rule 1 (deny group private) matched address 10.0.0.5 of internal.example"
        " (rebinding guard; rule 0 allowed the connection)"
    )


def test_rebinding_guard_public_address_passes() -> None:
    rules = PolicyEngine(NetworkPolicy(rules=(Rule.allow("internal.example"), *NetworkPolicy.public_only().rules)))
    verdict = rules.check(make_dest("internal.example", addresses=("93.184.216.34",)))
    assert verdict.action is Action.ALLOW
    assert verdict.rule_index == 0


def test_address_deny_with_name() -> None:
    verdict = make_engine(Rule.deny("10.0.0.0/8")).check(make_dest("a.test", addresses=("10.0.0.5",)))
    assert verdict.action is Action.DENY
    assert verdict.rule_index == 0


def test_rebinding_guard_later_deny_rule() -> None:
    rules = make_engine(Rule.allow("github.com"), Rule.deny(group="private"), egress=Action.DENY)
    verdict = rules.check(make_dest("github.com", addresses=("192.168.1.1",)))
    assert verdict.action is Action.DENY
    assert verdict.rule_index == 1


def test_rebinding_guard_one_bad_address() -> None:
    rules = make_engine(Rule.allow("github.com"), Rule.deny(group="metadata"))
    verdict = rules.check(make_dest("github.com", addresses=("140.82.112.3", "::ffff:169.254.169.254")))
    assert verdict.action is Action.DENY
    assert verdict.rule_index == 1


def test_rebinding_guard_earlier_address_allow() -> None:
    rules = make_engine(Rule.allow("internal.example"), Rule.allow("10.0.0.0/24"), Rule.deny(group="private"))
    verdict = rules.check(make_dest("internal.example", addresses=("10.0.0.5",)))
    assert verdict.action is Action.ALLOW
    assert verdict.rule_index == 0


def test_rebinding_guard_address_allow_multi() -> None:
    rules = make_engine(Rule.allow("8.8.8.0/24"), Rule.deny(group="private"))
    verdict = rules.check(make_dest(addresses=("8.8.8.8", "10.0.0.5")))
    assert verdict.action is Action.DENY
    assert verdict.rule_index == 1


def test_rebinding_guard_respects_ports() -> None:
    rules = make_engine(Rule.allow("github.com"), Rule.deny(group="private", port=22))
    verdict = rules.check(make_dest("github.com", addresses=("10.0.0.5",), port=443))
    assert verdict.action is Action.ALLOW


def test_rebinding_guard_skipped_for_trusted() -> None:
    rules = make_engine(Rule.allow("github.com"), Rule.deny(group="loopback"))
    verdict = rules.check(make_dest("github.com", addresses=("127.0.0.1",), trusted=True))
    assert verdict.action is Action.ALLOW


def test_rebinding_guard_skipped_for_any_rule() -> None:
    rules = make_engine(Rule.allow(), Rule.deny(group="private"))
    verdict = rules.check(make_dest("github.com", addresses=("10.0.0.5",)))
    assert verdict.action is Action.ALLOW
    assert verdict.rule_index == 0


# ---------------------------------------------------------------------------
# DNS names


def test_check_name_public_only_allows() -> None:
    verdict = PUBLIC_ONLY.check_name("internal.example")
    assert verdict.action is Action.ALLOW
    assert verdict.rule_index is None


def test_check_name_domain_deny() -> None:
    verdict = make_engine(Rule.deny("evil.test")).check_name("Evil.Test.")
    assert verdict.action is Action.DENY
    assert verdict.rule_index == 0
    assert verdict.reason == "rule 0 (deny evil.test) matched name evil.test"


def test_check_name_wildcard_deny() -> None:
    rules = make_engine(Rule.deny("*.evil.test"))
    assert rules.check_name("a.b.evil.test").action is Action.DENY
    assert rules.check_name("evil.test").action is Action.ALLOW


def test_check_name_port_deny_not_whole_name() -> None:
    verdict = make_engine(Rule.deny("github.com", port=22)).check_name("github.com")
    assert verdict.action is Action.ALLOW


def test_check_name_protocol_deny_not_whole_name() -> None:
    verdict = make_engine(Rule.deny("github.com", protocol="udp")).check_name("github.com")
    assert verdict.action is Action.ALLOW


def test_check_name_port_deny_then_deny() -> None:
    verdict = make_engine(Rule.deny("github.com", port=22), Rule.deny("github.com")).check_name("github.com")
    assert verdict.action is Action.DENY
    assert verdict.rule_index == 1


def test_check_name_earlier_allow_wins() -> None:
    rules = make_engine(Rule.allow("api.github.com", port=443), Rule.deny("*.github.com"))
    verdict = rules.check_name("api.github.com")
    assert verdict.action is Action.ALLOW
    assert verdict.rule_index == 0


def test_check_name_default_deny() -> None:
    verdict = make_engine(Rule.allow("github.com", port=443), egress=Action.DENY).check_name("example.com")
    assert verdict.action is Action.DENY
    assert verdict.rule_index is None


def test_check_name_default_deny_domain_allow() -> None:
    verdict = make_engine(Rule.allow("github.com", port=443), egress=Action.DENY).check_name("github.com")
    assert verdict.action is Action.ALLOW


def test_check_name_default_deny_address_allow() -> None:
    verdict = make_engine(Rule.allow(group="public"), egress=Action.DENY).check_name("example.com")
    assert verdict.action is Action.ALLOW
    assert verdict.rule_index == 0


def test_check_name_any_deny() -> None:
    verdict = make_engine(Rule.deny()).check_name("github.com")
    assert verdict.action is Action.DENY


def test_check_name_any_deny_with_port() -> None:
    verdict = make_engine(Rule.deny(port=25)).check_name("github.com")
    assert verdict.action is Action.ALLOW


def test_check_name_ignores_address_deny() -> None:
    verdict = make_engine(Rule.deny(group="private")).check_name("github.com")
    assert verdict.action is Action.ALLOW


def test_check_name_ignores_ingress_rules() -> None:
    verdict = make_engine(Rule.deny("github.com", direction="ingress")).check_name("github.com")
    assert verdict.action is Action.ALLOW
