"""The test world's Python servers, run as one child process with asyncio.

``python -m sealbox.testworld.servers CONFIG.json`` serves on listening sockets
that the parent created and passed as inherited file descriptors, so every
port is fixed before this process starts. The config names each listener's
fd, kind (``http``, ``canary`` or ``echo``), TLS certificate and ALPN list, and
the path of a unix control socket. When every server is accepting, the process
prints ``{"ready": true}`` as one line on stdout. SIGTERM or SIGINT stops it.

Control protocol (one request per connection): the client sends one JSON line.
``{"op": "recordings", "server": NAME}`` returns one JSON line
``{"recordings": [{..., "size": N}, ...]}`` followed by the kept bytes of each
recording, concatenated in the same order. ``{"op": "clear"}`` and
``{"op": "ping"}`` return ``{"ok": true}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import socket
import ssl
import sys
import weakref
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

from .app import SERVER_NAME, RequestHandler, Response
from .http1 import NEED_DATA, BodyData, ConnectionClosed, EndOfRequest, ProtocolError, RequestHead, RequestParser
from .pattern import pattern_chunks
from .recording import ConnectionRecord, RecordingStore

logger = logging.getLogger(__name__)

READ_SIZE = 1 << 20
STREAM_LIMIT = 4 << 20
WRITE_HIGH_WATER = 8 << 20
H2_WINDOW = 16 << 20
H2_MAX_WINDOW = 2**31 - 1

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def _ssl_context(
    chain: str, key: str, alpn: list[str], sni_names: weakref.WeakKeyDictionary[Any, str]
) -> ssl.SSLContext:
    """Build a server TLS context that remembers the SNI of each handshake."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(chain, key)
    if alpn:
        context.set_alpn_protocols(alpn)

    def remember_sni(ssl_object: Any, server_name: str | None, _context: ssl.SSLContext) -> None:
        if server_name is not None:
            sni_names[ssl_object] = server_name

    context.sni_callback = remember_sni
    return context


def _status_line(response: Response) -> bytes:
    return b"HTTP/1.1 %d %s\r\n" % (response.status, response.reason)


async def _write_http1_response(
    writer: asyncio.StreamWriter, head: RequestHead, response: Response, keep_alive: bool
) -> None:
    """Send a response on an HTTP/1.1 connection, streaming pattern bodies."""
    lines = [_status_line(response), b"server: " + SERVER_NAME + b"\r\n"]
    lines.extend(name + b": " + value + b"\r\n" for name, value in response.headers)
    lines.append(b"content-length: %d\r\n" % response.content_length)
    if not keep_alive:
        lines.append(b"connection: close\r\n")
    lines.append(b"\r\n")
    if head.method == b"HEAD":
        writer.write(b"".join(lines))
        await writer.drain()
        return
    if response.pattern_length is None:
        lines.append(response.body)
        writer.write(b"".join(lines))
        await writer.drain()
        return
    writer.write(b"".join(lines))
    for chunk in pattern_chunks(response.pattern_length):
        writer.write(chunk)
        await writer.drain()


async def _read_into(reader: asyncio.StreamReader, record: ConnectionRecord) -> bytes:
    data = await reader.read(READ_SIZE)
    if data:
        record.add(data)
    return data


async def _serve_http1(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, record: ConnectionRecord) -> None:
    """Serve the recording routes over HTTP/1.1 until the client closes or sends ``Connection: close``."""
    parser = RequestParser()
    head: RequestHead | None = None
    handler: RequestHandler | None = None
    try:
        while True:
            event = parser.next_event()
            if event is NEED_DATA:
                data = await _read_into(reader, record)
                if data:
                    parser.feed(data)
                else:
                    parser.feed_eof()
            elif isinstance(event, ConnectionClosed):
                return
            elif isinstance(event, RequestHead):
                head = event
                handler = RequestHandler(head.method, head.target, "HTTP/" + head.version.decode(), head.headers)
                if head.expects_continue and head.has_body:
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                    await writer.drain()
            elif isinstance(event, BodyData):
                assert handler is not None
                handler.receive(event.data)
            elif isinstance(event, EndOfRequest):
                assert head is not None and handler is not None
                response = handler.finish(event.trailers)
                await _write_http1_response(writer, head, response, head.keep_alive)
                if not head.keep_alive:
                    return
    except ProtocolError as error:
        logger.info("connection %d: invalid HTTP/1.1 request: %s", record.connection_id, error)
        body = f"invalid request: {error}\n".encode()
        writer.write(
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
        )
        await writer.drain()


class _H2Server:
    """Serve the recording routes over HTTP/2 on one connection, with the h2 library."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, record: ConnectionRecord) -> None:
        self.reader = reader
        self.writer = writer
        self.record = record
        config = h2.config.H2Configuration(client_side=False, header_encoding=None)
        self.conn = h2.connection.H2Connection(config=config)
        self.handlers: dict[int, RequestHandler] = {}
        self.trailers: dict[int, tuple[tuple[bytes, bytes], ...]] = {}
        self.senders: dict[int, asyncio.Task[None]] = {}
        self.window_changed = asyncio.Event()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.writer.write(data)

    async def run(self) -> None:
        self.conn.initiate_connection()
        self.conn.update_settings(
            {
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: H2_WINDOW,
                h2.settings.SettingCodes.MAX_FRAME_SIZE: 1 << 20,
            }
        )
        self.conn.increment_flow_control_window(H2_MAX_WINDOW - 65535)
        self.flush()
        try:
            while True:
                data = await _read_into(self.reader, self.record)
                if not data:
                    return
                try:
                    events = self.conn.receive_data(data)
                except h2.exceptions.ProtocolError as error:
                    logger.info("connection %d: invalid HTTP/2 data: %s", self.record.connection_id, error)
                    self.flush()
                    return
                for event in events:
                    if not self.handle(event):
                        self.flush()
                        return
                self.flush()
                await self.writer.drain()
        finally:
            for task in self.senders.values():
                task.cancel()

    def handle(self, event: h2.events.Event) -> bool:
        """Handle one h2 event; return False when the connection ended."""
        if isinstance(event, h2.events.RequestReceived):
            headers = tuple((bytes(name), bytes(value)) for name, value in event.headers)
            pseudo = dict(headers)
            self.handlers[event.stream_id] = RequestHandler(
                pseudo.get(b":method", b""), pseudo.get(b":path", b""), "HTTP/2", headers
            )
        elif isinstance(event, h2.events.DataReceived):
            handler = self.handlers.get(event.stream_id)
            if handler is not None:
                handler.receive(event.data)
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.TrailersReceived):
            self.trailers[event.stream_id] = tuple((bytes(name), bytes(value)) for name, value in event.headers)
        elif isinstance(event, h2.events.StreamEnded):
            self.respond(event.stream_id)
        elif isinstance(event, h2.events.StreamReset):
            self.handlers.pop(event.stream_id, None)
            task = self.senders.pop(event.stream_id, None)
            if task is not None:
                task.cancel()
        elif isinstance(event, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
            self.window_changed.set()
        elif isinstance(event, h2.events.ConnectionTerminated):
            return False
        return True

    def respond(self, stream_id: int) -> None:
        handler = self.handlers.pop(stream_id, None)
        if handler is None:
            return
        response = handler.finish(self.trailers.pop(stream_id, ()))
        headers = [(b":status", b"%d" % response.status), (b"server", SERVER_NAME)]
        headers.extend(response.headers)
        headers.append((b"content-length", b"%d" % response.content_length))
        if handler.method == b"HEAD" or response.content_length == 0:
            self.conn.send_headers(stream_id, headers, end_stream=True)
            return
        self.conn.send_headers(stream_id, headers)
        self.senders[stream_id] = asyncio.create_task(self.send_body(stream_id, response))

    async def send_body(self, stream_id: int, response: Response) -> None:
        """Send a response body as flow control allows, in frames of the peer's maximum size."""
        if response.pattern_length is None:
            chunks = iter([memoryview(response.body)])
        else:
            chunks = pattern_chunks(response.pattern_length)
        remaining = response.content_length
        try:
            for chunk in chunks:
                while chunk:
                    window = self.conn.local_flow_control_window(stream_id)
                    if window <= 0:
                        self.window_changed.clear()
                        await self.window_changed.wait()
                        continue
                    size = min(window, len(chunk))
                    piece, chunk = chunk[:size], chunk[size:]
                    frame_size = self.conn.max_outbound_frame_size
                    for start in range(0, size, frame_size):
                        frame = piece[start : start + frame_size]
                        remaining -= len(frame)
                        self.conn.send_data(stream_id, bytes(frame), end_stream=remaining == 0)
                    self.flush()
                    await self.writer.drain()
        except h2.exceptions.StreamClosedError:
            pass
        finally:
            self.senders.pop(stream_id, None)


async def _serve_canary(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, record: ConnectionRecord) -> None:
    """Record every byte and respond to each HTTP/1.1 request with 200 ``ok``.

    After bytes that are not HTTP/1.1, it responds with 200 once, with
    ``connection: close``, and then only records until the client closes.
    """
    parser: RequestParser | None = RequestParser()
    head: RequestHead | None = None
    ok = b"HTTP/1.1 200 OK\r\nserver: %s\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n" % SERVER_NAME
    while True:
        data = await _read_into(reader, record)
        if not data:
            return
        if parser is None:
            continue
        try:
            parser.feed(data)
            while (event := parser.next_event()) is not NEED_DATA:
                if isinstance(event, RequestHead):
                    head = event
                    if head.expects_continue and head.has_body:
                        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                elif isinstance(event, EndOfRequest):
                    if head is not None and head.keep_alive:
                        writer.write(ok + b"\r\nok")
                    else:
                        writer.write(ok + b"connection: close\r\n\r\nok")
                        await writer.drain()
                        return
        except ProtocolError as error:
            logger.info("canary connection %d: not HTTP/1.1 (%s); recording only", record.connection_id, error)
            writer.write(ok + b"connection: close\r\n\r\nok")
            parser = None
        await writer.drain()


async def _serve_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Echo every byte; after the client's FIN, finish sending and close."""
    while True:
        data = await reader.read(READ_SIZE)
        if not data:
            break
        writer.write(data)
        await writer.drain()


def _make_handler(
    kind: str, name: str, tls: bool, store: RecordingStore, sni_names: weakref.WeakKeyDictionary[Any, str]
) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        try:
            if kind == "echo":
                await _serve_echo(reader, writer)
                return
            ssl_object = writer.get_extra_info("ssl_object")
            sni = sni_names.get(ssl_object) if ssl_object is not None else None
            alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
            record = store.open(name, tls=tls, sni=sni, alpn=alpn)
            logger.debug("%s: connection %d, sni=%s, alpn=%s", name, record.connection_id, sni, alpn)
            if kind == "canary":
                await _serve_canary(reader, writer, record)
            elif alpn == "h2":
                await _H2Server(reader, writer, record).run()
            else:
                await _serve_http1(reader, writer, record)
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError) as error:
            logger.debug("%s: connection ended: %r", name, error)
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, ssl.SSLError):
                pass

    return handle


async def _serve_control(store: RecordingStore, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        request = json.loads(await reader.readline())
        op = request.get("op")
        if op == "recordings":
            snapshots = store.snapshot(str(request.get("server")))
            header = [
                {
                    "connection_id": item.connection_id,
                    "tls": item.tls,
                    "sni": item.sni,
                    "alpn": item.alpn,
                    "received_total": item.received_total,
                    "received_sha256": item.received_sha256,
                    "size": len(item.received),
                }
                for item in snapshots
            ]
            writer.write(json.dumps({"recordings": header}).encode() + b"\n")
            for item in snapshots:
                writer.write(item.received)
                await writer.drain()
        elif op == "clear":
            store.clear()
            writer.write(b'{"ok": true}\n')
        elif op == "ping":
            writer.write(b'{"ok": true}\n')
        else:
            error = {"error": f"unknown op {op!r}: expected recordings, clear or ping"}
            writer.write(json.dumps(error).encode() + b"\n")
        await writer.drain()
    finally:
        writer.close()


async def run(config: dict[str, Any]) -> None:
    """Serve every listener in config until SIGTERM or SIGINT."""
    store = RecordingStore()
    sni_names: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
    servers: list[asyncio.AbstractServer] = []
    for name, listener in config["listeners"].items():
        sock = socket.socket(fileno=int(listener["fd"]))
        context = None
        if listener.get("cert"):
            chain, key = listener["cert"]
            context = _ssl_context(chain, key, list(listener.get("alpn", [])), sni_names)
        handler = _make_handler(listener["kind"], name, context is not None, store, sni_names)
        server = await asyncio.start_server(handler, sock=sock, ssl=context, limit=STREAM_LIMIT)
        servers.append(server)
        logger.info("serving %s (%s) on %s", name, listener["kind"], sock.getsockname())

    control = await asyncio.start_unix_server(
        lambda reader, writer: _serve_control(store, reader, writer), path=config["control"]
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    sys.stdout.write(json.dumps({"ready": True}) + "\n")
    sys.stdout.flush()
    await stop.wait()
    logger.info("stopping")
    control.close()
    for listening in servers:
        listening.close()


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: python -m sealbox.testworld.servers CONFIG.json\n")
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config = json.loads(Path(argv[1]).read_text())
    asyncio.run(run(config))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
