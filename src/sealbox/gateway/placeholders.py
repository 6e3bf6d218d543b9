"""Generate the placeholders that stand in for secret values inside a sandbox.

A placeholder for a value of 16 bytes or more has the same length as the value
in UTF-8, so substituting it never changes a length on the wire. It keeps the
value's format prefix (``ghp_``, ``sk-``, ``github_``) so that clients which
check token formats accept it. Shorter values get 32 random characters.
"""

from __future__ import annotations

import dataclasses
import random
import secrets as _secrets
import string
from collections.abc import Sequence

from sealbox.errors import InvalidSpecError
from sealbox.spec.secret import Secret

__all__ = ["make_placeholder", "assign_placeholders"]

ALPHABET = string.ascii_letters + string.digits
SAME_LENGTH_MIN = 16
SHORT_VALUE_PLACEHOLDER_LENGTH = 32
MAX_PREFIX_LENGTH = 12
MIN_RANDOM_CHARACTERS = 12
# Each attempt collides with a chance below 62**-12, so running out of attempts
# means the random source is broken, not unlucky.
MAX_ATTEMPTS = 100


def _format_prefix(value: str) -> str:
    """Return the value's prefix up to and including its first '_' or '-', or ''.

    The prefix is kept only when the part before the separator is 1 to 11 ASCII
    letters or digits and the value leaves at least 12 characters after it.
    """
    positions = [index for index in (value.find("_"), value.find("-")) if index >= 0]
    if not positions:
        return ""
    end = min(positions) + 1
    head = value[: end - 1]
    if not head or not (head.isascii() and head.isalnum()):
        return ""
    if end > MAX_PREFIX_LENGTH:
        return ""
    if len(value.encode()) - end < MIN_RANDOM_CHARACTERS:
        return ""
    return value[:end]


def make_placeholder(value: str, rng: random.Random = _secrets.SystemRandom()) -> str:
    """Return a random placeholder for ``value``.

    Values of 16 or more UTF-8 bytes get a placeholder of the same byte length
    that keeps the value's format prefix. Shorter values get 32 random ASCII
    letters and digits.
    """
    length = len(value.encode())
    if length < SAME_LENGTH_MIN:
        return "".join(rng.choice(ALPHABET) for _ in range(SHORT_VALUE_PLACEHOLDER_LENGTH))
    prefix = _format_prefix(value)
    return prefix + "".join(rng.choice(ALPHABET) for _ in range(length - len(prefix)))


def _conflicts(candidate: str, taken: Sequence[str], values: Sequence[str]) -> bool:
    for other in taken:
        if candidate in other or other in candidate:
            return True
    return any(candidate in value for value in values)


def assign_placeholders(
    secrets: Sequence[Secret], rng: random.Random = _secrets.SystemRandom()
) -> tuple[Secret, ...]:
    """Return the secrets with every missing placeholder generated.

    A generated placeholder differs from every other placeholder, neither
    contains nor occurs in another, and occurs in no value. A colliding
    candidate is replaced by a new random one.

    Raises:
        InvalidSpecError: a secret without a placeholder has no value, or no
            free placeholder was found in 100 attempts.
    """
    values = [secret.value for secret in secrets if secret.value is not None]
    taken = [secret.placeholder for secret in secrets if secret.placeholder is not None]
    assigned: list[Secret] = []
    for secret in secrets:
        if secret.placeholder is not None:
            assigned.append(secret)
            continue
        if secret.value is None:
            raise InvalidSpecError(
                "secret value", f"<value of {secret.name}>", "missing; a placeholder is generated from the value"
            )
        for _ in range(MAX_ATTEMPTS):
            candidate = make_placeholder(secret.value, rng)
            if not _conflicts(candidate, taken, values):
                break
        else:
            raise InvalidSpecError(
                "secret placeholder",
                secret.name,
                f"no unique placeholder found in {MAX_ATTEMPTS} attempts; check the random source",
            )
        taken.append(candidate)
        assigned.append(dataclasses.replace(secret, placeholder=candidate))
    return tuple(assigned)
