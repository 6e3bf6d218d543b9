"""Network policy decisions for connections and DNS names.

Connections (PolicyEngine.check)
    Rules are evaluated in order and the first matching rule decides; when no
    rule matches, the default of the connection's direction decides. A rule
    matches when its direction, its protocol ("any" matches both) and its
    ports (none means every port) match, and its destination matches:

    - a host name matches one of Destination.names exactly;
    - a wildcard *.example.com matches names below example.com at any depth,
      but not example.com itself;
    - an IP address, CIDR network or group matches one of
      Destination.addresses, either as written or after unwrapping an
      embedded IPv4 address (::ffff:169.254.169.254 is in group metadata).
      Addresses are ignored when trusted_addresses is True, because they came
      from the operator's static map; then only the names are checked;
    - a rule without target and group matches every connection.

    A port-restricted rule never matches a connection whose port is 0 (unknown).

Rebinding guard
    A name can resolve to any address, for example internal.example to
    10.0.0.5. So when the first-match verdict is ALLOW and it came from a
    name rule, an address rule or the default, each untrusted address is
    checked again on its own. It is compared with the address rules (IP,
    CIDR and group) in order, wherever they stand in the list. If the first
    address rule that matches an address is a DENY, the connection is
    denied. So public_only() plus an allow rule for internal.example still
    denies it when the name resolves to 10.0.0.5, unless an earlier address
    rule allows that address. An ALLOW from a rule without target and group
    is final.

DNS names (PolicyEngine.check_name)
    At DNS time the port, protocol and addresses are unknown, so only the
    egress rules that can match a name take part: host name and wildcard
    rules for that name, and rules without target and group.

    - The first of them decides, except that a DENY restricted to ports or
      a protocol cannot deny the whole name and is skipped.
    - If none decides, the name is allowed when the default egress action is
      ALLOW, or when some egress ALLOW rule has an address target (IP, CIDR
      or group), because the name's addresses might match it at connect
      time. Otherwise the name is denied.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from sealbox.gateway.addresses import IPAddress, classify_address, unwrap_address
from sealbox.spec.network import Action, Direction, NetworkPolicy, Rule

__all__ = ["Destination", "PolicyEngine", "Verdict"]

_ADDRESS_KINDS = frozenset({"address", "network", "group"})
_NAME_KINDS = frozenset({"domain", "wildcard"})


@dataclass(frozen=True)
class Verdict:
    """Policy decision with the deciding rule and a reason for the audit log."""

    action: Action
    rule_index: int | None  # index into NetworkPolicy.rules, None when the default decided
    reason: str

    @property
    def allowed(self) -> bool:
        return self.action is Action.ALLOW


@dataclass(frozen=True)
class Destination:
    """Destination of a connection as seen by the gateway.

    names holds the name the sandbox resolved (from the fake address), the TLS
    SNI and the HTTP Host, lower-case and without port. addresses are the IP
    addresses the connection goes to. port 0 means unknown.
    """

    names: tuple[str, ...] = ()
    addresses: tuple[IPAddress, ...] = ()
    trusted_addresses: bool = False
    port: int = 0
    protocol: str = "tcp"
    direction: Direction = Direction.EGRESS

    def __post_init__(self) -> None:
        names = tuple(_normalize_name(name) for name in self.names)
        addresses = tuple(
            item if isinstance(item, (IPv4Address, IPv6Address)) else ipaddress.ip_address(item)
            for item in self.addresses
        )
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "addresses", addresses)
        object.__setattr__(self, "protocol", self.protocol.lower())
        object.__setattr__(self, "direction", Direction(self.direction))


def _normalize_name(name: str) -> str:
    key = name.lower()
    return key[:-1] if key.endswith(".") else key


class _CompiledRule:
    """A Rule with its target pre-parsed for matching."""

    def __init__(self, index: int, rule: Rule) -> None:
        self.index = index
        self.rule = rule
        self.kind = rule.kind
        self.label = f"rule {index} ({rule.describe()})"
        self.network: IPv4Network | IPv6Network | None = None
        self.suffix: str | None = None
        if self.kind in ("address", "network"):
            self.network = ipaddress.ip_network(rule.target)  # type: ignore[arg-type]
        elif self.kind == "wildcard":
            self.suffix = rule.target[1:]  # type: ignore[index]  # ".example.com"

    def applies_to(self, dest: Destination) -> bool:
        """Return whether direction, protocol and ports match, ignoring the destination."""
        rule = self.rule
        if rule.direction is not dest.direction:
            return False
        if rule.protocol != "any" and rule.protocol != dest.protocol:
            return False
        if rule.ports and not any(dest.port in port_range for port_range in rule.ports):
            return False
        return True

    def matches_name(self, name: str) -> bool:
        if self.kind == "domain":
            return name == self.rule.target
        if self.kind == "wildcard":
            return name.endswith(self.suffix)  # type: ignore[arg-type]
        return False

    def matches_address(self, address: IPAddress) -> bool:
        if self.kind == "group":
            return self.rule.group in classify_address(address)
        if self.network is None:
            return False
        return address in self.network or unwrap_address(address) in self.network


class PolicyEngine:
    """Evaluate a NetworkPolicy for connections and DNS names (see the module docstring)."""

    def __init__(self, policy: NetworkPolicy) -> None:
        self.policy = policy
        self._rules = tuple(_CompiledRule(index, rule) for index, rule in enumerate(policy.rules))

    def check(self, dest: Destination) -> Verdict:
        """Decide a connection: first matching rule, else the direction's default, then the rebinding guard."""
        verdict, deciding = self._first_match(dest)
        if not verdict.allowed or dest.trusted_addresses:
            return verdict
        if deciding is not None and deciding.kind == "any":
            return verdict
        guard = self._rebinding_guard(dest, verdict)
        return guard if guard is not None else verdict

    def check_name(self, name: str) -> Verdict:
        """Decide whether a DNS name may be resolved (see "DNS names" in the module docstring)."""
        key = _normalize_name(name)
        for rule in self._rules:
            if rule.rule.direction is not Direction.EGRESS:
                continue
            if rule.kind == "any":
                subject = "every name"
            elif rule.kind in _NAME_KINDS and rule.matches_name(key):
                subject = f"name {key}"
            else:
                continue
            if rule.rule.action is Action.ALLOW:
                return Verdict(Action.ALLOW, rule.index, f"{rule.label} matched {subject}")
            if rule.rule.ports or rule.rule.protocol != "any":
                continue
            return Verdict(Action.DENY, rule.index, f"{rule.label} matched {subject}")

        if self.policy.default_egress is Action.ALLOW:
            return Verdict(Action.ALLOW, None, f"no rule denies name {key}; default egress is allow")
        for rule in self._rules:
            if (
                rule.rule.direction is Direction.EGRESS
                and rule.rule.action is Action.ALLOW
                and rule.kind in _ADDRESS_KINDS
            ):
                return Verdict(
                    Action.ALLOW,
                    rule.index,
                    f"{rule.label} may allow the addresses of name {key}; they are checked at connect time",
                )
        return Verdict(Action.DENY, None, f"no rule allows name {key}; default egress is deny")

    def _first_match(self, dest: Destination) -> tuple[Verdict, _CompiledRule | None]:
        for rule in self._rules:
            if not rule.applies_to(dest):
                continue
            subject = self._matched_subject(rule, dest)
            if subject is None:
                continue
            return Verdict(rule.rule.action, rule.index, f"{rule.label} matched {subject}"), rule

        if dest.direction is Direction.INGRESS:
            default = self.policy.default_ingress
        else:
            default = self.policy.default_egress
        reason = f"no rule matched {_describe_destination(dest)}; default {dest.direction.value} is {default.value}"
        return Verdict(default, None, reason), None

    def _matched_subject(self, rule: _CompiledRule, dest: Destination) -> str | None:
        """Return what the rule's destination matched ("name x", "address y"), or None."""
        if rule.kind == "any":
            return _describe_destination(dest)
        if rule.kind in _NAME_KINDS:
            for name in dest.names:
                if rule.matches_name(name):
                    return f"name {name}"
            return None
        if dest.trusted_addresses:
            return None
        for address in dest.addresses:
            if rule.matches_address(address):
                return f"address {address}"
        return None

    def _rebinding_guard(self, dest: Destination, verdict: Verdict) -> Verdict | None:
        """Deny when the first address rule matching some untrusted address is a DENY."""
        for address in dest.addresses:
            for rule in self._rules:
                if rule.kind not in _ADDRESS_KINDS or not rule.applies_to(dest):
                    continue
                if not rule.matches_address(address):
                    continue
                if rule.rule.action is Action.DENY:
                    allowed_by = "the default" if verdict.rule_index is None else f"rule {verdict.rule_index}"
                    return Verdict(
                        Action.DENY,
                        rule.index,
                        f"{rule.label} matched address {address}{_of_names(dest.names)}"
                        f" (rebinding guard; {allowed_by} allowed the connection)",
                    )
                break
        return None


def _of_names(names: Iterable[str]) -> str:
    listed = ", ".join(names)
    return f" of {listed}" if listed else ""


def _describe_destination(dest: Destination) -> str:
    parts = list(dest.names) + [str(address) for address in dest.addresses]
    target = ", ".join(parts) if parts else "unknown destination"
    if dest.port:
        return f"{target} {dest.protocol} port {dest.port}"
    return f"{target} {dest.protocol}"
