from __future__ import annotations

import gzip
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sealbox.gateway.content_coding import CorruptBody, UnsupportedCoding, decode, encode, parse_codings

TEXT = b"0032want 4e2b1c0a0f6f3cfbd8b4e5a1e1c1f7f2b1a0e9d8 multi_ack\n" * 50


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush()


@pytest.mark.parametrize(
    ("value", "codings"),
    [
        (None, []),
        (b"", []),
        (b"identity", []),
        (b"gzip", ["gzip"]),
        (b"x-gzip", ["gzip"]),
        (b"GZIP", ["gzip"]),
        (b"deflate", ["deflate"]),
        (b"gzip, deflate", ["gzip", "deflate"]),
        (b" deflate ,gzip,identity", ["deflate", "gzip"]),
        ("gzip", ["gzip"]),
    ],
)
def test_parse_codings(value: bytes | str | None, codings: list[str]) -> None:
    assert parse_codings(value) == codings


@pytest.mark.parametrize("coding", [b"br", b"zstd", b"compress", b"gzip, br"])
def test_unsupported_coding(coding: bytes) -> None:
    with pytest.raises(UnsupportedCoding) as caught:
        decode(b"data", coding)
    assert caught.value.coding == coding.split(b",")[-1].strip().decode()


def test_unsupported_coding_encode() -> None:
    with pytest.raises(UnsupportedCoding):
        encode(b"data", b"zstd")


def test_identity_returns_same_object() -> None:
    assert decode(TEXT, None) is TEXT
    assert encode(TEXT, b"identity") is TEXT


def test_gzip_decode() -> None:
    assert decode(gzip.compress(TEXT), b"gzip") == TEXT


def test_gzip_decode_multiple_members() -> None:
    assert decode(gzip.compress(b"first ") + gzip.compress(b"second"), b"gzip") == b"first second"


def test_zlib_deflate_decode() -> None:
    assert decode(zlib.compress(TEXT), b"deflate") == TEXT


def test_raw_deflate_decode() -> None:
    assert decode(raw_deflate(TEXT), b"deflate") == TEXT


def test_deflate_encode_is_zlib() -> None:
    assert zlib.decompress(encode(TEXT, b"deflate")) == TEXT


def test_gzip_encode_is_gzip() -> None:
    assert gzip.decompress(encode(TEXT, b"x-gzip")) == TEXT


def test_stack_applied_in_order() -> None:
    encoded = encode(TEXT, b"gzip, deflate")
    assert gzip.decompress(zlib.decompress(encoded)) == TEXT


def test_stack_decoded_in_reverse() -> None:
    assert decode(zlib.compress(gzip.compress(TEXT)), b"gzip, deflate") == TEXT


def test_empty_body_decodes_empty() -> None:
    assert decode(b"", b"gzip") == b""


@pytest.mark.parametrize(
    ("data", "coding", "reason"),
    [
        (gzip.compress(TEXT)[:-10], b"gzip", "truncated"),
        (b"not gzip at all", b"gzip", "incorrect header check"),
        (gzip.compress(TEXT) + b"junk", b"gzip", "incorrect header check"),
        (zlib.compress(TEXT) + b"junk", b"deflate", "4 bytes after the end"),
        (zlib.compress(TEXT)[:-8], b"deflate", "truncated"),
        (b"\xff\xff\xff\xff", b"deflate", "invalid"),
    ],
)
def test_corrupt_body(data: bytes, coding: bytes, reason: str) -> None:
    with pytest.raises(CorruptBody) as caught:
        decode(data, coding)
    assert caught.value.coding == coding.decode()
    assert reason in caught.value.reason


def test_corrupt_zlib_checksum() -> None:
    data = bytearray(zlib.compress(TEXT))
    data[-1] ^= 0xFF
    with pytest.raises(CorruptBody) as caught:
        decode(bytes(data), b"deflate")
    assert "incorrect data check" in caught.value.reason


def test_corrupt_message_names_coding() -> None:
    with pytest.raises(CorruptBody) as caught:
        decode(b"not gzip at all", b"x-gzip")
    assert str(caught.value).startswith("body is not valid gzip data")


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=4096), st.sampled_from([b"gzip", b"deflate", b"x-gzip", b"gzip, deflate", b"identity"]))
def test_round_trip(data: bytes, coding: bytes) -> None:
    assert decode(encode(data, coding), coding) == data


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=1, max_size=4096))
def test_raw_deflate_round_trip(data: bytes) -> None:
    assert decode(raw_deflate(data), b"deflate") == data
