"""The per-sandbox egress gateway: accepts every connection the sandbox makes.

For each TCP connection redirected into the gateway:
1. recover the original destination (SO_ORIGINAL_DST) and the name the
   sandbox resolved it from (fake DNS address, or an --add-host entry);
2. peek at the first bytes: TLS ClientHello (SNI, ALPN), plaintext HTTP
   (Host) or other;
3. check the policy by name before resolving, then again with the addresses
   the gateway is about to dial (DNS rebinding);
4. TLS whose SNI matches a secret's hosts is intercepted (http_session.py):
   the gateway dials the SNI by name itself, verifies the upstream
   certificate, and presents a leaf of the sandbox's CA to the client;
   plaintext HTTP goes through the same session so plaintext placeholders
   are caught; everything else is relayed byte for byte with splice(2).
DNS queries (UDP and TCP) are answered by the DnsResponder. Published ports
are served by ingress listeners on the host that connect into the namespace.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
import os
import socket
import ssl
import struct
import time
from pathlib import Path
from typing import Any, Sequence

from sealbox.gateway.audit import AuditLog
from sealbox.gateway.clienthello import Classification
from sealbox.gateway.fakeip import FakeAddressPool
from sealbox.gateway.http1_common import host_name, render_error_response
from sealbox.gateway.policy import Destination, PolicyEngine, Verdict
from sealbox.gateway.relay import RelayCounters, splice_relay
from sealbox.gateway.resolver import ResolutionError, Resolver
from sealbox.gateway.sockets import IPAddress, dial, original_destination, peek_classification, reset
from sealbox.netns.namespace import ListenerSockets, NetworkNamespace, connect_inside
from sealbox.netns.rules import GATEWAY_PORT
from sealbox.spec.network import Action, Direction, Network
from sealbox.spec.secret import Secret

log = logging.getLogger(__name__)

FIRST_BYTE_TIMEOUT = 0.5     # server-speaks-first protocols send nothing; classify them as "other" after this
PEEK_TIMEOUT = 10.0
CONNECT_TIMEOUT = 10.0
TLS_HANDSHAKE_TIMEOUT = 15.0
CLOSE_TIMEOUT = 5.0          # seconds a closing stream may wait for the peer before it is aborted
# Stream buffer limit: a reader pauses its transport at twice this, so small
# limits mean many pause/resume cycles on bulk transfers.
STREAM_LIMIT = 4 * 1024 * 1024
INTERCEPT_ALPN = ("http/1.1",)  # NOTE: HTTP/2 is not relayed yet, so intercepted connections offer http/1.1 only.


class Gateway:
    """Serves one sandbox's listener sockets from the supervisor's event loop."""

    def __init__(
        self,
        *,
        sandbox: str,
        network: Network,
        secrets: Sequence[Secret],
        upstream_ca: Sequence[str],
        ca: object | None,
        audit_path: Path,
        namespace: NetworkNamespace,
    ) -> None:
        self.sandbox = sandbox
        self.network = network
        self.secrets = tuple(secrets)
        self.namespace = namespace
        self.engine = PolicyEngine(network.policy)
        self.pool = FakeAddressPool()
        # SEALBOX_SYSTEM_RESOLVER=0 limits the gateway to the static maps (tests and air-gapped hosts).
        use_system = os.environ.get("SEALBOX_SYSTEM_RESOLVER", "1") != "0"
        self.resolver = Resolver(network.connect_to, dict(network.hosts), use_system=use_system)
        self._dns: Any = None  # DnsResponder, built at the first query (dnspython takes ~35 ms to import)
        self.add_host_names = {ipaddress.ip_address(address): name for name, address in network.add_hosts.items()}
        self.audit = AuditLog(audit_path, sandbox)
        self.connection_ids = itertools.count(1)
        self.substituter = None
        self.leaves = None
        if self.secrets and ca is not None:
            from sealbox.gateway.ca import LeafCache
            from sealbox.gateway.substitution import Substituter

            self.substituter = Substituter(self.secrets)
            self.leaves = LeafCache(ca)  # type: ignore[arg-type]
        self.upstream_ca = tuple(upstream_ca)
        # Loading the system trust store takes tens of milliseconds, so it is
        # built in a worker thread after start and awaited by the first interception.
        self._upstream_tls: asyncio.Future[ssl.SSLContext] | None = None
        self._servers: list[asyncio.AbstractServer] = []
        self._transports: list[asyncio.BaseTransport] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._listen_sockets: list[socket.socket] = []
        self._udp_ingress: list[Any] = []

    # -- lifecycle ---------------------------------------------------------------

    def _build_upstream_tls(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        for path in self.upstream_ca:
            context.load_verify_locations(cafile=path)
        context.set_alpn_protocols(list(INTERCEPT_ALPN))
        return context

    async def upstream_tls(self) -> ssl.SSLContext:
        """Return the client context for upstream TLS: the system trust store plus `upstream_ca`."""
        if self._upstream_tls is None:
            self._upstream_tls = asyncio.ensure_future(asyncio.to_thread(self._build_upstream_tls))
        return await asyncio.shield(self._upstream_tls)

    async def start(self, sockets: ListenerSockets) -> None:
        loop = asyncio.get_running_loop()
        # The DNS and HTTP modules are imported in a worker thread, off the sandbox's start-up path.
        loop.run_in_executor(None, _import_protocol_modules)
        if self.leaves is not None:
            self._upstream_tls = asyncio.ensure_future(asyncio.to_thread(self._build_upstream_tls))
        for sock in sockets.tcp:
            self._listen_sockets.append(sock)
            loop.add_reader(sock.fileno(), self._accept, sock)
        for sock in sockets.dns_udp:
            transport, _ = await loop.create_datagram_endpoint(lambda: _DnsUdpProtocol(self), sock=sock)
            self._transports.append(transport)
        for sock in sockets.dns_tcp:
            self._servers.append(await asyncio.start_server(self._serve_dns_tcp, sock=sock))
        for publish in self.network.ports:
            if publish.protocol == "udp":
                from sealbox.gateway.udp_ingress import UdpIngress

                ingress = UdpIngress(self.sandbox, publish, self.namespace, self.engine, self.audit, self.connection_ids)
                await loop.create_datagram_endpoint(lambda i=ingress: i, local_addr=(publish.host_address, publish.host_port))
                self._udp_ingress.append(ingress)
                continue
            server = await asyncio.start_server(
                lambda r, w, p=publish: self._serve_ingress(r, w, p), host=publish.host_address, port=publish.host_port
            )
            self._servers.append(server)
        log.info("sandbox %s: gateway serving", self.sandbox)

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        for sock in self._listen_sockets:
            loop.remove_reader(sock.fileno())
        for server in self._servers:
            server.close()
        for transport in self._transports:
            transport.close()
        for ingress in self._udp_ingress:
            ingress.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.audit.close()

    def _accept(self, listener: socket.socket) -> None:
        for _ in range(64):
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.error("sandbox %s: accept failed: %s", self.sandbox, exc)
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            task = asyncio.ensure_future(self._handle(sock))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    # -- egress ------------------------------------------------------------------

    def _name_for(self, address: IPAddress) -> str | None:
        return self.pool.name_for(address) or self.add_host_names.get(address)

    async def _handle(self, client: socket.socket) -> None:
        connection_id = next(self.connection_ids)
        started = time.monotonic()
        try:
            address, port = original_destination(client)
        except OSError as exc:
            log.error("sandbox %s: connection %d: no original destination: %s", self.sandbox, connection_id, exc)
            reset(client)
            return
        if port == GATEWAY_PORT and address.is_loopback:
            reset(client)  # a direct connection to the gateway port, not a redirected one
            return
        name = self._name_for(address)
        if name is None and self.pool.contains(address):
            self._deny(client, connection_id, None, address, port, "address from an expired DNS answer")
            return

        classification = await peek_classification(client, FIRST_BYTE_TIMEOUT, PEEK_TIMEOUT)
        sni = classification.client_hello.sni if classification.client_hello else None
        http_host = host_name(classification.http.host) if classification.http and classification.http.host else None
        names = tuple(dict.fromkeys(n for n in (name, sni, http_host) if n))
        event = {
            "conn": connection_id, "name": name, "ip": str(address), "port": port, "kind": classification.kind,
            "sni": sni, "alpn": list(classification.client_hello.alpn) if classification.client_hello else None,
            "host": http_host,
        }

        verdict = self.engine.check(Destination(names=names, port=port, protocol="tcp"))
        if not verdict.allowed:
            self._deny(client, connection_id, names, address, port, verdict.reason, verdict, classification)
            return

        intercept = classification.kind == "tls" and sni is not None and self._intercepts(sni, port)
        dial_name = sni if intercept else name
        if not intercept and address in self.add_host_names:
            # An --add-host name resolves to a literal address inside the sandbox; dial that address.
            dial_name = None
        try:
            if dial_name is not None:
                resolved = await self.resolver.resolve(dial_name, port)
                targets = [(item.address, item.port) for item in resolved]
                trusted = all(item.trusted for item in resolved)
            else:
                targets = [(address, port)]
                trusted = False
        except ResolutionError as exc:
            self.audit.write("upstream_error", error=str(exc), **event)
            await self._fail(client, classification, intercept, sni, 502, f"cannot resolve {dial_name}: {exc.reason}")
            return

        verdict = self.engine.check(Destination(
            names=names, addresses=tuple(a for a, _ in targets), trusted_addresses=trusted, port=port, protocol="tcp"
        ))
        if not verdict.allowed:
            self._deny(client, connection_id, names, address, port, verdict.reason, verdict, classification)
            return

        try:
            upstream = await dial(targets, CONNECT_TIMEOUT)
        except OSError as exc:
            self.audit.write("upstream_error", error=f"connect failed: {exc}", **event)
            await self._fail(client, classification, intercept, sni, 502, f"connecting to {dial_name or address} failed: {exc}")
            return

        self.audit.write("connect", verdict="allow", rule=verdict.rule_index,
                         upstream=f"{targets[0][0]}:{targets[0][1]}", intercept=intercept or None, **event)
        counters = RelayCounters()
        error: str | None = None
        try:
            if intercept:
                assert sni is not None
                await self._intercept(client, upstream, connection_id, sni, port, classification, counters)
            elif classification.kind == "http" and self.substituter is not None:
                await self._plain_http(client, upstream, connection_id, names[0], port, counters)
            else:
                await splice_relay(client, upstream, counters)
        except (OSError, ssl.SSLError, asyncio.TimeoutError) as exc:
            error = str(exc) or type(exc).__name__
        except Exception as exc:
            error = f"internal error: {exc}"
            log.exception("sandbox %s: connection %d failed", self.sandbox, connection_id)
        finally:
            client.close()
            upstream.close()
            self.audit.write("close", conn=connection_id, bytes_up=counters.upstream, bytes_down=counters.downstream,
                             duration_ms=round((time.monotonic() - started) * 1000, 3), error=error)

    def _intercepts(self, sni: str, port: int) -> bool:
        return self.leaves is not None and any(
            pattern.matches(sni, port) for secret in self.secrets for pattern in secret.allow_hosts
        )

    def _deny(self, client: socket.socket, connection_id: int, names: tuple[str, ...] | None, address: IPAddress,
              port: int, reason: str, verdict: Verdict | None = None, classification: Classification | None = None) -> None:
        self.audit.write("deny", conn=connection_id, names=list(names or ()), ip=str(address), port=port,
                         rule=verdict.rule_index if verdict else None, reason=reason)
        if classification is not None and classification.kind == "http":
            try:
                client.send(error_response(403, f"sealbox: connection denied by the network policy: {reason}"))
            except OSError:
                pass
            client.close()
            return
        reset(client)

    async def _fail(self, client: socket.socket, classification: Classification, intercept: bool, sni: str | None,
                    status: int, reason: str) -> None:
        """Report an upstream failure: a 502 over TLS for intercepted connections and plaintext HTTP, else a reset."""
        if intercept and sni is not None and self.leaves is not None:
            try:
                reader, writer = await self._accept_tls(client, sni, classification)
                writer.write(error_response(status, f"sealbox gateway: {reason}"))
                await writer.drain()
                await _close_streams(writer)
            except (OSError, ssl.SSLError, asyncio.TimeoutError):
                pass
            client.close()
        elif classification.kind == "http":
            try:
                client.send(error_response(status, f"sealbox gateway: {reason}"))
            except OSError:
                pass
            client.close()
        else:
            reset(client)

    async def _accept_tls(self, client: socket.socket, sni: str,
                          classification: Classification) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        assert self.leaves is not None
        offered = classification.client_hello.alpn if classification.client_hello else ()
        alpn = [protocol for protocol in INTERCEPT_ALPN if protocol in offered]
        context = self.leaves.server_context(sni, alpn)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=STREAM_LIMIT, loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        transport, _ = await loop.connect_accepted_socket(
            lambda: protocol, client, ssl=context, ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT
        )
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        return reader, writer

    async def _intercept(self, client: socket.socket, upstream: socket.socket, connection_id: int, sni: str, port: int,
                         classification: Classification, counters: RelayCounters) -> None:
        # NOTE: bulk throughput here is bound by asyncio's TLS record handling (about a third of direct on 2 cores).
        # Upstream first: nothing is sent to it before its certificate verifies for the SNI.
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                limit=STREAM_LIMIT, sock=upstream, ssl=await self.upstream_tls(), server_hostname=sni, ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT
            )
        except (ssl.SSLError, OSError, asyncio.TimeoutError) as exc:
            reason = _tls_failure(exc)
            self.audit.write("upstream_error", conn=connection_id, sni=sni, port=port, error=reason)
            await self._fail(client, classification, True, sni, 502, f"TLS to {sni} failed: {reason}")
            return
        try:
            client_reader, client_writer = await self._accept_tls(client, sni, classification)
        except BaseException:
            await _close_streams(upstream_writer)
            raise
        tls_object = upstream_writer.get_extra_info("ssl_object")
        self.audit.write("intercept", conn=connection_id, sni=sni, port=port,
                         alpn=tls_object.selected_alpn_protocol() if tls_object else None)
        from sealbox.gateway.http_session import HttpSession

        session = HttpSession(self.sandbox, connection_id, sni, port, True, self.secrets, self.substituter, self.audit,
                              counters)
        try:
            await session.run(client_reader, client_writer, upstream_reader, upstream_writer)
        finally:
            await _close_streams(client_writer, upstream_writer)

    async def _plain_http(self, client: socket.socket, upstream: socket.socket, connection_id: int, host: str,
                          port: int, counters: RelayCounters) -> None:
        client_reader, client_writer = await asyncio.open_connection(sock=client, limit=STREAM_LIMIT)
        upstream_reader, upstream_writer = await asyncio.open_connection(sock=upstream, limit=STREAM_LIMIT)
        from sealbox.gateway.http_session import HttpSession

        session = HttpSession(self.sandbox, connection_id, host, port, False, self.secrets, self.substituter,
                              self.audit, counters)
        try:
            await session.run(client_reader, client_writer, upstream_reader, upstream_writer)
        finally:
            await _close_streams(client_writer, upstream_writer)

    # -- DNS ---------------------------------------------------------------------

    def answer_dns(self, query: bytes) -> bytes | None:
        if self._dns is None:
            from sealbox.gateway.dns import DnsResponder

            self._dns = DnsResponder(self.engine, self.pool, add_hosts=dict(self.network.add_hosts))
        response, event = self._dns.respond(query)
        if event is not None:
            self.audit.write("dns", name=event.name, qtype=event.qtype, answer=list(event.answer),
                             verdict=event.verdict, rcode=event.rcode)
        return response

    async def _serve_dns_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        from sealbox.gateway.dns import TcpDnsFramer, frame_tcp

        framer = TcpDnsFramer()
        try:
            while True:
                data = await asyncio.wait_for(reader.read(65536), 30)
                if not data:
                    break
                for message in framer.feed(data):
                    response = self.answer_dns(message)
                    if response is not None:
                        writer.write(frame_tcp(response))
                await writer.drain()
        except (OSError, asyncio.TimeoutError, ValueError):
            pass
        finally:
            writer.close()

    # -- ingress -----------------------------------------------------------------

    async def _serve_ingress(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, publish: object) -> None:
        from sealbox.spec.network import PortPublish

        assert isinstance(publish, PortPublish)
        connection_id = next(self.connection_ids)
        peer = writer.get_extra_info("peername")
        peer_ip = ipaddress.ip_address(peer[0]) if peer else ipaddress.ip_address("127.0.0.1")
        verdict = self.engine.check(Destination(addresses=(peer_ip,), port=publish.sandbox_port, protocol="tcp",
                                                direction=Direction.INGRESS))
        if verdict.action is Action.DENY:
            self.audit.write("deny", conn=connection_id, direction="ingress", ip=str(peer_ip),
                             port=publish.sandbox_port, rule=verdict.rule_index, reason=verdict.reason)
            _reset_stream(writer)
            return
        counters = RelayCounters()
        started = time.monotonic()
        try:
            inside = await asyncio.to_thread(
                connect_inside, self.namespace, socket.AF_INET, ("127.0.0.1", publish.sandbox_port)
            )
        except OSError as exc:
            self.audit.write("upstream_error", conn=connection_id, direction="ingress", port=publish.sandbox_port,
                             error=str(exc))
            _reset_stream(writer)
            return
        self.audit.write("ingress", conn=connection_id, ip=str(peer_ip), host_port=publish.host_port,
                         port=publish.sandbox_port)
        from sealbox.gateway.relay import stream_relay

        inside_reader, inside_writer = await asyncio.open_connection(sock=inside)
        try:
            await stream_relay(reader, writer, inside_reader, inside_writer, counters)
        except OSError:
            pass
        finally:
            writer.close()
            inside_writer.close()
            self.audit.write("close", conn=connection_id, bytes_up=counters.upstream, bytes_down=counters.downstream,
                             duration_ms=round((time.monotonic() - started) * 1000, 3))


def error_response(status: int, reason: str) -> bytes:
    return render_error_response(status, (reason + "\n").encode())


def _import_protocol_modules() -> None:
    import sealbox.gateway.dns  # noqa: F401
    import sealbox.gateway.http_session  # noqa: F401


class _DnsUdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        response = self.gateway.answer_dns(data)
        if response is not None and self.transport is not None:
            self.transport.sendto(response, addr)


def _reset_stream(writer: asyncio.StreamWriter) -> None:
    """Abort a stream's connection with RST (SO_LINGER 0), because abort() alone sends FIN when nothing is unread."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()


async def _close_streams(*writers: asyncio.StreamWriter) -> None:
    """Close streams and wait until their transports release the sockets; abort those that take too long.

    The caller closes the socket objects afterwards. Closing a socket while its
    transport still shuts down (TLS waits for the peer's close_notify) leaves
    the descriptor registered in the event loop, and the next connection that
    gets the same descriptor number fails with RuntimeError.
    """
    for writer in writers:
        writer.close()
    for writer in writers:
        try:
            await asyncio.wait_for(writer.wait_closed(), CLOSE_TIMEOUT)
        except (OSError, ssl.SSLError, asyncio.TimeoutError):
            writer.transport.abort()


def _tls_failure(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verification failed: {exc.verify_message}"
    return str(exc) or type(exc).__name__
