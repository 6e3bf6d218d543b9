"""Byte-exact relays between two sockets, with half-close.

`splice_relay` moves bytes between two plain TCP sockets through a kernel
pipe with splice(2), so passthrough traffic is never copied into Python.
Once a direction has moved BULK_THRESHOLD bytes it continues in a thread of
its own that waits with poll(2): bulk transfers then avoid the event loop's
per-wait cost, while idle and short connections keep costing no thread.
`stream_relay` does the same for asyncio streams (used once TLS is
terminated). Each direction ends independently: end-of-file from one side
becomes a shutdown of the write side of the other, so half-closed
connections keep working, and the relay finishes when both directions have
ended or either side fails.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import select
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

PIPE_SIZE = 1024 * 1024
BULK_THRESHOLD = 8 * 1024 * 1024
SPLICE_CHUNK = 1024 * 1024
STREAM_CHUNK = 1024 * 1024
F_SETPIPE_SZ = 1031


@dataclass
class RelayCounters:
    """Bytes moved in each direction."""

    upstream: int = 0    # from the sandbox to upstream
    downstream: int = 0  # from upstream to the sandbox


async def _wait_readable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    future = loop.create_future()
    loop.add_reader(fd, lambda: future.done() or future.set_result(None))
    try:
        await future
    finally:
        loop.remove_reader(fd)


async def _wait_writable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    future = loop.create_future()
    loop.add_writer(fd, lambda: future.done() or future.set_result(None))
    try:
        await future
    finally:
        loop.remove_writer(fd)


async def _splice_direction(source: socket.socket, destination: socket.socket, count: Callable[[int], None]) -> None:
    """Move bytes from source to destination until end-of-file, passing each delivered amount to `count`.

    Counting as bytes are delivered keeps the totals right when the direction
    ends with a reset or another error.
    """
    loop = asyncio.get_running_loop()
    read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        try:
            fcntl.fcntl(write_end, F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            pass  # a smaller pipe only costs more iterations
        flags = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
        delivered = 0
        while True:
            if delivered >= BULK_THRESHOLD:
                await _continue_in_thread(source.fileno(), destination.fileno(), read_end, write_end, count)
                break
            try:
                moved = os.splice(source.fileno(), write_end, SPLICE_CHUNK, flags=flags)
            except BlockingIOError:
                await _wait_readable(loop, source.fileno())
                continue
            if moved == 0:
                break
            pending = moved
            while pending:
                try:
                    sent = os.splice(read_end, destination.fileno(), pending, flags=flags)
                    pending -= sent
                    delivered += sent
                    count(sent)
                except BlockingIOError:
                    await _wait_writable(loop, destination.fileno())
        try:
            destination.shutdown(socket.SHUT_WR)
        except OSError:
            pass
    finally:
        os.close(read_end)
        os.close(write_end)


class _Stopped(Exception):
    """The relay was cancelled while a thread was moving its bytes."""


def _splice_until_eof(source: int, destination: int, read_end: int, write_end: int, stop: int,
                      count: Callable[[int], None]) -> None:
    """Thread body: the splice loop of `_splice_direction`, waiting with poll(2) instead of the event loop."""
    flags = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
    readable = select.poll()
    readable.register(source, select.POLLIN)
    readable.register(stop, select.POLLIN)
    writable = select.poll()
    writable.register(destination, select.POLLOUT)
    writable.register(stop, select.POLLIN)
    while True:
        try:
            moved = os.splice(source, write_end, SPLICE_CHUNK, flags=flags)
        except BlockingIOError:
            if any(fd == stop for fd, _ in readable.poll()):
                raise _Stopped from None
            continue
        if moved == 0:
            return
        pending = moved
        while pending:
            try:
                sent = os.splice(read_end, destination, pending, flags=flags)
                pending -= sent
                count(sent)
            except BlockingIOError:
                if any(fd == stop for fd, _ in writable.poll()):
                    raise _Stopped from None


async def _continue_in_thread(source: int, destination: int, read_end: int, write_end: int,
                              count: Callable[[int], None]) -> None:
    """Run `_splice_until_eof` in a thread; on cancellation stop it and wait, so no descriptor is closed under it."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    stop_read, stop_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def body() -> None:
        try:
            _splice_until_eof(source, destination, read_end, write_end, stop_read, count)
        except BaseException as exc:  # handed to the event loop, which re-raises it
            loop.call_soon_threadsafe(lambda error=exc: done.done() or done.set_exception(error))
        else:
            loop.call_soon_threadsafe(lambda: done.done() or done.set_result(None))

    threading.Thread(target=body, name="sealbox-splice", daemon=True).start()
    try:
        await asyncio.shield(done)
    except asyncio.CancelledError:
        os.write(stop_write, b"x")
        try:
            await asyncio.shield(done)
        except (_Stopped, OSError):
            pass
        raise
    finally:
        os.close(stop_read)
        os.close(stop_write)


async def splice_relay(client: socket.socket, upstream: socket.socket, counters: RelayCounters) -> None:
    """Relay both directions between two non-blocking TCP sockets until both have ended."""

    def count_upstream(size: int) -> None:
        counters.upstream += size

    def count_downstream(size: int) -> None:
        counters.downstream += size

    async def forward() -> None:
        await _splice_direction(client, upstream, count_upstream)

    async def backward() -> None:
        await _splice_direction(upstream, client, count_downstream)

    await _gather_directions(forward(), backward())


async def stream_relay(
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    upstream_reader: asyncio.StreamReader,
    upstream_writer: asyncio.StreamWriter,
    counters: RelayCounters,
) -> None:
    """Relay both directions between two stream pairs (TLS or plain) until both have ended."""

    async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream: bool) -> None:
        while True:
            data = await reader.read(STREAM_CHUNK)
            if not data:
                break
            writer.write(data)
            if upstream:
                counters.upstream += len(data)
            else:
                counters.downstream += len(data)
            await writer.drain()
        await close_write(writer)

    await _gather_directions(
        pump(client_reader, upstream_writer, True), pump(upstream_reader, client_writer, False)
    )


async def close_write(writer: asyncio.StreamWriter) -> None:
    """Half-close where the transport can (plain TCP); TLS transports cannot, so they are left open."""
    try:
        if writer.can_write_eof():
            writer.write_eof()
    except (OSError, RuntimeError):
        pass


async def _gather_directions(*directions: object) -> None:
    tasks = [asyncio.ensure_future(direction) for direction in directions]  # type: ignore[arg-type]
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            error = task.exception()
            if error is not None and not _is_disconnect(error):
                raise error
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _is_disconnect(error: BaseException) -> bool:
    return isinstance(error, (ConnectionError, BrokenPipeError)) or (
        isinstance(error, OSError) and error.errno in (errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN)
    )
