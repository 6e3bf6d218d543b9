"""Send small GET requests one after another on one kept-alive HTTPS connection; print the rate as JSON.

Usage: ka_loop.py HOST PORT COUNT [--server-name NAME] [--cafile FILE]
                  [--proxy HOST:PORT] [--header "Name: value"] [--path /]

With --proxy the connection is tunnelled with CONNECT HOST:PORT through that
HTTP proxy. WARMUP requests go first and are not timed. Every response must
have status 200. Output: ``{"requests": COUNT, "seconds": <wall time>}``.
Runs with the standard library only, inside a sandbox or on the host.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import ssl
import time

MAX_COUNT = 100_000
WARMUP = 20
TIMEOUT = 10.0


def open_tunnel(proxy: str, host: str, port: int) -> socket.socket:
    """Connect to an HTTP proxy and return the socket after a 200 response to CONNECT host:port."""
    proxy_host, _, proxy_port = proxy.rpartition(":")
    sock = socket.create_connection((proxy_host, int(proxy_port)), timeout=TIMEOUT)
    authority = f"{host}:{port}"
    sock.sendall(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        data = sock.recv(4096)
        if not data:
            raise SystemExit(f"the proxy closed the connection after {head[:200]!r}")
        head += data
    status_line = head.split(b"\r\n", 1)[0]
    if status_line.split()[1:2] != [b"200"]:
        raise SystemExit(f"CONNECT {authority} failed: {status_line[:200]!r}")
    return sock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("count", type=int)
    parser.add_argument("--server-name", help="SNI and Host header (default: HOST)")
    parser.add_argument("--cafile", help="CA certificates to verify the server with (default: system store)")
    parser.add_argument("--proxy", help="HTTP proxy HOST:PORT to tunnel through with CONNECT")
    parser.add_argument("--header", action="append", default=[], help='request header "Name: value" (repeatable)')
    parser.add_argument("--path", default="/")
    options = parser.parse_args()
    if not 0 < options.count <= MAX_COUNT:
        raise SystemExit(f"invalid count {options.count}: expected 1 to {MAX_COUNT}")

    headers = {}
    for header in options.header:
        name, separator, value = header.partition(":")
        if not separator:
            raise SystemExit(f"invalid header {header[:100]!r}: expected 'Name: value'")
        headers[name.strip()] = value.strip()

    name = options.server_name or options.host
    if options.proxy:
        raw = open_tunnel(options.proxy, options.host, options.port)
    else:
        raw = socket.create_connection((options.host, options.port), timeout=TIMEOUT)
    context = ssl.create_default_context(cafile=options.cafile)
    tls = context.wrap_socket(raw, server_hostname=name)
    connection = http.client.HTTPConnection(name, options.port, timeout=TIMEOUT)
    connection.sock = tls

    def one_request() -> None:
        connection.request("GET", options.path, headers=headers)
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise SystemExit(f"GET {options.path} returned status {response.status}: expected 200")
        if response.will_close:
            raise SystemExit("the server or proxy closed the kept-alive connection")

    for _ in range(WARMUP):
        one_request()
    started = time.perf_counter()
    for _ in range(options.count):
        one_request()
    seconds = time.perf_counter() - started
    connection.close()
    print(json.dumps({"requests": options.count, "seconds": seconds}))


if __name__ == "__main__":
    main()
