"""Deterministic payload bytes served by ``GET /bytes/<n>``.

The pattern is one 1 MiB block repeated: the first 1 MiB of SHAKE-256 over the
seed ``b"sealbox testworld pattern v1"``. ``pattern_bytes(n)`` is the first n
bytes of the endless repetition, so any client can compute the expected body
or its digest without talking to the server. The block is incompressible, so
compression on the path cannot hide a corrupted or truncated transfer.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterator

PATTERN_SEED = b"sealbox testworld pattern v1"
PATTERN_BLOCK_SIZE = 1 << 20


@functools.cache
def pattern_block() -> bytes:
    """Return the 1 MiB block that the pattern repeats."""
    return hashlib.shake_256(PATTERN_SEED).digest(PATTERN_BLOCK_SIZE)


def pattern_bytes(n: int) -> bytes:
    """Return the first n bytes of the pattern."""
    if n < 0:
        raise ValueError(f"invalid pattern length {n}: expected a length of 0 or more")
    block = pattern_block()
    full, rest = divmod(n, PATTERN_BLOCK_SIZE)
    return block * full + block[:rest]


def pattern_chunks(n: int, offset: int = 0) -> Iterator[memoryview]:
    """Yield memoryviews that together are ``pattern_bytes(n)[offset:]``.

    Each view covers at most one block, so no copy of the payload is made.
    """
    view = memoryview(pattern_block())
    position = offset
    while position < n:
        start = position % PATTERN_BLOCK_SIZE
        size = min(PATTERN_BLOCK_SIZE - start, n - position)
        yield view[start : start + size]
        position += size


def pattern_sha256(n: int) -> str:
    """Return the SHA-256 hex digest of ``pattern_bytes(n)``, computed in blocks."""
    digest = hashlib.sha256()
    for chunk in pattern_chunks(n):
        digest.update(chunk)
    return digest.hexdigest()
