"""HTTP/1.1 framing for intercepted connections: one import for both directions.

RequestRelay (http1_request) parses client requests strictly, lets the caller
rewrite heads and relays bodies byte for byte. ResponseTracker (http1_response)
observes upstream responses for their status and boundaries. Shared limits,
errors and the chunked reader live in http1_common.
"""

from __future__ import annotations

from sealbox.gateway.http1_common import (
    ChunkedReader,
    Header,
    HttpProtocolError,
    Limits,
    Tunnel,
    render_error_response,
)
from sealbox.gateway.http1_request import (
    BodyNotRewritten,
    EndOfStream,
    Forward,
    Reject,
    RequestEnded,
    RequestHead,
    RequestRelay,
    RequestStarted,
    RespondAndClose,
    SendUpstream,
    parse_request_head,
)
from sealbox.gateway.http1_response import (
    ResponseEnded,
    ResponseError,
    ResponseStarted,
    ResponseTracker,
)

__all__ = [
    "BodyNotRewritten",
    "ChunkedReader",
    "EndOfStream",
    "Forward",
    "Header",
    "HttpProtocolError",
    "Limits",
    "Reject",
    "RequestEnded",
    "RequestHead",
    "RequestRelay",
    "RequestStarted",
    "RespondAndClose",
    "ResponseEnded",
    "ResponseError",
    "ResponseStarted",
    "ResponseTracker",
    "SendUpstream",
    "Tunnel",
    "parse_request_head",
    "render_error_response",
]
