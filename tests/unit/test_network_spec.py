"""Network specification: rule parsing and validation, name maps, published ports, JSON."""

from __future__ import annotations

import json

import pytest

from sealbox.errors import InvalidSpecError
from sealbox.spec.network import (
    GROUPS,
    Action,
    ConnectTo,
    Direction,
    Network,
    NetworkPolicy,
    PortPublish,
    PortRange,
    Rule,
    normalize_host_name,
    parse_ports,
    parse_rule,
)

# (text, action, target, group, ports as text, protocol)
VALID_RULES = [
    ("allow@github.com:tcp:443", Action.ALLOW, "github.com", None, "443", "tcp"),
    ("deny@metadata", Action.DENY, None, "metadata", "", "any"),
    ("allow@10.1.2.0/24:tcp:8000-9000", Action.ALLOW, "10.1.2.0/24", None, "8000-9000", "tcp"),
    ("deny@[fd00::/8]:any:1-1024", Action.DENY, "fd00::/8", None, "1-1024", "any"),
    ("allow@*.example.com", Action.ALLOW, "*.example.com", None, "", "any"),
    ("allow@GitHub.COM", Action.ALLOW, "github.com", None, "", "any"),
    ("deny@private", Action.DENY, None, "private", "", "any"),
    ("deny@link-local:udp", Action.DENY, None, "link-local", "", "udp"),
    ("allow@public:tcp:80,443", Action.ALLOW, None, "public", "80,443", "tcp"),
    ("deny@*:udp", Action.DENY, None, None, "", "udp"),
    ("allow@[::1]:tcp:22", Action.ALLOW, "::1", None, "22", "tcp"),
    ("deny@169.254.169.254", Action.DENY, "169.254.169.254", None, "", "any"),
    ("allow@example.com:udp:53,8000-9000", Action.ALLOW, "example.com", None, "53,8000-9000", "udp"),
    ("DENY@example.com:TCP", Action.DENY, "example.com", None, "", "tcp"),
    ("allow@private.:tcp:80", Action.ALLOW, "private", None, "80", "tcp"),
]


@pytest.mark.parametrize("text, action, target, group, ports, protocol", VALID_RULES)
def test_parse_rule_valid(
    text: str, action: Action, target: str | None, group: str | None, ports: str, protocol: str
) -> None:
    rule = parse_rule(text)
    assert rule.action is action
    assert rule.target == target
    assert rule.group == group
    assert ",".join(str(port_range) for port_range in rule.ports) == ports
    assert rule.protocol == protocol
    assert rule.direction is Direction.EGRESS


# (text, a fragment the error message must contain besides the quoted text)
INVALID_RULES = [
    ("github.com", "missing '@'"),
    ("permit@github.com", "action 'permit' is not allow or deny"),
    ("allow@", "empty target"),
    ("allow@github.com:icmp", "protocol 'icmp' is not tcp, udp or any"),
    ("allow@github.com:tcp:9000-8000", "has its first port above its last"),
    ("allow@github.com:tcp:0", "port 0 is out of range 1-65535"),
    ("allow@github.com:tcp:70000", "port 70000 is out of range 1-65535"),
    ("allow@github.com:tcp:", "empty port list"),
    ("allow@github.com:tcp:a-b", "'a-b' is not a port or a range"),
    ("allow@github.com:tcp:80-", "'80-' is not a port or a range"),
    ("allow@github.com:tcp:80,,443", "'' is not a port or a range"),
    ("allow@10.0.0.1/8", "host bits are set, the network address is 10.0.0.0/8"),
    ("allow@10.0.0.0/33", "not a valid IPv4 or IPv6 CIDR network"),
    ("allow@10.0.0.256", "not a valid IPv4 or IPv6 address"),
    ("deny@fd00::/8", "IPv6 targets go in brackets"),
    ("deny@[fd00::/8:any", "unbalanced brackets"),
    ("allow@*.com", "a wildcard needs at least two labels"),
    ("allow@a.*.com", "'*' is allowed only as the whole first label"),
    ("allow@*example.com", "'*' is allowed only as the whole first label"),
    ("allow@under_score.com", "label 'under_score' is not 1-63 letters"),
    ("allow@-bad.com", "label '-bad' is not 1-63 letters"),
    ("allow@" + "a" * 64 + ".com", "is not 1-63 letters"),
    ("allow@github.com:tcp:443:1", "too many ':' fields"),
    ("allow@bücher.de", "non-ASCII host name"),
]


@pytest.mark.parametrize("text, fragment", INVALID_RULES)
def test_parse_rule_invalid(text: str, fragment: str) -> None:
    with pytest.raises(InvalidSpecError) as caught:
        parse_rule(text)
    message = str(caught.value)
    assert repr(text) in message
    assert fragment in message
    assert "expected ACTION@TARGET[:PROTO[:PORTS]]" in message


def test_parse_rule_invalid_quotes_long_text_truncated() -> None:
    text = "allow@" + "a" * 300
    with pytest.raises(InvalidSpecError) as caught:
        parse_rule(text)
    assert len(str(caught.value)) < 400
    assert "aaa..." in str(caught.value)


PORT_FORMS = [
    (443, "443"),
    ("443", "443"),
    ("80,443", "80,443"),
    ("8000-9000", "8000-9000"),
    ("80,8000-9000", "80,8000-9000"),
    ([80, 443], "80,443"),
    (["80", "8000-9000"], "80,8000-9000"),
    ("80, 443", "80,443"),
    ("1-65535", "1-65535"),
]


@pytest.mark.parametrize("value, text", PORT_FORMS)
def test_parse_ports_forms(value: object, text: str) -> None:
    ranges = parse_ports(value)  # type: ignore[arg-type]
    assert ",".join(str(port_range) for port_range in ranges) == text


@pytest.mark.parametrize(
    "value", ["9000-8000", "0", "70000", "", " ", "a-b", "80-", "-80", [], 0, 65536, True, ["80,443"], 4.5]
)
def test_parse_ports_invalid(value: object) -> None:
    with pytest.raises(InvalidSpecError):
        parse_ports(value)  # type: ignore[arg-type]


def test_parse_ports_none_is_any() -> None:
    assert parse_ports(None) == ()


def test_port_range_rejects_reversed() -> None:
    with pytest.raises(InvalidSpecError, match="first port is greater"):
        PortRange(9000, 8000)


def test_rule_allow_port_keyword() -> None:
    rule = Rule.allow("github.com", port=443, protocol="tcp")
    assert rule.ports == (PortRange(443, 443),)
    assert rule.protocol == "tcp"


def test_rule_allow_port_and_ports_conflict() -> None:
    with pytest.raises(InvalidSpecError, match="give port or ports, not both"):
        Rule.allow("github.com", port=443, ports="80")


def test_rule_group_name_target_selects_group() -> None:
    rule = Rule.deny("metadata")
    assert rule.group == "metadata"
    assert rule.target is None
    assert rule.kind == "group"


def test_rule_target_and_group_exclusive() -> None:
    with pytest.raises(InvalidSpecError, match="not both"):
        Rule.deny("github.com", group="private")


def test_rule_unknown_group() -> None:
    with pytest.raises(InvalidSpecError, match="expected one of public, private"):
        Rule.deny(group="intranet")


def test_rule_bad_protocol() -> None:
    with pytest.raises(InvalidSpecError, match="'icmp'"):
        Rule.deny("github.com", protocol="icmp")


def test_rule_bad_direction() -> None:
    with pytest.raises(InvalidSpecError, match="expected egress or ingress"):
        Rule.deny("github.com", direction="sideways")


def test_rule_target_with_port() -> None:
    with pytest.raises(InvalidSpecError, match="cannot contain a port"):
        Rule.allow("github.com:443")


def test_rule_host_bits_names_value() -> None:
    with pytest.raises(InvalidSpecError) as caught:
        Rule.deny("10.0.0.1/8")
    assert "'10.0.0.1/8'" in str(caught.value)


@pytest.mark.parametrize(
    "target, kind, canonical",
    [
        ("GitHub.com.", "domain", "github.com"),
        ("*.Example.com", "wildcard", "*.example.com"),
        ("*.co.uk", "wildcard", "*.co.uk"),
        ("10.1.2.3", "address", "10.1.2.3"),
        ("[2001:DB8::1]", "address", "2001:db8::1"),
        ("2001:db8::/32", "network", "2001:db8::/32"),
        ("10.0.0.0/8", "network", "10.0.0.0/8"),
        ("localhost", "domain", "localhost"),
    ],
)
def test_rule_target_kinds(target: str, kind: str, canonical: str) -> None:
    rule = Rule.allow(target)
    assert rule.kind == kind
    assert rule.target == canonical


def test_rule_without_target_is_any() -> None:
    assert Rule.deny().kind == "any"


def test_parse_rule_star_is_any() -> None:
    assert parse_rule("allow@*").kind == "any"


@pytest.mark.parametrize("target", ["*", "*.", "**.example.com"])
def test_rule_bare_star_rejected(target: str) -> None:
    with pytest.raises(InvalidSpecError) as caught:
        Rule.allow(target)
    assert repr(target) in str(caught.value)


def test_rule_describe() -> None:
    rule = Rule.allow("github.com", ports="443", protocol="tcp")
    assert rule.describe() == "allow github.com tcp port 443"


def test_rule_describe_ingress_range() -> None:
    rule = Rule.deny(group="private", ports="1-1024", direction="ingress")
    assert rule.describe() == "deny group private ports 1-1024 (ingress)"


def test_host_name_length_limit() -> None:
    name = ".".join(["a" * 63] * 4)
    with pytest.raises(InvalidSpecError, match="maximum is 253"):
        normalize_host_name(name)


def test_host_name_numeric_last_label() -> None:
    with pytest.raises(InvalidSpecError, match="numeric label"):
        normalize_host_name("host.123")


def test_policy_accepts_list_and_strings() -> None:
    policy = NetworkPolicy(rules=[Rule.deny("a.test"), "allow@b.test"])
    assert isinstance(policy.rules, tuple)
    assert policy.rules[1] == Rule.allow("b.test")


def test_policy_public_only_rules() -> None:
    policy = NetworkPolicy.public_only()
    assert policy.default_egress is Action.ALLOW
    assert policy.default_ingress is Action.ALLOW
    assert [rule.group for rule in policy.rules] == ["private", "loopback", "link-local", "metadata", "multicast"]
    assert all(rule.action is Action.DENY for rule in policy.rules)


def test_network_presets() -> None:
    assert Network().policy == NetworkPolicy.public_only()
    assert Network.public_only() == Network()
    assert Network.none().enabled is False
    assert Network.allow_all().policy.rules == ()
    assert Network.allow_all().policy.default_egress is Action.ALLOW


@pytest.mark.parametrize(
    "text, name, port, address, target_port",
    [
        ("github.com:443:127.0.0.1:8443", "github.com", 443, "127.0.0.1", 8443),
        ("GitHub.com::127.0.0.1:8443", "github.com", None, "127.0.0.1", 8443),
        ("github.com:127.0.0.1:8443", "github.com", None, "127.0.0.1", 8443),
        ("github.com:443:[::1]:8443", "github.com", 443, "::1", 8443),
    ],
)
def test_connect_to_parse(text: str, name: str, port: int | None, address: str, target_port: int) -> None:
    entry = ConnectTo.parse(text)
    assert entry == ConnectTo(name=name, port=port, address=address, target_port=target_port)


@pytest.mark.parametrize(
    "text, fragment",
    [
        (":443:127.0.0.1:8443", "the name is empty"),
        ("::127.0.0.1:8443", "the name is empty"),
        ("github.com:443:localhost:8443", "not a valid IPv4 or IPv6 address"),
        ("github.com:443:127.0.0.1:0", "out of range"),
        ("github.com:443:127.0.0.1", "port '127.0.0.1': expected a port number"),
        ("github.com", "expected NAME[:PORT]:ADDRESS:PORT"),
        ("github.com:443:::1:8443", "expected NAME[:PORT]:ADDRESS:PORT"),
    ],
)
def test_connect_to_parse_invalid(text: str, fragment: str) -> None:
    with pytest.raises(InvalidSpecError) as caught:
        ConnectTo.parse(text)
    assert repr(text) in str(caught.value)
    assert fragment in str(caught.value)


def test_connect_to_str_round_trip() -> None:
    entry = ConnectTo.parse("github.com::[::1]:8443")
    assert str(entry) == "github.com::[::1]:8443"
    assert ConnectTo.parse(str(entry)) == entry


@pytest.mark.parametrize(
    "text, expected",
    [
        ("8080:80", PortPublish(8080, 80)),
        ("8080:80/udp", PortPublish(8080, 80, "udp")),
        ("127.0.0.1:8080:80", PortPublish(8080, 80, "tcp", "127.0.0.1")),
        ("[::1]:8080:80/tcp", PortPublish(8080, 80, "tcp", "::1")),
    ],
)
def test_port_publish_parse(text: str, expected: PortPublish) -> None:
    assert PortPublish.parse(text) == expected


@pytest.mark.parametrize("text", ["8080", "8080:80/sctp", "8080:0", "host:8080:80", "1:2:3:4"])
def test_port_publish_parse_invalid(text: str) -> None:
    with pytest.raises(InvalidSpecError) as caught:
        PortPublish.parse(text)
    assert repr(text) in str(caught.value)


def test_network_ports_from_dict_and_strings() -> None:
    network = Network(ports={8080: 80})
    assert network.ports == (PortPublish(8080, 80),)
    assert Network(ports=["9000:90/udp"]).ports == (PortPublish(9000, 90, "udp"),)


def test_network_connect_to_from_strings() -> None:
    network = Network(connect_to=["github.com:443:127.0.0.1:8443"])
    assert network.connect_to == (ConnectTo("github.com", 443, "127.0.0.1", 8443),)


def test_network_hosts_normalized() -> None:
    network = Network(hosts={"Pypi.Test": "127.0.0.1"}, add_hosts={"DB.internal": "10.1.2.3"})
    assert dict(network.hosts) == {"pypi.test": ("127.0.0.1",)}
    assert dict(network.add_hosts) == {"db.internal": "10.1.2.3"}


def test_network_hosts_read_only() -> None:
    network = Network(hosts={"pypi.test": ["127.0.0.1"]})
    with pytest.raises(TypeError):
        network.hosts["evil.test"] = ("127.0.0.1",)  # type: ignore[index]


def test_network_hosts_bad_address() -> None:
    with pytest.raises(InvalidSpecError, match="'not-an-ip'"):
        Network(hosts={"pypi.test": ["not-an-ip"]})


def test_network_is_hashable() -> None:
    assert hash(Network(hosts={"a.test": "127.0.0.1"})) == hash(Network(hosts={"a.test": "127.0.0.1"}))


def _full_network() -> Network:
    policy = NetworkPolicy(
        default_egress=Action.DENY,
        default_ingress=Action.ALLOW,
        rules=(
            Rule.allow("github.com", ports="443", protocol="tcp"),
            Rule.allow("*.example.com", ports=[80, "8000-9000"]),
            Rule.deny("10.0.0.0/8"),
            Rule.deny("fd00::1"),
            Rule.deny(group="metadata"),
            Rule.deny(protocol="udp"),
            Rule.allow(group="private", direction="ingress"),
        ),
    )
    return Network(
        enabled=True,
        policy=policy,
        ports=(PortPublish(8080, 80), PortPublish(5353, 53, "udp", "::1")),
        connect_to=(ConnectTo("github.com", 443, "127.0.0.1", 8443), ConnectTo("pypi.test", None, "::1", 8080)),
        hosts={"canary.test": ("127.0.0.1", "::1")},
        add_hosts={"db.test": "127.0.0.2"},
    )


def test_network_json_round_trip() -> None:
    network = _full_network()
    text = json.dumps(network.to_json())
    assert Network.from_json(json.loads(text)) == network


def test_network_json_defaults() -> None:
    assert Network.from_json({}) == Network()


def test_network_json_disabled() -> None:
    assert Network.from_json(Network.none().to_json()) == Network.none()


def test_network_json_unknown_key() -> None:
    with pytest.raises(InvalidSpecError, match="'proxy'"):
        Network.from_json({"proxy": "x"})


def test_network_json_unknown_rule_key() -> None:
    data = {"policy": {"rules": [{"action": "allow", "host": "github.com"}]}}
    with pytest.raises(InvalidSpecError, match="'host'"):
        Network.from_json(data)


def test_network_json_bad_action() -> None:
    data = {"policy": {"default_egress": "block"}}
    with pytest.raises(InvalidSpecError, match="'block'"):
        Network.from_json(data)


def test_network_json_string_entries() -> None:
    data = {"ports": ["8080:80"], "connect_to": ["github.com:443:127.0.0.1:8443"]}
    network = Network.from_json(data)
    assert network.ports == (PortPublish(8080, 80),)
    assert network.connect_to == (ConnectTo("github.com", 443, "127.0.0.1", 8443),)


def test_groups_constant() -> None:
    assert GROUPS == ("public", "private", "loopback", "link-local", "metadata", "multicast")
