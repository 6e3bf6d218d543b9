"""Local servers, a test CA and repositories that sealbox's tests run against.

Start a world with ``TestWorld(directory).start()`` or as a context manager;
``python -m sealbox.testworld`` starts one by hand. docs/testworld.md describes
every server, the token, the CA and how names map to the servers.
"""

from __future__ import annotations

from .ca import TestCA
from .gittrace import TracedRequest, parse_curl_trace
from .pattern import pattern_bytes, pattern_sha256
from .processes import TestWorldError
from .recording import Recording
from .repogen import default_cache_dir, ensure_large_repo
from .world import CERT_NAMES, DEFAULT_TOKEN, Endpoint, TestWorld

__all__ = [
    "CERT_NAMES",
    "DEFAULT_TOKEN",
    "Endpoint",
    "Recording",
    "TestCA",
    "TestWorld",
    "TestWorldError",
    "TracedRequest",
    "default_cache_dir",
    "ensure_large_repo",
    "parse_curl_trace",
    "pattern_bytes",
    "pattern_sha256",
]
