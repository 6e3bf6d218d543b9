"""Replace secret placeholders with their values in request heads and bodies (sans-IO).

Strategy: each secret's placeholder is a fixed ASCII string, so literal
occurrences are found with one ``bytes.find`` pass per placeholder. This is
linear in the data and fast enough for 100 MB bodies. Placeholders never
contain one another, and where occurrences of two placeholders overlap, the
leftmost wins, as with a regular expression alternation.

Other forms are searched only where they can occur. In a request target, each
placeholder character may also be written as a ``%XX`` escape in either hex
case. In ``Authorization: Basic`` and ``Proxy-Authorization: Basic``, the
placeholder sits inside the base64-encoded ``user:password``.

An occurrence is replaced only when the secret is usable for the connection:
one of its host patterns matches, the connection is TLS or the secret allows
plain text, and the secret's injection flag for that place is set. Any other
occurrence is a violation. It stays in place and the caller decides whether to
block the request. Data without a usable occurrence is returned as the same
object, so the bytes sent upstream are exactly the bytes the client sent.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from sealbox.gateway import content_coding
from sealbox.spec.secret import Secret

__all__ = ["Rewrite", "Substituter", "percent_encode"]

logger = logging.getLogger(__name__)

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_AUTHORIZATION_HEADERS = (b"authorization", b"proxy-authorization")
# RFC 7617 credentials: the scheme, one or more blanks, then base64 (token68).
_BASIC_RE = re.compile(rb"(?i)([ \t]*basic[ \t]+)([A-Za-z0-9+/]+={0,2})([ \t]*)")
_BASIC_SCHEME = b"basic"
# %XX escapes that can stand for a placeholder character ('-', digits, letters
# or '_'). The pattern also matches escapes of a few other characters, which
# only costs a search.
_ESCAPE_RE = re.compile(rb"%(?:2[dD]|3[0-9]|[4-7][0-9A-Fa-f])")
_ESCAPE_BLOCK = 4096


def percent_encode(data: bytes) -> bytes:
    """Percent-encode every byte outside the RFC 3986 unreserved set, with upper-case hex."""
    return b"".join(bytes((byte,)) if byte in _UNRESERVED else b"%%%02X" % byte for byte in data)


@dataclass(frozen=True)
class Rewrite:
    """The result of substituting placeholders in one piece of a request.

    ``data`` is the input object itself when nothing was substituted.
    ``substituted`` names the secrets whose placeholder was replaced by the
    value. ``violations`` names the secrets whose placeholder occurred but is not
    usable for this connection and place, so it was left in place.
    """

    data: bytes
    substituted: tuple[str, ...]
    violations: tuple[str, ...]

    @property
    def changed(self) -> bool:
        return bool(self.substituted)


@dataclass(frozen=True)
class _Entry:
    secret: Secret
    placeholder: bytes
    value: bytes
    target_value: bytes


_Match = tuple[int, int, _Entry]


def _percent_form(placeholder: bytes) -> bytes:
    """Return a regular expression for ``placeholder`` with any character possibly %XX-escaped."""
    parts = []
    for byte in placeholder:
        escape = b"%" + b"".join(
            b"[%c%c]" % (digit, digit + 32) if digit >= ord("A") else bytes((digit,))
            for digit in b"%02X" % byte
        )
        parts.append(b"(?:" + re.escape(bytes((byte,))) + b"|" + escape + b")")
    return b"".join(parts)


def _leftmost(found: Iterable[_Match]) -> list[_Match]:
    """Sort matches and drop each one that overlaps an earlier one."""
    kept: list[_Match] = []
    end = -1
    for match in sorted(found, key=lambda item: (item[0], -item[1])):
        if match[0] >= end:
            kept.append(match)
            end = match[1]
    return kept


def _unique(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(names))


class Substituter:
    """Substitute the placeholders of one sandbox's secrets."""

    def __init__(self, secrets: Sequence[Secret]) -> None:
        """Index ``secrets``, which must all have a placeholder and a value.

        Raises:
            ValueError: a secret has no placeholder or no value.
        """
        entries: list[_Entry] = []
        for secret in secrets:
            if secret.placeholder is None or secret.value is None:
                raise ValueError(
                    f"secret {secret.name} needs a placeholder and a value; call assign_placeholders first"
                )
            value = secret.value.encode()
            entries.append(
                _Entry(
                    secret=secret,
                    placeholder=secret.placeholder.encode("ascii"),
                    value=value,
                    target_value=percent_encode(value),
                )
            )
        self._entries = tuple(entries)
        self._max_length = max((len(entry.placeholder) for entry in entries), default=0)
        self._percent_re = (
            re.compile(b"|".join(b"(" + _percent_form(entry.placeholder) + b")" for entry in entries))
            if entries
            else None
        )

    # Finding occurrences

    def _literal_matches(self, data: bytes) -> list[_Match]:
        found: list[_Match] = []
        for entry in self._entries:
            length = len(entry.placeholder)
            start = data.find(entry.placeholder)
            while start >= 0:
                found.append((start, start + length, entry))
                start = data.find(entry.placeholder, start + length)
        return _leftmost(found)

    def _regex_matches(self, data: bytes, start: int = 0, end: int | None = None) -> list[_Match]:
        assert self._percent_re is not None
        stop = len(data) if end is None else end
        return [
            (match.start(), match.end(), self._entries[match.lastindex - 1])
            for match in self._percent_re.finditer(data, start, stop)
            if match.lastindex is not None
        ]

    def _percent_matches(self, data: bytes) -> list[_Match]:
        """Find placeholders with at least one %XX escape, searching only near such escapes.

        An occurrence contains an escape of a placeholder character and is at
        most three times as long as the longest placeholder. So the regular
        expression runs only over ranges within that reach of an escape. One
        range covers every escape in the next 4096 bytes, so the Python loop
        runs at most once per 4096 bytes.
        """
        if self._percent_re is None or b"%" not in data:
            return []
        reach = 3 * self._max_length
        length = len(data)
        ranges: list[list[int]] = []
        match = _ESCAPE_RE.search(data)
        while match is not None:
            low = max(0, match.start() - reach)
            high = min(length, match.start() + _ESCAPE_BLOCK + reach)
            if ranges and low <= ranges[-1][1]:
                ranges[-1][1] = high
            else:
                ranges.append([low, high])
            match = _ESCAPE_RE.search(data, match.start() + _ESCAPE_BLOCK)
        found: list[_Match] = []
        for low, high in ranges:
            found.extend(self._regex_matches(data, low, high))
        return found

    def _basic_credentials(self, data: bytes) -> list[tuple[int, int, bytes]]:
        """Find ``Basic <base64>`` credentials anywhere in ``data``; return their spans and decoded bytes."""
        results: list[tuple[int, int, bytes]] = []
        lowered = data.lower()
        position = lowered.find(_BASIC_SCHEME)
        while position >= 0:
            match = _BASIC_RE.match(data, position)
            if match is not None:
                decoded = _b64decode(match.group(2))
                if decoded is not None:
                    results.append((match.start(2), match.end(2), decoded))
            position = lowered.find(_BASIC_SCHEME, position + len(_BASIC_SCHEME))
        return results

    # Applying substitutions

    def _is_usable(self, entry: _Entry, host: str, port: int, tls: bool, flag: str) -> bool:
        secret = entry.secret
        if not getattr(secret.inject, flag):
            return False
        if not (tls or secret.allow_plaintext):
            return False
        return any(pattern.matches(host, port) for pattern in secret.allow_hosts)

    def _apply(
        self,
        data: bytes,
        matches: Sequence[_Match],
        replacement: Callable[[_Entry], bytes],
        usable: Callable[[_Entry], bool],
    ) -> Rewrite:
        parts: list[bytes] = []
        substituted: list[str] = []
        violations: list[str] = []
        position = 0
        for start, end, entry in matches:
            if not usable(entry):
                violations.append(entry.secret.name)
                continue
            parts.append(data[position:start])
            parts.append(replacement(entry))
            position = end
            substituted.append(entry.secret.name)
        if not substituted:
            return Rewrite(data, (), _unique(violations))
        parts.append(data[position:])
        return Rewrite(b"".join(parts), _unique(substituted), _unique(violations))

    def header_value(self, name: bytes, value: bytes, host: str, port: int, *, tls: bool) -> Rewrite:
        """Substitute placeholders in the value of the header ``name``.

        Literal placeholders use the ``headers`` flag. In Basic credentials of
        Authorization and Proxy-Authorization, placeholders in the decoded user
        and password use the ``basic_auth`` flag, and the credentials are
        re-encoded as standard base64 with padding.
        """
        literal = self._apply(
            value,
            self._literal_matches(value),
            lambda entry: entry.value,
            lambda entry: self._is_usable(entry, host, port, tls, "headers"),
        )
        if name.strip().lower() not in _AUTHORIZATION_HEADERS:
            return literal
        basic = self._rewrite_basic(literal.data, host, port, tls)
        if basic is None:
            return literal
        return Rewrite(
            basic.data,
            _unique(literal.substituted + basic.substituted),
            _unique(literal.violations + basic.violations),
        )

    def _rewrite_basic(self, value: bytes, host: str, port: int, tls: bool) -> Rewrite | None:
        match = _BASIC_RE.fullmatch(value)
        if match is None:
            return None
        decoded = _b64decode(match.group(2))
        if decoded is None:
            return None
        # Placeholders contain no ':', so substituting in the whole decoded
        # "user:password" is the same as substituting in each part.
        inner = self._apply(
            decoded,
            self._literal_matches(decoded),
            lambda entry: entry.value,
            lambda entry: self._is_usable(entry, host, port, tls, "basic_auth"),
        )
        if not inner.substituted:
            return Rewrite(value, (), inner.violations)
        token = base64.b64encode(inner.data)
        data = value[: match.start(2)] + token + value[match.end(2) :]
        return Rewrite(data, inner.substituted, inner.violations)

    def target(self, target: bytes, host: str, port: int, *, tls: bool) -> Rewrite:
        """Substitute placeholders in a request target, literal or percent-encoded.

        The value is inserted percent-encoded for every byte outside the RFC
        3986 unreserved set. The ``query`` flag covers the whole target.
        """
        matches = self._regex_matches(target) if self._percent_re is not None and b"%" in target else None
        return self._apply(
            target,
            _leftmost(matches) if matches is not None else self._literal_matches(target),
            lambda entry: entry.target_value,
            lambda entry: self._is_usable(entry, host, port, tls, "query"),
        )

    def body(self, body: bytes, content_encoding: bytes | None, host: str, port: int, *, tls: bool) -> Rewrite:
        """Substitute literal placeholders in a request body under its Content-Encoding.

        The body is decoded, substituted and encoded again with the same
        codings, so the result may differ in length and compressed bytes. A body
        that does not decode is returned untouched, with a warning logged.
        """
        try:
            decoded = content_coding.decode(body, content_encoding)
        except (content_coding.UnsupportedCoding, content_coding.CorruptBody) as error:
            logger.warning("request body to %s:%d left unscanned for placeholders: %s", host, port, error)
            return Rewrite(body, (), ())
        matches = self._literal_matches(decoded)
        if not matches:
            return Rewrite(body, (), ())
        result = self._apply(
            decoded,
            matches,
            lambda entry: entry.value,
            lambda entry: self._is_usable(entry, host, port, tls, "body"),
        )
        if not result.substituted:
            return Rewrite(body, (), result.violations)
        return Rewrite(content_coding.encode(result.data, content_encoding), result.substituted, result.violations)

    def scan(self, data: bytes) -> tuple[str, ...]:
        """Return the names of secrets whose placeholder occurs in ``data`` in any form.

        The forms are literal, percent-encoded, and inside Basic credentials.
        Literal and percent-encoded occurrences come first, in the order they
        occur, then those inside Basic credentials. The scan keeps no state
        between calls, so a caller scanning a stream in chunks must overlap them
        to find a placeholder split across two chunks.
        """
        matches = _leftmost(self._literal_matches(data) + self._percent_matches(data))
        names = [entry.secret.name for _, _, entry in matches]
        for _, _, decoded in self._basic_credentials(data):
            names.extend(entry.secret.name for _, _, entry in self._literal_matches(decoded))
        return _unique(names)

    def placeholders_present(self, data: bytes) -> bool:
        """Return whether any placeholder occurs in ``data`` in any form that ``scan`` finds."""
        if any(entry.placeholder in data for entry in self._entries):
            return True
        return bool(self.scan(data))

    @property
    def max_placeholder_length(self) -> int:
        return self._max_length


def _b64decode(token: bytes) -> bytes | None:
    """Decode standard base64, adding missing padding; return None when invalid."""
    padded = token + b"=" * (-len(token) % 4)
    try:
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        return None
