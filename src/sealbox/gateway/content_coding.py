"""Decode and encode HTTP content codings (RFC 9110 section 8.4.1).

Supported: identity, gzip (alias x-gzip) and deflate. For deflate, RFC 9110
requires the zlib format (RFC 1950), but some clients send raw deflate data
(RFC 1951), so decoding accepts both and encoding writes the zlib format. A
Content-Encoding value lists codings in the order they were applied, so
``decode`` undoes them from last to first and ``encode`` applies them first to
last.

Re-encoding does not reproduce the original compressed bytes. Callers encode
only after they changed the decoded data.
"""

from __future__ import annotations

import zlib

__all__ = ["CorruptBody", "UnsupportedCoding", "decode", "encode", "parse_codings"]

_GZIP_WBITS = 16 + zlib.MAX_WBITS
_ZLIB_WBITS = zlib.MAX_WBITS
_RAW_WBITS = -zlib.MAX_WBITS
_ALIASES = {"x-gzip": "gzip"}
_SUPPORTED = {"identity", "gzip", "deflate"}


class UnsupportedCoding(ValueError):
    """The body uses a content coding this module cannot decode, such as br or zstd."""

    def __init__(self, coding: str) -> None:
        self.coding = coding
        super().__init__(f"unsupported content coding {coding!r}; supported: identity, gzip, x-gzip, deflate")


class CorruptBody(ValueError):
    """The body does not decode with its declared content coding."""

    def __init__(self, coding: str, reason: str) -> None:
        self.coding = coding
        self.reason = reason
        super().__init__(f"body is not valid {coding} data: {reason}")


def parse_codings(coding: bytes | str | None) -> list[str]:
    """Return the codings in a Content-Encoding value, lower-case, without identity.

    Raises:
        UnsupportedCoding: a listed coding is not supported.
    """
    if coding is None:
        return []
    text = coding.decode("latin-1") if isinstance(coding, bytes) else coding
    codings: list[str] = []
    for item in text.split(","):
        name = item.strip().lower()
        if not name:
            continue
        name = _ALIASES.get(name, name)
        if name not in _SUPPORTED:
            raise UnsupportedCoding(item.strip())
        if name != "identity":
            codings.append(name)
    return codings


def _looks_like_zlib(data: bytes) -> bool:
    """Return whether ``data`` starts with a zlib header (RFC 1950 section 2.2)."""
    if len(data) < 2:
        return False
    method_flags, flags = data[0], data[1]
    return method_flags & 0x0F == 8 and method_flags >> 4 <= 7 and (method_flags << 8 | flags) % 31 == 0


def _inflate(data: bytes, wbits: int, coding: str) -> tuple[bytes, bytes]:
    """Decompress one stream and return the output and the bytes after the stream."""
    decompressor = zlib.decompressobj(wbits)
    try:
        output = decompressor.decompress(data)
        output += decompressor.flush()
    except zlib.error as error:
        raise CorruptBody(coding, str(error)) from None
    if not decompressor.eof:
        raise CorruptBody(coding, "the compressed stream is truncated")
    return output, decompressor.unused_data


def _decode_gzip(data: bytes) -> bytes:
    # A gzip body may hold several members back to back (RFC 1952 section 2.2).
    parts: list[bytes] = []
    rest = data
    while rest:
        output, rest = _inflate(rest, _GZIP_WBITS, "gzip")
        parts.append(output)
    return b"".join(parts)


def _inflate_whole(data: bytes, wbits: int) -> bytes:
    output, rest = _inflate(data, wbits, "deflate")
    if rest:
        raise CorruptBody("deflate", f"{len(rest)} bytes after the end of the compressed stream")
    return output


def _decode_deflate(data: bytes) -> bytes:
    if not _looks_like_zlib(data):
        return _inflate_whole(data, _RAW_WBITS)
    try:
        return _inflate_whole(data, _ZLIB_WBITS)
    except CorruptBody as zlib_error:
        # The first two bytes of a raw deflate stream can pass the zlib header
        # check by chance, so try raw deflate before giving up.
        try:
            return _inflate_whole(data, _RAW_WBITS)
        except CorruptBody:
            raise zlib_error from None


def decode(data: bytes, coding: bytes | str | None) -> bytes:
    """Undo every coding in the Content-Encoding value ``coding``.

    An empty body decodes to an empty body under any coding.

    Raises:
        UnsupportedCoding: a listed coding is not supported.
        CorruptBody: the data is not valid for a listed coding.
    """
    codings = parse_codings(coding)
    # NOTE: the decoded size is not limited, so a small compressed body can
    # expand to use much memory in the gateway.
    for name in reversed(codings):
        if not data:
            return b""
        data = _decode_gzip(data) if name == "gzip" else _decode_deflate(data)
    return data


def encode(data: bytes, coding: bytes | str | None) -> bytes:
    """Apply every coding in the Content-Encoding value ``coding``, first to last.

    Raises:
        UnsupportedCoding: a listed coding is not supported.
    """
    for name in parse_codings(coding):
        wbits = _GZIP_WBITS if name == "gzip" else _ZLIB_WBITS
        compressor = zlib.compressobj(6, zlib.DEFLATED, wbits)
        data = compressor.compress(data) + compressor.flush()
    return data
