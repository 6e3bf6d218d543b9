"""Parse the request heads that curl-based clients trace with ``GIT_TRACE_CURL``.

With ``GIT_TRACE_CURL=<file>`` (and ``GIT_TRACE_CURL_NO_DATA=1``) git writes
one line per header it sends, ``=> Send header: <line>``, after a timestamp
and source location prefix. An empty header line ends each request head.
Authorization values appear as ``<redacted>`` unless
``GIT_TRACE_REDACT=0``. Only HTTP/1.1 heads are parsed: HTTP/2 requests are
traced as pseudo-headers and have no request line.
"""

from __future__ import annotations

from dataclasses import dataclass

_SEND_HEADER = "=> Send header:"


@dataclass(frozen=True)
class TracedRequest:
    """One request head as the client sent it."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...]

    def header(self, name: str) -> str | None:
        """Return the first value of the header called name (case-insensitive)."""
        lowered = name.lower()
        for header_name, value in self.headers:
            if header_name.lower() == lowered:
                return value
        return None


def parse_curl_trace(text: str) -> list[TracedRequest]:
    """Return the HTTP/1.1 request heads in a ``GIT_TRACE_CURL`` trace, in order."""
    requests: list[TracedRequest] = []
    current: tuple[str, str] | None = None
    headers: list[tuple[str, str]] = []
    for line in text.splitlines():
        position = line.find(_SEND_HEADER)
        if position < 0:
            continue
        content = line[position + len(_SEND_HEADER) :].strip()
        if current is None:
            parts = content.split(" ")
            if len(parts) == 3 and parts[2].startswith("HTTP/"):
                current = (parts[0], parts[1])
                headers = []
            continue
        if content == "":
            requests.append(TracedRequest(current[0], current[1], tuple(headers)))
            current = None
            continue
        name, _, value = content.partition(":")
        headers.append((name.strip(), value.strip()))
    return requests
