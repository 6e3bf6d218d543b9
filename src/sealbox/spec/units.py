"""Parsers for the quantities users type: memory sizes, durations and CPU counts.

Each parser accepts the plain number a program would pass and the suffixed text a
person would type ("512M", "1.5g", "30s", "2m"), and raises InvalidSpecError
naming the field and the rejected text.
"""

from __future__ import annotations

import re

from sealbox.errors import InvalidSpecError

_MEMORY_UNITS = {
    "": 1024 * 1024,  # a bare number is MiB, as in Sandbox.create(memory=512)
    "b": 1,
    "k": 1024,
    "kb": 1024,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1024**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1024**3,
    "gib": 1024**3,
    "t": 1024**4,
    "tb": 1024**4,
    "tib": 1024**4,
}

_DURATION_UNITS = {"": 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}

_NUMBER_WITH_UNIT = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*")

# The kernel refuses memory limits below a few pages; 4 MiB leaves room for the
# container's init and a shell.
MIN_MEMORY_BYTES = 4 * 1024 * 1024


def parse_memory(value: int | float | str, field: str = "memory") -> int:
    """Parse a memory size into bytes.

    Numbers without a unit are MiB (so `memory=512` is 512 MiB); suffixes are
    binary (K, M, G, T, with optional "B" or "iB").
    """
    if isinstance(value, bool):
        raise InvalidSpecError(field, value, "expected a size such as 512 (MiB), '512M' or '2G'")
    if isinstance(value, (int, float)):
        number, unit = float(value), ""
    else:
        match = _NUMBER_WITH_UNIT.fullmatch(value)
        if match is None or match.group(2).lower() not in _MEMORY_UNITS:
            raise InvalidSpecError(field, value, "expected a size such as 512 (MiB), '512M' or '2G'")
        number, unit = float(match.group(1)), match.group(2).lower()
    size = int(number * _MEMORY_UNITS[unit])
    if size < MIN_MEMORY_BYTES:
        raise InvalidSpecError(field, value, f"must be at least {MIN_MEMORY_BYTES // (1024 * 1024)} MiB")
    return size


def parse_duration(value: int | float | str, field: str = "timeout") -> float:
    """Parse a duration into seconds; bare numbers are seconds ("30", "30s", "2m", "500ms")."""
    if isinstance(value, bool):
        raise InvalidSpecError(field, value, "expected a duration such as 30, '30s', '2m' or '500ms'")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _NUMBER_WITH_UNIT.fullmatch(value)
        if match is None or match.group(2).lower() not in _DURATION_UNITS:
            raise InvalidSpecError(field, value, "expected a duration such as 30, '30s', '2m' or '500ms'")
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2).lower()]
    if seconds <= 0:
        raise InvalidSpecError(field, value, "must be greater than zero")
    return seconds


def parse_cpus(value: int | float | str, field: str = "cpus") -> float:
    """Parse a CPU count such as 1, 1.5 or '0.25'; it becomes a CFS quota."""
    if isinstance(value, bool):
        raise InvalidSpecError(field, value, "expected a number of CPUs such as 1 or 1.5")
    try:
        cpus = float(value)
    except (TypeError, ValueError):
        raise InvalidSpecError(field, value, "expected a number of CPUs such as 1 or 1.5") from None
    if not 0.01 <= cpus <= 1024:
        raise InvalidSpecError(field, value, "must be between 0.01 and 1024")
    return cpus
