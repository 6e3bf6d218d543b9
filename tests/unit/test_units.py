"""Parsing of memory sizes, durations and CPU counts."""

from __future__ import annotations

import pytest

from sealbox.errors import InvalidSpecError
from sealbox.spec.units import parse_cpus, parse_duration, parse_memory


@pytest.mark.parametrize("text, expected", [
    (512, 512 * 1024**2),
    ("512", 512 * 1024**2),
    ("512M", 512 * 1024**2),
    ("512mb", 512 * 1024**2),
    ("1.5g", int(1.5 * 1024**3)),
    ("2GiB", 2 * 1024**3),
    ("65536k", 64 * 1024**2),
    ("8388608b", 8 * 1024**2),
])
def test_memory_accepted(text, expected):
    assert parse_memory(text) == expected


@pytest.mark.parametrize("text", ["lots", "", "-5M", "5X", "1M", True, "M"])
def test_memory_rejected(text):
    with pytest.raises(InvalidSpecError) as info:
        parse_memory(text)
    assert info.value.field == "memory"
    assert info.value.value == text


@pytest.mark.parametrize("text, expected", [(30, 30.0), ("30s", 30.0), ("2m", 120.0), ("500ms", 0.5), ("1h", 3600.0)])
def test_duration_accepted(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["0", "-1", "soon", "5d", 0])
def test_duration_rejected(text):
    with pytest.raises(InvalidSpecError, match="timeout"):
        parse_duration(text)


def test_cpus():
    assert parse_cpus("1.5") == 1.5
    with pytest.raises(InvalidSpecError, match="cpus"):
        parse_cpus("many")
    with pytest.raises(InvalidSpecError, match="between"):
        parse_cpus(0)
