"""Secret specifications: host patterns, injection points and validation.

A secret enters a sandbox only as a placeholder in an environment variable. The
gateway swaps the real value in on the wire, and only for the hosts listed in
``allow_hosts``. This module contains the spec types and their validation. Only
``read_secret_file`` does I/O.

Error messages never contain a secret value. Where the value is at fault, the
error carries the stand-in ``<value of NAME>``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sealbox.errors import InvalidSpecError

__all__ = [
    "HostPattern",
    "Secret",
    "SecretInjection",
    "normalize_hostname",
    "parse_secret_option",
    "read_secret_file",
    "validate_secrets",
]

_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PLACEHOLDER_RE = re.compile(r"[A-Za-z0-9_-]+")
_LABEL_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_PORT_RE = re.compile(r"[0-9]{1,5}")

MIN_PLACEHOLDER_LENGTH = 16
_QUOTE_LIMIT = 60


def _truncate(text: str, limit: int = _QUOTE_LIMIT) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _redacted(name: str) -> str:
    return f"<value of {name}>"


def normalize_hostname(text: str) -> str:
    """Return ``text`` as a lower-case DNS hostname without a trailing dot.

    Accepts letter-digit-hyphen labels of 1 to 63 characters, at most 253
    characters in all. The last label must not be all digits, so a malformed
    IPv4 address such as ``1.2.3.999`` is not taken for a name.

    Raises:
        ValueError: the reason the text is not a valid hostname.
    """
    if not text.isascii():
        raise ValueError("contains non-ASCII characters; write the punycode (xn--) form of the name")
    host = text.lower()
    if host.endswith("."):
        host = host[:-1]
    if not host:
        raise ValueError("empty hostname")
    if len(host) > 253:
        raise ValueError("longer than 253 characters")
    labels = host.split(".")
    for label in labels:
        if not _LABEL_RE.fullmatch(label):
            raise ValueError(
                f"label {_truncate(label, 20)!r} is invalid; labels are 1 to 63 letters, digits "
                "or hyphens, and do not start or end with a hyphen"
            )
    if labels[-1].isdigit():
        raise ValueError("the last label is all digits, but the text is not a valid IP address")
    return host


def _parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
        return None
    return address


@dataclass(frozen=True)
class SecretInjection:
    """Places in a request where a secret's placeholder is replaced by its value."""

    headers: bool = True
    basic_auth: bool = True
    query: bool = True
    body: bool = False

    def to_json(self) -> dict[str, bool]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: object) -> SecretInjection:
        """Build injection flags from a JSON object; missing keys keep their defaults."""
        if not isinstance(data, Mapping):
            raise InvalidSpecError("secret inject", data, "expected an object of booleans")
        known = {f.name for f in dataclasses.fields(cls)}
        flags: dict[str, bool] = {}
        for key, flag in data.items():
            if key not in known:
                raise InvalidSpecError("secret inject", key, f"unknown key; expected one of {sorted(known)}")
            if not isinstance(flag, bool):
                raise InvalidSpecError(f"secret inject.{key}", flag, "expected true or false")
            flags[key] = flag
        return cls(**flags)


@dataclass(frozen=True)
class HostPattern:
    """A host a secret is scoped to: an exact name or IP, or ``*.suffix``, with an optional port.

    For a wildcard, ``host`` is the suffix without ``*.``. IPv6 addresses are
    stored in compressed form without brackets.
    """

    host: str
    wildcard: bool
    port: int | None

    @classmethod
    def parse(cls, text: str) -> HostPattern:
        """Parse ``github.com``, ``*.githubusercontent.com``, ``github.com:443``,
        ``127.0.0.1``, ``[::1]:8443`` or ``::1``.

        Raises:
            InvalidSpecError: the pattern is empty, a bare port or ``*``, a
                wildcard over fewer than two labels, has ``*`` elsewhere than as
                the whole first label, an invalid port or an invalid hostname.
        """
        if not isinstance(text, str):
            raise InvalidSpecError("host pattern", text, "expected a string such as 'github.com'")
        stripped = text.strip()
        if not stripped:
            raise InvalidSpecError("host pattern", text, "empty; expected a host such as 'github.com'")

        host_text, port = cls._split_port(text, stripped)
        if not host_text:
            raise InvalidSpecError("host pattern", text, "a bare port has no host; write HOST:PORT")

        address = _parse_ip(host_text)
        if address is not None:
            return cls(host=str(address), wildcard=False, port=port)
        if stripped.startswith("[") or ":" in host_text:
            raise InvalidSpecError("host pattern", _truncate(text), "invalid IPv6 address")

        wildcard = host_text.startswith("*.")
        name = host_text[2:] if wildcard else host_text
        if host_text == "*":
            raise InvalidSpecError(
                "host pattern", text, "'*' would match every host; list the hosts the secret is for"
            )
        if "*" in name:
            raise InvalidSpecError(
                "host pattern", _truncate(text), "'*' is allowed only as the whole first label, as in '*.example.com'"
            )
        try:
            name = normalize_hostname(name)
        except ValueError as error:
            raise InvalidSpecError("host pattern", _truncate(text), str(error)) from None
        if wildcard and name.count(".") < 1:
            raise InvalidSpecError(
                "host pattern",
                _truncate(text),
                "a wildcard needs at least two labels after '*.', as in '*.example.com'",
            )
        return cls(host=name, wildcard=wildcard, port=port)

    @staticmethod
    def _split_port(text: str, stripped: str) -> tuple[str, int | None]:
        """Split ``stripped`` into host text and port; ``text`` is only quoted in errors."""
        if stripped.startswith("["):
            close = stripped.find("]")
            if close < 0:
                raise InvalidSpecError("host pattern", _truncate(text), "missing ']' after the IPv6 address")
            host_text, rest = stripped[1:close], stripped[close + 1 :]
            if not rest:
                return host_text, None
            if not rest.startswith(":"):
                raise InvalidSpecError("host pattern", _truncate(text), "expected ':PORT' after ']'")
            return host_text, HostPattern._parse_port(text, rest[1:])
        if stripped.count(":") >= 2:
            # A bare IPv6 address; a port needs the bracketed form.
            return stripped, None
        host_text, colon, port_text = stripped.partition(":")
        if not colon:
            return host_text, None
        return host_text, HostPattern._parse_port(text, port_text)

    @staticmethod
    def _parse_port(text: str, port_text: str) -> int:
        if not _PORT_RE.fullmatch(port_text) or not 1 <= int(port_text) <= 65535:
            raise InvalidSpecError("host pattern", _truncate(text), "invalid port; expected a number from 1 to 65535")
        return int(port_text)

    @property
    def is_ip(self) -> bool:
        return _parse_ip(self.host) is not None

    def matches(self, host: str, port: int | None = None) -> bool:
        """Return whether ``host`` (and ``port``) fall under this pattern.

        ``*.example.com`` matches subdomains at any depth but not example.com
        itself. A pattern with a port matches only that port, so it never
        matches when ``port`` is None.
        """
        if self.port is not None and port != self.port:
            return False
        candidate = host.strip().lower()
        if candidate.startswith("[") and candidate.endswith("]"):
            candidate = candidate[1:-1]
        if candidate.endswith("."):
            candidate = candidate[:-1]
        address = _parse_ip(candidate)
        if self.is_ip:
            return address is not None and address == ipaddress.ip_address(self.host)
        if address is not None:
            return False
        if self.wildcard:
            return candidate.endswith("." + self.host)
        return candidate == self.host

    def __str__(self) -> str:
        host = f"*.{self.host}" if self.wildcard else self.host
        if ":" in host:
            host = f"[{host}]"
        return host if self.port is None else f"{host}:{self.port}"


def _host_patterns(hosts: Iterable[str | HostPattern] | str | None) -> tuple[HostPattern, ...]:
    if hosts is None:
        return ()
    if isinstance(hosts, (str, HostPattern)):
        hosts = [hosts]
    patterns: list[HostPattern] = []
    for item in hosts:
        if isinstance(item, HostPattern):
            patterns.append(item)
            continue
        if not isinstance(item, str):
            raise InvalidSpecError("host pattern", item, "expected a string such as 'github.com'")
        # A string may list several hosts separated by commas, as on the command line.
        for part in item.split(","):
            if part.strip():
                patterns.append(HostPattern.parse(part))
    return tuple(patterns)


@dataclass(frozen=True)
class Secret:
    """A secret exposed to a sandbox as the environment variable ``name``.

    ``value`` is None only for a stored spec whose value is kept elsewhere, such
    as one read back with ``from_json``. It never appears in ``repr`` or, unless
    asked for, in ``to_json``. A ``placeholder`` of None is generated when the
    sandbox is created. With ``allow_plaintext``, plain HTTP to an allowed host
    receives the value too. ``on_violation`` decides whether a request that
    carries the placeholder to any other host is blocked or only logged.
    """

    name: str
    value: str | None = field(repr=False)
    allow_hosts: tuple[HostPattern, ...]
    placeholder: str | None = None
    inject: SecretInjection = SecretInjection()
    allow_plaintext: bool = False
    on_violation: Literal["block", "log"] = "block"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_RE.fullmatch(self.name):
            raise InvalidSpecError(
                "secret name",
                _truncate(str(self.name)),
                "expected an environment variable name: a letter or '_', then letters, digits or '_'",
            )
        self._validate_value()
        object.__setattr__(self, "allow_hosts", _host_patterns(self.allow_hosts))
        if not self.allow_hosts:
            raise InvalidSpecError(
                "secret allow_hosts",
                self.name,
                "an empty host list would mean no host; list the hosts the secret is for",
            )
        self._validate_placeholder()
        if not isinstance(self.inject, SecretInjection):
            raise InvalidSpecError("secret inject", self.inject, "expected a SecretInjection")
        if not isinstance(self.allow_plaintext, bool):
            raise InvalidSpecError("secret allow_plaintext", self.allow_plaintext, "expected True or False")
        if self.on_violation not in ("block", "log"):
            raise InvalidSpecError("secret on_violation", self.on_violation, "expected 'block' or 'log'")

    def _validate_value(self) -> None:
        value = self.value
        if value is None:
            return
        if not isinstance(value, str):
            raise InvalidSpecError("secret value", _redacted(self.name), "expected a string")
        if value == "":
            raise InvalidSpecError("secret value", _redacted(self.name), "empty; pass the secret's value")
        if any(char in value for char in "\r\n\0"):
            raise InvalidSpecError(
                "secret value",
                _redacted(self.name),
                "contains CR, LF or NUL, which can never be sent in an HTTP header",
            )

    def _validate_placeholder(self) -> None:
        placeholder = self.placeholder
        if placeholder is None:
            return
        if not isinstance(placeholder, str) or not _PLACEHOLDER_RE.fullmatch(placeholder):
            raise InvalidSpecError(
                "secret placeholder",
                _truncate(str(placeholder)),
                "expected only ASCII letters, digits, '_' and '-'",
            )
        if len(placeholder) < MIN_PLACEHOLDER_LENGTH:
            raise InvalidSpecError(
                "secret placeholder",
                _truncate(placeholder),
                f"shorter than {MIN_PLACEHOLDER_LENGTH} characters; short placeholders can occur by chance",
            )
        if self.value is not None and placeholder == self.value:
            raise InvalidSpecError("secret placeholder", _redacted(self.name), "equal to the value; choose another")

    @classmethod
    def env(
        cls,
        name: str,
        value: str | None = None,
        allow_hosts: Sequence[str] | str | None = None,
        *,
        allow: Sequence[str] | str | None = None,
        placeholder: str | None = None,
        inject: SecretInjection | None = None,
        allow_plaintext: bool = False,
        on_violation: str = "block",
    ) -> Secret:
        """Build a secret for the environment variable ``name``.

        ``allow`` is another spelling of ``allow_hosts``, so only one may be
        given. A string lists hosts separated by commas.
        """
        if allow is not None and allow_hosts is not None:
            raise InvalidSpecError("secret allow_hosts", name, "pass either allow_hosts or allow, not both")
        if value is None:
            raise InvalidSpecError(
                "secret value",
                _redacted(name),
                f"missing; pass value=..., for example value=os.environ[{name!r}]",
            )
        return cls(
            name=name,
            value=value,
            allow_hosts=_host_patterns(allow if allow is not None else allow_hosts),
            placeholder=placeholder,
            inject=inject if inject is not None else SecretInjection(),
            allow_plaintext=allow_plaintext,
            on_violation=on_violation,  # type: ignore[arg-type]
        )

    def to_json(self, *, include_value: bool = False) -> dict[str, Any]:
        """Return the spec as a JSON object; the value is included only on request."""
        data: dict[str, Any] = {
            "name": self.name,
            "allow_hosts": [str(pattern) for pattern in self.allow_hosts],
            "placeholder": self.placeholder,
            "inject": self.inject.to_json(),
            "allow_plaintext": self.allow_plaintext,
            "on_violation": self.on_violation,
        }
        if include_value and self.value is not None:
            data["value"] = self.value
        return data

    @classmethod
    def from_json(cls, data: object) -> Secret:
        """Build a secret from ``to_json`` output; ``value`` is None unless the object has one."""
        if not isinstance(data, Mapping):
            raise InvalidSpecError("secret", type(data).__name__, "expected a JSON object")
        known = {"name", "value", "allow_hosts", "placeholder", "inject", "allow_plaintext", "on_violation"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidSpecError("secret", unknown[0], f"unknown key; expected one of {sorted(known)}")
        if "name" not in data:
            raise InvalidSpecError("secret", "name", "missing key")
        name = data["name"]
        hosts = data.get("allow_hosts")
        if not isinstance(hosts, list):
            raise InvalidSpecError("secret allow_hosts", name, "expected a list of host patterns")
        return cls(
            name=name,
            value=data.get("value"),
            allow_hosts=_host_patterns(hosts),
            placeholder=data.get("placeholder"),
            inject=SecretInjection.from_json(data.get("inject", {})),
            allow_plaintext=data.get("allow_plaintext", False),
            on_violation=data.get("on_violation", "block"),
        )


def parse_secret_option(text: str, environ: Mapping[str, str]) -> Secret:
    """Parse a command-line secret: ``NAME=VALUE@HOST[,HOST...]`` or ``NAME@HOST[,HOST...]``.

    The last ``@`` separates the hosts, so a value may contain ``@``. Without
    ``=VALUE`` the value is read from ``environ[NAME]``.
    """
    head, at, hosts_text = text.rpartition("@")
    if not at:
        name, equals, _ = text.partition("=")
        shown = f"{_truncate(name)}=<value>" if equals else _truncate(name)
        raise InvalidSpecError(
            "secret option", shown, "missing '@HOST'; write NAME=VALUE@HOST[,HOST...] or NAME@HOST[,HOST...]"
        )
    name, equals, value = head.partition("=")
    # Validate the name before it is used to look up or describe the value.
    if not _NAME_RE.fullmatch(name):
        raise InvalidSpecError(
            "secret name",
            _truncate(name),
            "expected an environment variable name: a letter or '_', then letters, digits or '_'",
        )
    if not equals:
        if name not in environ:
            raise InvalidSpecError(
                "secret value",
                _redacted(name),
                f"{name} is not set in the environment; export {name} or write {name}=VALUE@HOST",
            )
        value = environ[name]
    return Secret(name=name, value=value, allow_hosts=_host_patterns(hosts_text))


def read_secret_file(path: Path, environ: Mapping[str, str]) -> list[Secret]:
    """Read secrets from a file with one ``NAME=VALUE@HOST[,HOST...]`` per line.

    Blank lines and lines starting with ``#`` are skipped. Errors name the file
    and line number, never a value.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise InvalidSpecError("secret file", str(path), f"not valid UTF-8 at byte {error.start}") from None
    except OSError as error:
        raise InvalidSpecError("secret file", str(path), f"cannot be read: {error.strerror}") from None

    secrets: list[Secret] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            secrets.append(parse_secret_option(line, environ))
        except InvalidSpecError as error:
            raise InvalidSpecError(f"{error.field} in {path} line {number}", error.value, error.reason) from None
    try:
        validate_secrets(secrets)
    except InvalidSpecError as error:
        raise InvalidSpecError(f"{error.field} in {path}", error.value, error.reason) from None
    return secrets


def validate_secrets(secrets: Sequence[Secret]) -> None:
    """Check that a sandbox's secrets can be used together.

    Names must be unique. Given placeholders must be unique, must not contain
    one another, and must not occur in any value, so that each occurrence on the
    wire belongs to exactly one secret.
    """
    seen: set[str] = set()
    for secret in secrets:
        if secret.name in seen:
            raise InvalidSpecError(
                "secret name", secret.name, "duplicate; each secret needs its own environment variable name"
            )
        seen.add(secret.name)

    placeholders = [(secret, secret.placeholder) for secret in secrets if secret.placeholder is not None]
    for index, (secret, placeholder) in enumerate(placeholders):
        for other_index, (other, other_placeholder) in enumerate(placeholders):
            if other_index == index:
                continue
            if placeholder == other_placeholder:
                raise InvalidSpecError(
                    "secret placeholder",
                    _truncate(placeholder),
                    f"used by both {secret.name} and {other.name}; placeholders must be unique",
                )
            if placeholder in other_placeholder:
                raise InvalidSpecError(
                    "secret placeholder",
                    _truncate(placeholder),
                    f"occurs in the placeholder of {other.name}; placeholders must not contain one another",
                )
        for other in secrets:
            if other.value is not None and placeholder in other.value:
                raise InvalidSpecError(
                    "secret placeholder",
                    _truncate(placeholder),
                    f"occurs in the value of {other.name}; choose another placeholder",
                )
