"""One HTTP/1.1 connection through the gateway, with placeholder substitution.

Used for intercepted TLS connections (after both TLS handshakes) and for
plaintext HTTP. Client bytes go through the sans-IO RequestRelay, whose head
callback here checks the Host header, substitutes placeholders and blocks
violations. Upstream bytes are relayed unchanged, and a ResponseTracker
observes them for the status codes of the audit log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from sealbox.gateway.audit import AuditLog
from sealbox.gateway.http1_common import Tunnel, host_name, render_error_response
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
)
from sealbox.gateway.http1_response import ResponseEnded, ResponseError, ResponseStarted, ResponseTracker
from sealbox.gateway.relay import STREAM_CHUNK, RelayCounters, close_write
from sealbox.gateway.substitution import Substituter
from sealbox.spec.secret import Secret

log = logging.getLogger(__name__)

PIPELINE_DRAIN_TIMEOUT = 5.0
_AUTHORIZATION_HEADERS = (b"authorization", b"proxy-authorization")


@dataclass
class _PendingRequest:
    method: str
    path: str
    started: float
    substituted: tuple[str, ...]
    status: int | None = None
    body_bytes: int = 0
    request_body_bytes: int | None = None


@dataclass
class HttpSession:
    """State of one intercepted or plaintext HTTP/1.1 connection."""

    sandbox: str
    connection_id: int
    host: str                 # the SNI (TLS) or the name the connection was attributed to (plaintext)
    port: int
    tls: bool
    secrets: tuple[Secret, ...]
    substituter: Substituter | None
    audit: AuditLog
    counters: RelayCounters = field(default_factory=RelayCounters)
    pending: deque[_PendingRequest] = field(default_factory=deque)
    _last_request: _PendingRequest | None = None  # the request whose body is being relayed
    _placeholders: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        self._placeholders = tuple(secret.placeholder.encode() for secret in self.secrets if secret.placeholder)

    # -- the head callback -------------------------------------------------------

    def on_head(self, head: RequestHead) -> Forward | Reject:
        host_header = head.get(b"host")
        if host_header is not None and self.tls:
            requested = host_name(host_header.decode("latin-1"))
            if requested != self.host:
                self.audit.write("violation", conn=self.connection_id, reason="host mismatch",
                                 sni=self.host, host=requested, method=head.method.decode("latin-1"))
                return Reject(421, f"Misdirected Request: Host header {requested!r} does not match the TLS server name {self.host!r}")

        if self.substituter is None:
            self._note_request(head, ())
            return Forward(head.raw)

        values: dict[int, bytes] = {}
        substituted: list[str] = []
        violations: list[str] = []
        for index, header in enumerate(head.headers):
            # Header values carry placeholders literally, or base64-encoded in Basic credentials.
            if header.name.lower() not in _AUTHORIZATION_HEADERS and not any(
                placeholder in header.value for placeholder in self._placeholders
            ):
                continue
            rewrite = self.substituter.header_value(header.name, header.value, self.host, self.port, tls=self.tls)
            if rewrite.substituted:
                values[index] = rewrite.data
            substituted += rewrite.substituted
            violations += rewrite.violations
        target_rewrite = self.substituter.target(head.target, self.host, self.port, tls=self.tls)
        substituted += target_rewrite.substituted
        violations += target_rewrite.violations

        if violations:
            blocking = [name for name in dict.fromkeys(violations) if self._blocks(name)]
            for name in dict.fromkeys(violations):
                self.audit.write("violation", conn=self.connection_id, secret=name, host=self.host, port=self.port,
                                 method=head.method.decode("latin-1"), path=_path(head.target),
                                 action="block" if name in blocking else "log")
            if blocking:
                names = ", ".join(blocking)
                return Reject(403, f"sealbox blocked this request: it carries the placeholder of secret {names}, "
                                   f"which is not allowed for host {self.host}")

        body_rewrite = None
        if self._body_injection_possible():
            encoding = head.get(b"content-encoding")

            def body_rewrite(body: bytes) -> bytes:
                assert self.substituter is not None
                result = self.substituter.body(body, encoding, self.host, self.port, tls=self.tls)
                if result.substituted:
                    self.audit.write("substitute", conn=self.connection_id, host=self.host, place="body",
                                     secrets=list(result.substituted))
                return result.data

        unique = tuple(dict.fromkeys(substituted))
        if unique:
            self.audit.write("substitute", conn=self.connection_id, host=self.host, secrets=list(unique),
                             method=head.method.decode("latin-1"), path=_path(head.target))
        self._note_request(head, unique)
        if not values and target_rewrite.data is head.target:
            return Forward(head.raw, body_rewrite)
        new_target = None if target_rewrite.data is head.target else target_rewrite.data
        return Forward(head.rebuild(target=new_target, values=values), body_rewrite)

    def _blocks(self, name: str) -> bool:
        return next((secret.on_violation for secret in self.secrets if secret.name == name), "block") == "block"

    def _body_injection_possible(self) -> bool:
        return any(
            secret.inject.body and any(p.matches(self.host, self.port) for p in secret.allow_hosts)
            and (self.tls or secret.allow_plaintext)
            for secret in self.secrets
        )

    def _note_request(self, head: RequestHead, substituted: tuple[str, ...]) -> None:
        # Record the target as the client sent it, so it contains placeholders, never values.
        request = _PendingRequest(head.method.decode("latin-1"), _path(head.target), time.monotonic(), substituted)
        self.pending.append(request)
        self._last_request = request

    # -- the relay ---------------------------------------------------------------

    async def run(
        self,
        client_reader: asyncio.StreamReader,
        client_writer: asyncio.StreamWriter,
        upstream_reader: asyncio.StreamReader,
        upstream_writer: asyncio.StreamWriter,
    ) -> None:
        relay = RequestRelay(self.on_head)
        tracker = ResponseTracker()

        async def client_to_upstream() -> None:
            tunnel = False
            while True:
                data = await client_reader.read(STREAM_CHUNK)
                if tunnel:
                    if not data:
                        break
                    upstream_writer.write(data)
                    self.counters.upstream += len(data)
                    await upstream_writer.drain()
                    continue
                events = relay.receive_data(data) if data else relay.receive_eof()
                for event in events:
                    if isinstance(event, SendUpstream):
                        upstream_writer.write(event.data)
                        self.counters.upstream += len(event.data)
                    elif isinstance(event, RequestStarted):
                        tracker.expect(event.head.method)
                    elif isinstance(event, RequestEnded):
                        if self._last_request is not None:
                            self._last_request.request_body_bytes = event.body_bytes
                    elif isinstance(event, RespondAndClose):
                        self.audit.write("reject", conn=self.connection_id, host=self.host, status=event.status,
                                         reason=event.reason)
                        await upstream_writer.drain()
                        # Responses to earlier pipelined requests reach the client first.
                        await _wait_until(tracker_done, lambda: not self.pending, PIPELINE_DRAIN_TIMEOUT)
                        client_writer.write(render_error_response(event.status, (event.reason + "\n").encode()))
                        await client_writer.drain()
                        raise _Closed
                    elif isinstance(event, BodyNotRewritten):
                        log.warning("sandbox %s: connection %d: request body not rewritten: %s",
                                    self.sandbox, self.connection_id, event.reason)
                        self.audit.write("body_not_rewritten", conn=self.connection_id, host=self.host,
                                         reason=event.reason)
                    elif isinstance(event, Tunnel):
                        tunnel = True
                    elif isinstance(event, EndOfStream):
                        pass
                await upstream_writer.drain()
                if not data:
                    break
            await close_write(upstream_writer)

        tracker_done = asyncio.Condition()

        async def upstream_to_client() -> None:
            observing = True
            while True:
                data = await upstream_reader.read(STREAM_CHUNK)
                if observing:
                    events = tracker.receive_data(data) if data else tracker.receive_eof()
                    for event in events:
                        if isinstance(event, ResponseStarted) and not event.informational and self.pending:
                            self.pending[0].status = event.status
                        elif isinstance(event, ResponseEnded) and self.pending:
                            request = self.pending.popleft()
                            request.body_bytes = event.body_bytes
                            self._audit_request(request)
                        elif isinstance(event, (ResponseError, Tunnel)):
                            observing = False
                    async with tracker_done:
                        tracker_done.notify_all()
                if not data:
                    break
                client_writer.write(data)
                self.counters.downstream += len(data)
                await client_writer.drain()
            if not client_writer.can_write_eof():
                # TLS has no half-close, so the client sees upstream's end only when the session closes its connection.
                raise _Closed
            await close_write(client_writer)

        tasks = [asyncio.ensure_future(client_to_upstream()), asyncio.ensure_future(upstream_to_client())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                error = task.exception()
                if error is not None and not isinstance(error, (_Closed, ConnectionError, OSError)):
                    raise error
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for request in self.pending:
                self._audit_request(request)
            self.pending.clear()

    def _audit_request(self, request: _PendingRequest) -> None:
        self.audit.write(
            "request",
            conn=self.connection_id,
            host=self.host,
            method=request.method,
            path=request.path,
            status=request.status,
            secrets=list(request.substituted) or None,
            request_body_bytes=request.request_body_bytes,
            response_body_bytes=request.body_bytes,
            duration_ms=round((time.monotonic() - request.started) * 1000, 3),
        )


class _Closed(Exception):
    """The session sent the client its own response and is over."""


async def _wait_until(condition: asyncio.Condition, predicate: Any, timeout: float) -> None:
    async with condition:
        try:
            await asyncio.wait_for(condition.wait_for(predicate), timeout)
        except asyncio.TimeoutError:
            pass


def _path(target: bytes) -> str:
    """Return the path of a request target without its query, which may carry placeholders."""
    return target.split(b"?", 1)[0].decode("latin-1")[:512]


def error_response(status: int, reason: str) -> bytes:
    return render_error_response(status, (reason + "\n").encode())
