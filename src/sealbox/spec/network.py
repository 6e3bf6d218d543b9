"""Network specification of a sandbox: policy rules, published ports and name maps.

Everything here is a frozen value with validation and a JSON round trip, and
nothing performs I/O. Invalid input raises InvalidSpecError, whose message
quotes the offending text (truncated) and states the expected form.

A rule's destination is one of:

- a host name (``github.com``), matched exactly and case-insensitively;
- a wildcard ``*.example.com``, matching subdomains at any depth but not
  ``example.com`` itself;
- an IP address or a CIDR network (IPv4 or IPv6, host bits must be zero);
- a group of addresses, one of GROUPS;
- nothing, which matches every destination.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Any, Literal

from sealbox.errors import InvalidSpecError

__all__ = [
    "GROUPS",
    "Action",
    "ConnectTo",
    "Direction",
    "Network",
    "NetworkPolicy",
    "PortPublish",
    "PortRange",
    "Rule",
    "normalize_host_name",
    "parse_ports",
    "parse_rule",
]


class Action(str, Enum):
    ALLOW = "allow"
    DENY = "deny"


class Direction(str, Enum):
    EGRESS = "egress"
    INGRESS = "ingress"


GROUPS = ("public", "private", "loopback", "link-local", "metadata", "multicast")
PROTOCOLS = ("tcp", "udp", "any")

RULE_FORM = "ACTION@TARGET[:PROTO[:PORTS]], e.g. allow@github.com:tcp:443 or deny@[fd00::/8]:any:1-1024"
CONNECT_TO_FORM = "NAME[:PORT]:ADDRESS:PORT, e.g. github.com:443:127.0.0.1:8443 or github.com::[::1]:8443"
PORT_PUBLISH_FORM = "[HOST_ADDRESS:]HOST_PORT:SANDBOX_PORT[/tcp|/udp], e.g. 8080:80 or 127.0.0.1:8080:80/udp"

_MAX_QUOTED = 100
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
_PORT_ITEM = re.compile(r"([0-9]+)(?:-([0-9]+))?\Z")


def _clip(text: str) -> str:
    """Truncate user text for quoting in an error message."""
    if len(text) <= _MAX_QUOTED:
        return text
    return text[: _MAX_QUOTED - 3] + "..."


# ---------------------------------------------------------------------------
# Host names, addresses and ports


def normalize_host_name(text: str, field_name: str = "host name") -> str:
    """Validate a DNS host name and return it lower-case without a trailing dot.

    Labels are 1-63 letters, digits or hyphens and do not start or end with a
    hyphen. The whole name is at most 253 characters. The last label must not
    be all digits, so a mistyped IPv4 address such as 10.0.0.256 is rejected.
    """
    if not isinstance(text, str):
        raise InvalidSpecError(field_name, text, "expected a string")
    name = text.lower()
    if name.endswith("."):
        name = name[:-1]
    if not name:
        raise InvalidSpecError(field_name, text, "empty host name")
    if not name.isascii():
        raise InvalidSpecError(
            field_name, _clip(text), "non-ASCII host name, write it in its ASCII form (xn--...)"
        )
    if len(name) > 253:
        raise InvalidSpecError(field_name, _clip(text), f"host name is {len(name)} characters long, the maximum is 253")
    labels = name.split(".")
    for label in labels:
        if not _LABEL.match(label):
            raise InvalidSpecError(
                field_name,
                _clip(text),
                f"label {_clip(label)!r} is not 1-63 letters, digits or inner hyphens",
            )
    if labels[-1].isdigit():
        raise InvalidSpecError(
            field_name, _clip(text), "not a valid IP address, and a host name cannot end in a numeric label"
        )
    return name


def _parse_address(text: str, field_name: str) -> str:
    """Validate an IP address literal (IPv6 optionally in brackets) and return its canonical text."""
    if not isinstance(text, str):
        raise InvalidSpecError(field_name, text, "expected an IP address string")
    bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    if "%" in bare:
        raise InvalidSpecError(field_name, _clip(text), "IPv6 zone indexes (%...) are not supported")
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        raise InvalidSpecError(field_name, _clip(text), "not a valid IPv4 or IPv6 address") from None


def _parse_port(value: object, field_name: str) -> int:
    """Validate one port number, given as an int or a decimal string."""
    if isinstance(value, bool):
        raise InvalidSpecError(field_name, value, "expected a port number 1-65535")
    if isinstance(value, str):
        if not value.isascii() or not value.isdigit():
            raise InvalidSpecError(field_name, _clip(value), "expected a port number 1-65535")
        number = int(value)
    elif isinstance(value, int):
        number = value
    else:
        raise InvalidSpecError(field_name, value, "expected a port number 1-65535")
    if not 1 <= number <= 65535:
        raise InvalidSpecError(field_name, value, "port is out of range 1-65535")
    return number


@dataclass(frozen=True)
class PortRange:
    """Inclusive range of TCP or UDP ports."""

    first: int
    last: int

    def __post_init__(self) -> None:
        for number in (self.first, self.last):
            if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= 65535:
                raise InvalidSpecError("port range", f"{self.first}-{self.last}", "ports must be 1-65535")
        if self.first > self.last:
            raise InvalidSpecError(
                "port range", f"{self.first}-{self.last}", "the first port is greater than the last"
            )

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.first <= port <= self.last

    def __str__(self) -> str:
        if self.first == self.last:
            return str(self.first)
        return f"{self.first}-{self.last}"


def _parse_port_item(item: str, whole: str) -> PortRange:
    match = _PORT_ITEM.match(item.strip())
    if match is None:
        raise InvalidSpecError(
            "ports", _clip(whole), f"{_clip(item)!r} is not a port or a range FIRST-LAST such as 8000-9000"
        )
    first = int(match.group(1))
    last = int(match.group(2)) if match.group(2) is not None else first
    for number in (first, last):
        if not 1 <= number <= 65535:
            raise InvalidSpecError("ports", _clip(whole), f"port {number} is out of range 1-65535")
    if first > last:
        reason = f"range {_clip(item.strip())!r} has its first port above its last"
        raise InvalidSpecError("ports", _clip(whole), reason)
    return PortRange(first, last)


def parse_ports(value: str | int | PortRange | Iterable[int | str | PortRange] | None) -> tuple[PortRange, ...]:
    """Parse a port specification: 443, "443", "80,443", "8000-9000", "80,8000-9000" or [80, 443].

    None returns () and means any port. Every other empty or malformed value is
    an error, so a typo never widens a rule to every port.
    """
    if value is None:
        return ()
    if isinstance(value, PortRange):
        return (value,)
    if isinstance(value, bool):
        raise InvalidSpecError("ports", value, "expected a port, a range FIRST-LAST or a list of them")
    if isinstance(value, int):
        number = _parse_port(value, "ports")
        return (PortRange(number, number),)
    if isinstance(value, str):
        if not value.strip():
            raise InvalidSpecError("ports", value, "empty port list (omit the ports to match any port)")
        return tuple(_parse_port_item(item, value) for item in value.split(","))
    if isinstance(value, Iterable):
        ranges: list[PortRange] = []
        for item in value:
            if isinstance(item, str) and "," in item:
                raise InvalidSpecError("ports", _clip(item), "a list item must be one port or one range")
            ranges.extend(parse_ports(item))
        if not ranges:
            raise InvalidSpecError("ports", list(value), "empty port list (omit the ports to match any port)")
        return tuple(ranges)
    raise InvalidSpecError("ports", value, "expected a port, a range FIRST-LAST or a list of them")


def _ports_text(ports: Sequence[PortRange]) -> str:
    return ",".join(str(port_range) for port_range in ports)


# ---------------------------------------------------------------------------
# Rules


def _parse_target(text: str) -> str:
    """Validate a rule target and return its canonical text.

    IP addresses and networks are returned in their canonical form without
    IPv6 brackets. Host names and wildcards are lower-cased.
    """
    if not isinstance(text, str):
        raise InvalidSpecError("rule target", text, "expected a string")
    if not text:
        raise InvalidSpecError("rule target", text, "empty target (omit the target to match any destination)")
    bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text

    if "/" in bare:
        if "%" in bare:
            raise InvalidSpecError("rule target", _clip(text), "IPv6 zone indexes (%...) are not supported")
        try:
            return str(ipaddress.ip_network(bare, strict=True))
        except ValueError as error:
            if "has host bits set" in str(error):
                fixed = ipaddress.ip_network(bare, strict=False)
                raise InvalidSpecError(
                    "rule target", _clip(text), f"host bits are set, the network address is {fixed}"
                ) from None
            raise InvalidSpecError("rule target", _clip(text), "not a valid IPv4 or IPv6 CIDR network") from None

    if bare.count(":") == 1:
        raise InvalidSpecError(
            "rule target", _clip(text), "a target cannot contain a port, so give the ports separately"
        )
    if ":" in bare or _looks_like_ipv4(bare):
        return _parse_address(text, "rule target")

    if "*" in bare:
        return _parse_wildcard(bare)
    return normalize_host_name(bare, "rule target")


def _looks_like_ipv4(text: str) -> bool:
    return bool(text) and all(part.isdigit() for part in text.split("."))


def _parse_wildcard(text: str) -> str:
    if not text.startswith("*.") or "*" in text[2:]:
        raise InvalidSpecError(
            "rule target", _clip(text), "'*' is allowed only as the whole first label, as in *.example.com"
        )
    try:
        suffix = normalize_host_name(text[2:], "rule target")
    except InvalidSpecError as error:
        raise InvalidSpecError("rule target", _clip(text), f"invalid suffix: {error.reason}") from None
    if "." not in suffix:
        raise InvalidSpecError(
            "rule target", _clip(text), "a wildcard needs at least two labels after '*.', as in *.example.com"
        )
    return "*." + suffix


def _target_kind(target: str) -> str:
    """Return the kind of a canonical target: domain, wildcard, address or network."""
    if target.startswith("*."):
        return "wildcard"
    if "/" in target:
        return "network"
    if ":" in target or _looks_like_ipv4(target):
        return "address"
    return "domain"


def _coerce_enum(enum_type: type[Enum], value: object, field_name: str) -> Any:
    if isinstance(value, enum_type):
        return value
    if isinstance(value, str):
        try:
            return enum_type(value.lower())
        except ValueError:
            pass
    expected = " or ".join(member.value for member in enum_type)
    raise InvalidSpecError(field_name, value, f"expected {expected}")


@dataclass(frozen=True)
class Rule:
    """One network policy rule: an action for connections to a destination.

    A rule matches a connection when its direction, protocol and ports match and
    its destination (target or group) matches. target=None together with
    group=None matches every destination. ports=() matches every port.
    """

    action: Action
    target: str | None = None
    group: str | None = None
    ports: tuple[PortRange, ...] = ()
    protocol: Literal["tcp", "udp", "any"] = "any"
    direction: Direction = Direction.EGRESS

    def __post_init__(self) -> None:
        object.__setattr__(self, "action", _coerce_enum(Action, self.action, "rule action"))
        object.__setattr__(self, "direction", _coerce_enum(Direction, self.direction, "rule direction"))

        if self.target is not None and self.group is not None:
            raise InvalidSpecError(
                "rule", f"target={self.target!r} group={self.group!r}", "give a target or a group, not both"
            )
        if self.target is not None:
            object.__setattr__(self, "target", _parse_target(self.target))
        if self.group is not None and self.group not in GROUPS:
            raise InvalidSpecError("rule group", self.group, f"expected one of {', '.join(GROUPS)}")

        protocol = self.protocol.lower() if isinstance(self.protocol, str) else self.protocol
        if protocol not in PROTOCOLS:
            raise InvalidSpecError("rule protocol", self.protocol, "expected tcp, udp or any")
        object.__setattr__(self, "protocol", protocol)

        ports = self.ports
        if not (isinstance(ports, tuple) and all(isinstance(item, PortRange) for item in ports)):
            ports = parse_ports(ports)
        object.__setattr__(self, "ports", ports)

    @classmethod
    def allow(
        cls,
        target: str | None = None,
        *,
        group: str | None = None,
        port: int | None = None,
        ports: str | int | Sequence[int | str] | None = None,
        protocol: str = "any",
        direction: Direction | str = Direction.EGRESS,
    ) -> Rule:
        """Build an allow rule. A target equal to a group name selects that group."""
        return cls._build(Action.ALLOW, target, group, port, ports, protocol, direction)

    @classmethod
    def deny(
        cls,
        target: str | None = None,
        *,
        group: str | None = None,
        port: int | None = None,
        ports: str | int | Sequence[int | str] | None = None,
        protocol: str = "any",
        direction: Direction | str = Direction.EGRESS,
    ) -> Rule:
        """Build a deny rule. A target equal to a group name selects that group."""
        return cls._build(Action.DENY, target, group, port, ports, protocol, direction)

    @classmethod
    def _build(
        cls,
        action: Action,
        target: str | None,
        group: str | None,
        port: int | None,
        ports: str | int | Sequence[int | str] | None,
        protocol: str,
        direction: Direction | str,
    ) -> Rule:
        if port is not None and ports is not None:
            raise InvalidSpecError("rule ports", f"port={port!r} ports={ports!r}", "give port or ports, not both")
        # A host literally named like a group ("private") is written with a trailing dot.
        if target in GROUPS and group is None:
            target, group = None, target
        port_ranges = parse_ports(port if port is not None else ports)
        return cls(
            action=action,
            target=target,
            group=group,
            ports=port_ranges,
            protocol=protocol,  # type: ignore[arg-type]
            direction=direction,  # type: ignore[arg-type]
        )

    @property
    def kind(self) -> str:
        """Kind of destination: any, group, domain, wildcard, address or network."""
        if self.group is not None:
            return "group"
        if self.target is None:
            return "any"
        return _target_kind(self.target)

    def describe(self) -> str:
        """Return a short human-readable form, e.g. "deny group metadata" or "allow github.com tcp port 443"."""
        kind = self.kind
        if kind == "group":
            destination = f"group {self.group}"
        elif kind == "any":
            destination = "any destination"
        else:
            destination = str(self.target)
        parts = [self.action.value, destination]
        if self.protocol != "any":
            parts.append(self.protocol)
        if self.ports:
            noun = "port" if len(self.ports) == 1 and self.ports[0].first == self.ports[0].last else "ports"
            parts.append(f"{noun} {_ports_text(self.ports)}")
        if self.direction is Direction.INGRESS:
            parts.append("(ingress)")
        return " ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.action.value,
            "target": self.target,
            "group": self.group,
            "ports": [str(port_range) for port_range in self.ports],
            "protocol": self.protocol,
            "direction": self.direction.value,
        }

    @classmethod
    def from_json(cls, data: object) -> Rule:
        fields = _json_object(data, "rule", ("action", "target", "group", "ports", "protocol", "direction"))
        if "action" not in fields:
            raise InvalidSpecError("rule", data, "missing key 'action'")
        ports = fields.get("ports", [])
        if not isinstance(ports, list):
            raise InvalidSpecError("rule ports", ports, "expected a list of ports or ranges")
        return cls(
            action=fields["action"],
            target=fields.get("target"),
            group=fields.get("group"),
            ports=parse_ports(ports) if ports else (),
            protocol=fields.get("protocol", "any"),
            direction=fields.get("direction", Direction.EGRESS),
        )


def _split_bracketed(text: str) -> list[str]:
    """Split on ':' except inside [...], so that IPv6 literals stay whole."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        if char == ":" and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def parse_rule(text: str) -> Rule:
    """Parse the command-line rule form ACTION@TARGET[:PROTO[:PORTS]].

    TARGET is a host name, a *.suffix wildcard, an IP address, a CIDR network,
    a group name, or '*' for any destination. IPv6 addresses and networks go in
    brackets. PROTO is tcp, udp or any. Examples: "allow@github.com:tcp:443",
    "deny@metadata", "allow@10.1.2.0/24:tcp:8000-9000", "deny@[fd00::/8]:any:1-1024".
    """
    if not isinstance(text, str):
        raise InvalidSpecError("rule", text, f"expected a string of the form {RULE_FORM}")

    action_text, at, rest = text.partition("@")
    if not at:
        raise InvalidSpecError("rule", _clip(text), f"missing '@' (expected {RULE_FORM})")
    if action_text.lower() not in ("allow", "deny"):
        raise InvalidSpecError(
            "rule", _clip(text), f"action {_clip(action_text)!r} is not allow or deny (expected {RULE_FORM})"
        )
    if rest.count("[") != rest.count("]") or rest.count("[") > 1:
        raise InvalidSpecError("rule", _clip(text), f"unbalanced brackets (expected {RULE_FORM})")

    if not rest.startswith("[") and "::" in rest:
        raise InvalidSpecError(
            "rule", _clip(text), f"IPv6 targets go in brackets, as in deny@[fd00::/8] (expected {RULE_FORM})"
        )
    parts = _split_bracketed(rest)
    if len(parts) > 3:
        raise InvalidSpecError(
            "rule", _clip(text), f"too many ':' fields, and IPv6 targets go in brackets (expected {RULE_FORM})"
        )
    target_text = parts[0]
    if not target_text:
        raise InvalidSpecError("rule", _clip(text), f"empty target (expected {RULE_FORM})")
    if target_text.startswith("[") != target_text.endswith("]"):
        raise InvalidSpecError("rule", _clip(text), f"misplaced brackets (expected {RULE_FORM})")
    protocol = parts[1].lower() if len(parts) > 1 else "any"
    if protocol not in PROTOCOLS:
        raise InvalidSpecError(
            "rule", _clip(text), f"protocol {_clip(parts[1])!r} is not tcp, udp or any (expected {RULE_FORM})"
        )
    ports: str | None = parts[2] if len(parts) > 2 else None

    target: str | None = None if target_text == "*" else target_text
    build = Rule.allow if action_text.lower() == "allow" else Rule.deny
    try:
        return build(target, ports=ports, protocol=protocol)
    except InvalidSpecError as error:
        raise InvalidSpecError(
            "rule", _clip(text), f"{error.field} {error.value!r}: {error.reason} (expected {RULE_FORM})"
        ) from None


# ---------------------------------------------------------------------------
# Policy


@dataclass(frozen=True)
class NetworkPolicy:
    """Default action per direction and an ordered rule list, in which the first matching rule wins."""

    default_egress: Action = Action.ALLOW
    default_ingress: Action = Action.ALLOW
    rules: tuple[Rule, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "default_egress", _coerce_enum(Action, self.default_egress, "default_egress"))
        object.__setattr__(self, "default_ingress", _coerce_enum(Action, self.default_ingress, "default_ingress"))
        if isinstance(self.rules, (str, Rule)) or not isinstance(self.rules, Iterable):
            raise InvalidSpecError("rules", self.rules, "expected a list of rules")
        rules: list[Rule] = []
        for rule in self.rules:
            if isinstance(rule, str):
                rule = parse_rule(rule)
            if not isinstance(rule, Rule):
                raise InvalidSpecError("rules", rule, "expected a Rule or a rule string such as allow@github.com")
            rules.append(rule)
        object.__setattr__(self, "rules", tuple(rules))

    @classmethod
    def public_only(cls) -> NetworkPolicy:
        """Allow public addresses and deny private, loopback, link-local, metadata and multicast ones.

        NOTE: reserved addresses that belong to no group (documentation,
        benchmarking and 240.0.0.0/4 ranges) are allowed by this policy.
        """
        rules = tuple(Rule.deny(group=group) for group in GROUPS if group != "public")
        return cls(default_egress=Action.ALLOW, default_ingress=Action.ALLOW, rules=rules)

    @classmethod
    def allow_all(cls) -> NetworkPolicy:
        return cls(default_egress=Action.ALLOW, default_ingress=Action.ALLOW, rules=())

    def to_json(self) -> dict[str, Any]:
        return {
            "default_egress": self.default_egress.value,
            "default_ingress": self.default_ingress.value,
            "rules": [rule.to_json() for rule in self.rules],
        }

    @classmethod
    def from_json(cls, data: object) -> NetworkPolicy:
        fields = _json_object(data, "policy", ("default_egress", "default_ingress", "rules"))
        rules = fields.get("rules", [])
        if not isinstance(rules, list):
            raise InvalidSpecError("rules", rules, "expected a list of rules")
        return cls(
            default_egress=fields.get("default_egress", Action.ALLOW),
            default_ingress=fields.get("default_ingress", Action.ALLOW),
            rules=tuple(Rule.from_json(rule) for rule in rules),
        )


# ---------------------------------------------------------------------------
# Name maps and published ports


@dataclass(frozen=True)
class ConnectTo:
    """Static resolver entry with curl --connect-to semantics.

    Connections to `name` (on `port`, or on any port when port is None) go to
    `address`:`target_port`. The operator wrote the entry, so the gateway
    checks policy against the name, not against the address.
    """

    name: str
    port: int | None
    address: str
    target_port: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", normalize_host_name(self.name, "connect_to name"))
        if self.port is not None:
            object.__setattr__(self, "port", _parse_port(self.port, "connect_to port"))
        object.__setattr__(self, "address", _parse_address(self.address, "connect_to address"))
        object.__setattr__(self, "target_port", _parse_port(self.target_port, "connect_to port"))

    @classmethod
    def parse(cls, text: str) -> ConnectTo:
        """Parse NAME[:PORT]:ADDRESS:PORT, where ADDRESS is an IP literal (IPv6 in brackets)."""
        if not isinstance(text, str):
            raise InvalidSpecError("connect_to", text, f"expected a string of the form {CONNECT_TO_FORM}")
        parts = _split_bracketed(text)
        if len(parts) == 3:
            name, port_text, address, target_port = parts[0], "", parts[1], parts[2]
        elif len(parts) == 4:
            name, port_text, address, target_port = parts
        else:
            raise InvalidSpecError("connect_to", _clip(text), f"expected {CONNECT_TO_FORM}")
        if not name:
            raise InvalidSpecError("connect_to", _clip(text), f"the name is empty (expected {CONNECT_TO_FORM})")
        if address.startswith("[") != address.endswith("]") or ("[" in name) or ("]" in name):
            raise InvalidSpecError("connect_to", _clip(text), f"misplaced brackets (expected {CONNECT_TO_FORM})")
        try:
            return cls(
                name=name,
                port=_parse_port(port_text, "port") if port_text else None,
                address=address,
                target_port=_parse_port(target_port, "port"),
            )
        except InvalidSpecError as error:
            raise InvalidSpecError(
                "connect_to", _clip(text), f"{error.field} {error.value!r}: {error.reason} (expected {CONNECT_TO_FORM})"
            ) from None

    def __str__(self) -> str:
        port = "" if self.port is None else str(self.port)
        address = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.name}:{port}:{address}:{self.target_port}"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "port": self.port, "address": self.address, "target_port": self.target_port}

    @classmethod
    def from_json(cls, data: object) -> ConnectTo:
        if isinstance(data, str):
            return cls.parse(data)
        fields = _json_object(data, "connect_to", ("name", "port", "address", "target_port"))
        for key in ("name", "address", "target_port"):
            if key not in fields:
                raise InvalidSpecError("connect_to", data, f"missing key {key!r}")
        return cls(
            name=fields["name"], port=fields.get("port"), address=fields["address"], target_port=fields["target_port"]
        )


@dataclass(frozen=True)
class PortPublish:
    """Port published from the host into the sandbox, like `docker run -p`."""

    host_port: int
    sandbox_port: int
    protocol: Literal["tcp", "udp"] = "tcp"
    host_address: str = "127.0.0.1"

    def __post_init__(self) -> None:
        object.__setattr__(self, "host_port", _parse_port(self.host_port, "published host port"))
        object.__setattr__(self, "sandbox_port", _parse_port(self.sandbox_port, "published sandbox port"))
        protocol = self.protocol.lower() if isinstance(self.protocol, str) else self.protocol
        if protocol not in ("tcp", "udp"):
            raise InvalidSpecError("published port protocol", self.protocol, "expected tcp or udp")
        object.__setattr__(self, "protocol", protocol)
        object.__setattr__(self, "host_address", _parse_address(self.host_address, "published host address"))

    @classmethod
    def parse(cls, text: str) -> PortPublish:
        """Parse [HOST_ADDRESS:]HOST_PORT:SANDBOX_PORT[/tcp|/udp]."""
        if not isinstance(text, str):
            raise InvalidSpecError("published port", text, f"expected a string of the form {PORT_PUBLISH_FORM}")
        body, slash, protocol = text.partition("/")
        if slash and protocol.lower() not in ("tcp", "udp"):
            reason = f"protocol {_clip(protocol)!r} is not tcp or udp (expected {PORT_PUBLISH_FORM})"
            raise InvalidSpecError("published port", _clip(text), reason)
        parts = _split_bracketed(body)
        if len(parts) == 2:
            address, host_port, sandbox_port = "127.0.0.1", parts[0], parts[1]
        elif len(parts) == 3:
            address, host_port, sandbox_port = parts
        else:
            raise InvalidSpecError("published port", _clip(text), f"expected {PORT_PUBLISH_FORM}")
        try:
            return cls(
                host_port=_parse_port(host_port, "port"),
                sandbox_port=_parse_port(sandbox_port, "port"),
                protocol=(protocol.lower() if slash else "tcp"),  # type: ignore[arg-type]
                host_address=address,
            )
        except InvalidSpecError as error:
            reason = f"{error.field} {error.value!r}: {error.reason} (expected {PORT_PUBLISH_FORM})"
            raise InvalidSpecError("published port", _clip(text), reason) from None

    def to_json(self) -> dict[str, Any]:
        return {
            "host_port": self.host_port,
            "sandbox_port": self.sandbox_port,
            "protocol": self.protocol,
            "host_address": self.host_address,
        }

    @classmethod
    def from_json(cls, data: object) -> PortPublish:
        if isinstance(data, str):
            return cls.parse(data)
        fields = _json_object(data, "published port", ("host_port", "sandbox_port", "protocol", "host_address"))
        for key in ("host_port", "sandbox_port"):
            if key not in fields:
                raise InvalidSpecError("published port", data, f"missing key {key!r}")
        return cls(
            host_port=fields["host_port"],
            sandbox_port=fields["sandbox_port"],
            protocol=fields.get("protocol", "tcp"),
            host_address=fields.get("host_address", "127.0.0.1"),
        )


# ---------------------------------------------------------------------------
# Network


def _coerce_ports(value: object) -> tuple[PortPublish, ...]:
    if isinstance(value, Mapping):
        return tuple(PortPublish(host_port=host, sandbox_port=sandbox) for host, sandbox in value.items())
    if isinstance(value, (str, PortPublish)):
        value = (value,)
    if not isinstance(value, Iterable):
        raise InvalidSpecError("ports", value, "expected a list of published ports or a {host_port: sandbox_port} map")
    published: list[PortPublish] = []
    for item in value:
        if isinstance(item, str):
            item = PortPublish.parse(item)
        if not isinstance(item, PortPublish):
            raise InvalidSpecError("ports", item, f"expected a PortPublish or a string of the form {PORT_PUBLISH_FORM}")
        published.append(item)
    return tuple(published)


def _coerce_connect_to(value: object) -> tuple[ConnectTo, ...]:
    if isinstance(value, (str, ConnectTo)):
        value = (value,)
    if not isinstance(value, Iterable):
        raise InvalidSpecError("connect_to", value, "expected a list of connect_to entries")
    entries: list[ConnectTo] = []
    for item in value:
        if isinstance(item, str):
            item = ConnectTo.parse(item)
        if not isinstance(item, ConnectTo):
            reason = f"expected a ConnectTo or a string of the form {CONNECT_TO_FORM}"
            raise InvalidSpecError("connect_to", item, reason)
        entries.append(item)
    return tuple(entries)


def _coerce_hosts(value: object) -> Mapping[str, tuple[str, ...]]:
    if not isinstance(value, Mapping):
        raise InvalidSpecError("hosts", value, "expected a map of host name to addresses")
    hosts: dict[str, tuple[str, ...]] = {}
    for name, addresses in value.items():
        key = normalize_host_name(name, "hosts name")
        if isinstance(addresses, str):
            addresses = (addresses,)
        if not isinstance(addresses, Iterable):
            raise InvalidSpecError("hosts addresses", addresses, f"expected a list of IP addresses for {key}")
        parsed = tuple(_parse_address(address, "hosts address") for address in addresses)
        if not parsed:
            raise InvalidSpecError("hosts addresses", [], f"empty address list for {key}")
        hosts[key] = parsed
    return MappingProxyType(hosts)


def _coerce_add_hosts(value: object) -> Mapping[str, str]:
    if not isinstance(value, Mapping):
        raise InvalidSpecError("add_hosts", value, "expected a map of host name to IP address")
    add_hosts = {
        normalize_host_name(name, "add_hosts name"): _parse_address(address, "add_hosts address")
        for name, address in value.items()
    }
    return MappingProxyType(add_hosts)


@dataclass(frozen=True)
class Network:
    """Network settings of a sandbox.

    `hosts` and `connect_to` are trusted maps for the gateway's own resolver.
    `add_hosts` makes names resolve inside the sandbox to literal addresses,
    like `docker run --add-host NAME:IP`.
    """

    enabled: bool = True
    policy: NetworkPolicy = field(default_factory=NetworkPolicy.public_only)
    ports: tuple[PortPublish, ...] = ()
    connect_to: tuple[ConnectTo, ...] = ()
    # The maps are read-only views. They take part in equality but not in the hash.
    hosts: Mapping[str, tuple[str, ...]] = field(default_factory=dict, hash=False)
    add_hosts: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise InvalidSpecError("enabled", self.enabled, "expected true or false")
        if not isinstance(self.policy, NetworkPolicy):
            raise InvalidSpecError("policy", self.policy, "expected a NetworkPolicy")
        object.__setattr__(self, "ports", _coerce_ports(self.ports))
        object.__setattr__(self, "connect_to", _coerce_connect_to(self.connect_to))
        object.__setattr__(self, "hosts", _coerce_hosts(self.hosts))
        object.__setattr__(self, "add_hosts", _coerce_add_hosts(self.add_hosts))

    @classmethod
    def none(cls) -> Network:
        """No network at all."""
        return cls(enabled=False)

    @classmethod
    def public_only(cls) -> Network:
        """Public addresses allowed, private, loopback, link-local, metadata and multicast denied."""
        return cls(policy=NetworkPolicy.public_only())

    @classmethod
    def allow_all(cls) -> Network:
        return cls(policy=NetworkPolicy.allow_all())

    def to_json(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "policy": self.policy.to_json(),
            "ports": [published.to_json() for published in self.ports],
            "connect_to": [entry.to_json() for entry in self.connect_to],
            "hosts": {name: list(addresses) for name, addresses in self.hosts.items()},
            "add_hosts": dict(self.add_hosts),
        }

    @classmethod
    def from_json(cls, data: object) -> Network:
        fields = _json_object(data, "network", ("enabled", "policy", "ports", "connect_to", "hosts", "add_hosts"))
        policy = NetworkPolicy.from_json(fields["policy"]) if "policy" in fields else NetworkPolicy.public_only()
        ports = fields.get("ports", [])
        connect_to = fields.get("connect_to", [])
        for key, value in (("ports", ports), ("connect_to", connect_to)):
            if not isinstance(value, list):
                raise InvalidSpecError(key, value, "expected a list")
        return cls(
            enabled=fields.get("enabled", True),
            policy=policy,
            ports=tuple(PortPublish.from_json(item) for item in ports),
            connect_to=tuple(ConnectTo.from_json(item) for item in connect_to),
            hosts=fields.get("hosts", {}),
            add_hosts=fields.get("add_hosts", {}),
        )


def _json_object(data: object, field_name: str, keys: Sequence[str]) -> dict[str, Any]:
    """Check that `data` is a JSON object with only the given keys."""
    if not isinstance(data, dict):
        raise InvalidSpecError(field_name, data, "expected a JSON object")
    for key in data:
        if key not in keys:
            raise InvalidSpecError(field_name, key, f"unknown key, expected one of {', '.join(keys)}")
    return data
