"""Open short connections one after another and print each one's setup time as JSON.

Usage: conn_loop.py {tls,tcp} HOST PORT COUNT [--server-name NAME] [--cafile FILE]

HOST is resolved once before the loop, so the times leave DNS out. Each
iteration times, in milliseconds:
- tls: connect, TLS handshake (SNI NAME, certificate checked against FILE or
  the default trust store), one ``GET /`` with ``Connection: close``, the
  whole response, close;
- tcp: connect, send one byte, read its echo, close.
Output: ``{"ms": [...], "seconds": <loop wall time>, "resolve_ms": <lookup>}``.
Runs with the standard library only, inside a sandbox or on the host.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import ssl
import time

MAX_COUNT = 10_000
TIMEOUT = 10.0


def tls_round_trip(address: tuple, name: str, context: ssl.SSLContext) -> None:
    raw = socket.create_connection(address[:2], timeout=TIMEOUT)
    with context.wrap_socket(raw, server_hostname=name) as tls:
        connection = http.client.HTTPConnection(name, timeout=TIMEOUT)
        connection.sock = tls
        connection.request("GET", "/", headers={"Connection": "close"})
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise SystemExit(f"GET / returned status {response.status}: expected 200")
        connection.close()


def tcp_round_trip(address: tuple) -> None:
    with socket.create_connection(address[:2], timeout=TIMEOUT) as sock:
        sock.sendall(b"x")
        if sock.recv(1) != b"x":
            raise SystemExit("the echo server did not echo the byte sent")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("tls", "tcp"))
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("count", type=int)
    parser.add_argument("--server-name", help="SNI and Host header (default: HOST)")
    parser.add_argument("--cafile", help="CA certificates to verify the server with (default: system store)")
    options = parser.parse_args()
    if not 0 < options.count <= MAX_COUNT:
        raise SystemExit(f"invalid count {options.count}: expected 1 to {MAX_COUNT}")

    started = time.perf_counter()
    address = socket.getaddrinfo(options.host, options.port, type=socket.SOCK_STREAM)[0][4]
    resolve_ms = (time.perf_counter() - started) * 1000
    name = options.server_name or options.host
    context = ssl.create_default_context(cafile=options.cafile)

    times = []
    loop_started = time.perf_counter()
    for _ in range(options.count):
        started = time.perf_counter()
        if options.mode == "tls":
            tls_round_trip(address, name, context)
        else:
            tcp_round_trip(address)
        times.append((time.perf_counter() - started) * 1000)
    seconds = time.perf_counter() - loop_started
    print(json.dumps({"ms": times, "seconds": seconds, "resolve_ms": resolve_ms}))


if __name__ == "__main__":
    main()
