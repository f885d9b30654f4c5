"""A TCP proxy on loopback that adds a fixed delay per round trip (the kernel here has no netem).

Why: every read figure so far came from local files, where decode dominates. Earth Search and
Planetary Computer serve COGs over HTTPS from another region or continent, where each request
costs a network round trip (20–100 ms) and a reader that issues its range requests one after
another is latency-bound. This proxy puts that cost in front of a local HTTP server so readers
can be compared under it.

Model: every chunk the client sends (an HTTP request) reaches the server ``delay`` later; bytes
from the server flow back at once. A request/response exchange on an open connection therefore
costs one extra ``delay`` (one round trip), and a new connection one more (its TCP handshake,
charged before its first byte is forwarded). Chunks keep their order: each is delivered at its
own arrival time plus ``delay``, so pipelined requests overlap as on a real link instead of
queueing delays. Bandwidth is not limited (loopback), and TLS handshakes are not modelled, so
real HTTPS costs at least this much.

Usage: ``python infra/local/latency_proxy.py --listen 127.0.0.1:8089 --upstream
127.0.0.1:8088 --delay-ms 20`` (pure standard library, runs in any Python ≥ 3.11).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time

CHUNK = 256 * 1024


def _hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host or "127.0.0.1", int(port)


async def _delayed_pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float, start: float
) -> None:
    """Forward ``reader`` → ``writer``, each chunk ``delay`` seconds after it arrived (or after
    ``start``, when the connection's handshake completes, if later), in order; a reader task and
    a writer task so chunks in flight overlap."""
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    async def read() -> None:
        while True:
            data = await reader.read(CHUNK)
            await queue.put((max(loop.time(), start) + delay, data))
            if not data:
                return

    async def write() -> None:
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                with contextlib.suppress(OSError):
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    reading = asyncio.create_task(read())
    try:
        await write()
    finally:
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError, OSError):
            await reading


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(CHUNK):
        writer.write(data)
        await writer.drain()
    with contextlib.suppress(OSError):
        writer.write_eof()


class LatencyProxy:
    """Accepts on ``listen`` and relays every connection to ``upstream`` with ``delay_s``."""

    def __init__(self, upstream: tuple[str, int], delay_s: float) -> None:
        self.upstream = upstream
        self.delay = delay_s
        self.connections = 0

    async def handle(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        # the handshake's round trip: nothing reaches the server before it would have arrived
        start = asyncio.get_running_loop().time() + self.delay
        try:
            s_reader, s_writer = await asyncio.open_connection(*self.upstream)
        except OSError as exc:
            print(f"latency_proxy: upstream {self.upstream} refused: {exc}", file=sys.stderr)
            c_writer.close()
            return
        up = asyncio.create_task(_delayed_pipe(c_reader, s_writer, self.delay, start))
        down = asyncio.create_task(_pipe(s_reader, c_writer))
        try:
            # a half-close (EOF one way) lets the other direction finish; a reset ends both
            done, pending = await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
            if pending and not any(t.exception() for t in done):
                await asyncio.wait(pending)
        finally:
            for task in (up, down):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, OSError, ConnectionError):
                    await task
            for w in (s_writer, c_writer):
                w.close()
                with contextlib.suppress(OSError, ConnectionError):
                    await w.wait_closed()


async def serve(listen: tuple[str, int], upstream: tuple[str, int], delay_s: float) -> None:
    proxy = LatencyProxy(upstream, delay_s)
    server = await asyncio.start_server(proxy.handle, *listen, reuse_address=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(
        f"latency_proxy: {listen[0]}:{listen[1]} -> {upstream[0]}:{upstream[1]}, "
        f"+{delay_s * 1000:.0f} ms per round trip (started {time.strftime('%H:%M:%S')})",
        flush=True,
    )
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--listen", type=_hostport, required=True, help="HOST:PORT to accept on")
    p.add_argument("--upstream", type=_hostport, required=True, help="HOST:PORT to relay to")
    p.add_argument("--delay-ms", type=float, required=True, help="added per round trip")
    args = p.parse_args(argv)
    if args.delay_ms < 0:
        p.error("--delay-ms must be >= 0")
    asyncio.run(serve(args.listen, args.upstream, args.delay_ms / 1000.0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
