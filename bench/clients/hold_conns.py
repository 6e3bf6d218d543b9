"""Open COUNT TCP connections to an echo server, hold them open for a while, then close them.

Usage: hold_conns.py HOST PORT COUNT HOLD_SECONDS

Each connection sends one byte and reads its echo before the next one opens,
so a relay between client and server is fully set up for every connection.
Once all are open the script prints ``{"open": COUNT, "seconds": <time to
open them>}`` as one line, keeps them open for HOLD_SECONDS, and exits.
"""

from __future__ import annotations

import json
import resource
import socket
import sys
import time

MAX_COUNT = 5_000
MAX_HOLD_SECONDS = 60.0
TIMEOUT = 10.0


def main() -> None:
    if len(sys.argv) != 5:
        raise SystemExit(__doc__.splitlines()[2])
    host, port, count, hold = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    if not 0 < count <= MAX_COUNT or not 0 <= hold <= MAX_HOLD_SECONDS:
        raise SystemExit(f"invalid COUNT {count} or HOLD_SECONDS {hold}: "
                         f"expected 1 to {MAX_COUNT} and 0 to {MAX_HOLD_SECONDS:g}")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][4][:2]
    connections = []
    started = time.perf_counter()
    try:
        for _ in range(count):
            sock = socket.create_connection(address, timeout=TIMEOUT)
            connections.append(sock)
            sock.sendall(b"x")
            if sock.recv(1) != b"x":
                raise SystemExit("the echo server did not echo the byte sent")
        print(json.dumps({"open": len(connections), "seconds": time.perf_counter() - started}), flush=True)
        time.sleep(hold)
    finally:
        for sock in connections:
            sock.close()


if __name__ == "__main__":
    main()
