"""mitmproxy addon for bench/secrets.py: swap a placeholder for a secret in request headers.

It does what sealbox's gateway does by default, for one host, so both
proxies do the same work per request. In every request header value sent to
BENCH_SWAP_HOST:BENCH_SWAP_PORT, BENCH_PLACEHOLDER is replaced by
BENCH_VALUE as soon as the request head has arrived, and the body streams
through untouched. The values come from the environment of mitmdump.
"""

from __future__ import annotations

import os

from mitmproxy import http

PLACEHOLDER = os.environ["BENCH_PLACEHOLDER"]
VALUE = os.environ["BENCH_VALUE"]
HOST = os.environ["BENCH_SWAP_HOST"]
PORT = int(os.environ["BENCH_SWAP_PORT"])


def requestheaders(flow: http.HTTPFlow) -> None:
    request = flow.request
    if request.host != HOST or request.port != PORT:
        return
    headers = request.headers
    for name in list(headers.keys()):
        values = headers.get_all(name)
        if any(PLACEHOLDER in value for value in values):
            headers.set_all(name, [value.replace(PLACEHOLDER, VALUE) for value in values])
