"""A subscriber process: ``python -m bench._subscriber --target ... --n CLIENTS``.

It opens ``n`` subscriptions, prints ``ready``, counts (and optionally times) every event
until ``stop`` arrives on stdin, then prints ``result`` with count samples over time and the
publish-to-handler latencies in microseconds.

Client kinds: ``sdk`` is qsse's :class:`~qsse_core.Client` with a handler per topic; ``light``
is a bare QUIC receiver (aioquic or qh3) that sends the qsse/1 offer and counts lines (or, for
``--target qsse/2``, sends HELLO and SUBSCRIBE and counts EVENT frames), used at
full speed so that the receivers, which cost as much CPU as the sender, are not what is
measured; ``sse`` reads HTTP/1.1 chunked SSE from a plain socket; ``ws`` is the websockets
client.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import logging
import os
import socket
import ssl
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from qsse_core._framing2 import FrameType, decode_event, decode_varint

from ._common import emit, payload_timestamp, pin_to, raise_fd_limit, run_loop

Closer = Callable[[], Awaitable[None] | None]


class _Line(msgspec.Struct):
    topic: str = ""
    data: bytes = b""


_line_decoder = msgspec.json.Decoder(_Line)


class Stats:
    """What this process received: a count, and latencies per topic when asked."""

    def __init__(self, latency: bool) -> None:
        self.count = 0
        self.latency = latency
        self.latencies: dict[str, list[int]] = {}

    def record(self, topic: str, data: bytes | str) -> None:
        self.count += 1
        if self.latency:
            now = time.monotonic_ns()
            lat = self.latencies.get(topic)
            if lat is None:
                lat = self.latencies[topic] = []
            lat.append((now - payload_timestamp(data)) // 1000)


def _format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _qsse2_events(buf: bytes, stats: Stats) -> bytes:
    """Count (or time) the EVENT frames of a qsse/2 subscription stream; returns the rest.

    Only the frame headers are parsed when counting, so a bare qsse/2 receiver costs about
    what the qsse/1 one (which counts newlines) does.
    """
    pos = 0
    end = len(buf)
    for _ in range(end):  # at least one byte per frame: bounded
        head = decode_varint(buf, pos)
        if head is None:
            break
        size = decode_varint(buf, head[1])
        if size is None or size[1] + size[0] > end:
            break
        stop = size[1] + size[0]
        if head[0] == FrameType.EVENT:
            if stats.latency:
                event = decode_event(buf[size[1] : stop])
                stats.record(event.topic, event.data)
            else:
                stats.count += 1
        pos = stop
    return buf[pos:]


async def connect_light(
    backend: str,
    host: str,
    port: int,
    topics: list[str],
    stats: Stats,
    timeout: float,
    protocol_name: str = "qsse/1",
) -> Closer:
    if backend == "qh3":
        from qh3.asyncio import QuicConnectionProtocol
        from qh3.quic.configuration import QuicConfiguration
        from qh3.quic.connection import QuicConnection
        from qh3.quic.events import HandshakeCompleted, StreamDataReceived
    else:
        from aioquic.asyncio import QuicConnectionProtocol  # type: ignore[assignment]
        from aioquic.quic.configuration import QuicConfiguration  # type: ignore[assignment]
        from aioquic.quic.connection import QuicConnection  # type: ignore[assignment]
        from aioquic.quic.events import (  # type: ignore[assignment]
            HandshakeCompleted,
            StreamDataReceived,
        )
    v2 = protocol_name == "qsse/2"
    if v2:
        from qsse_core._framing2 import Hello, Subscribe, encode_control

        # HELLO and one SUBSCRIBE per topic on the control stream (the client's stream 0).
        offer = encode_control(Hello()) + b"".join(
            encode_control(Subscribe(request_id=i + 1, topic=t)) for i, t in enumerate(topics)
        )
    else:
        offer = msgspec.json.encode({"topics": topics}) + b"\n"

    class Light(QuicConnectionProtocol):  # type: ignore[misc, valid-type]
        buf = b""
        bufs: dict[int, bytes]

        def quic_event_received(self, event: Any) -> None:
            if isinstance(event, StreamDataReceived):
                if v2:
                    if event.stream_id & 3 == 3:  # server-initiated unidirectional
                        sid = event.stream_id
                        self.bufs[sid] = _qsse2_events(self.bufs.get(sid, b"") + event.data, stats)
                elif event.stream_id & 1:  # server-initiated: events
                    if stats.latency:
                        lines = (self.buf + event.data).split(b"\n")
                        self.buf = lines.pop()
                        for line in lines:
                            frame = _line_decoder.decode(line)
                            stats.record(frame.topic, frame.data)
                    else:
                        stats.count += event.data.count(b"\n")
            elif isinstance(event, HandshakeCompleted):
                if v2:
                    self.bufs = {}
                    sid = self._quic.get_next_available_stream_id(is_unidirectional=False)
                    self._quic.send_stream_data(sid, offer)
                else:
                    sid = self._quic.get_next_available_stream_id(is_unidirectional=True)
                    self._quic.send_stream_data(sid, offer, end_stream=True)
                self.transmit()

    alpn = "qsse/2" if v2 else "PROTOCOL_QUIC"
    config = QuicConfiguration(is_client=True, alpn_protocols=[alpn])
    config.idle_timeout = 600.0
    config.verify_mode = ssl.CERT_NONE
    if backend == "qh3":
        config.verify_hostname = False
    quic = QuicConnection(configuration=config)
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # Unconnected: uvloop refuses ``sendto(data, addr)``, which aioquic uses, on a connected
    # socket (EISCONN).
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 0))
    protocol = Light(quic)
    transport, _ = await loop.create_datagram_endpoint(lambda: protocol, sock=sock)
    protocol.connect((host, port))
    await asyncio.wait_for(protocol.wait_connected(), timeout)

    def close() -> None:
        protocol.close()
        transport.close()

    return close


async def connect_sdk(
    protocol_name: str, host: str, port: int, topics: list[str], stats: Stats, timeout: float
) -> Closer:
    from qsse_core import Client, Message, ReconnectPolicy

    kwargs: dict[str, Any] = {}
    if "protocols" in inspect.signature(Client).parameters:
        alpn = "PROTOCOL_QUIC" if protocol_name == "qsse/1" else protocol_name
        kwargs["protocols"] = [alpn]
    elif protocol_name != "qsse/1":
        raise RuntimeError(f"this qsse_core cannot speak {protocol_name}: no protocols= yet")
    client = Client(
        _format_address(host, port),
        topics,
        insecure=True,
        reconnect=ReconnectPolicy(retry=False),
        connect_timeout=timeout,
        idle_timeout=600.0,
        **kwargs,
    )

    def handler(message: Message) -> None:
        stats.record(message.topic, message.data)

    for topic in topics:
        client.on(topic, handler)
    await client.connect()
    return client.close


async def connect_sse(
    host: str, port: int, topics: list[str], stats: Stats, timeout: float
) -> Closer:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    writer.write(
        f"GET /events?topics={','.join(topics)} HTTP/1.1\r\nHost: bench\r\n"
        "Accept: text/event-stream\r\n\r\n".encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    chunked = b"chunked" in head.lower()

    async def read() -> None:
        raw = bytearray()
        body = bytearray()
        size = -1
        while True:
            data = await reader.read(262144)
            if not data:
                return
            if not chunked:
                body += data
            else:
                raw += data
                while True:
                    if size < 0:
                        end = raw.find(b"\r\n")
                        if end < 0:
                            break
                        size = int(bytes(raw[:end]).split(b";")[0], 16)
                        del raw[: end + 2]
                    if len(raw) < size + 2:
                        break
                    body += raw[:size]
                    del raw[: size + 2]
                    size = -1
            if not stats.latency:
                ends = body.count(b"\r\n\r\n")
                stats.count += ends
                cut = body.rfind(b"\r\n\r\n")
                if cut >= 0:
                    del body[: cut + 4]
                continue
            while (end := body.find(b"\r\n\r\n")) >= 0:
                topic, text = "message", b""
                for line in bytes(body[:end]).split(b"\r\n"):
                    if line.startswith(b"event: "):
                        topic = line[7:].decode()
                    elif line.startswith(b"data: "):
                        text = line[6:]
                del body[: end + 4]
                if text:
                    stats.record(topic, text)

    task = asyncio.create_task(read())

    async def close() -> None:
        task.cancel()
        writer.close()

    return close


async def connect_ws(
    host: str, port: int, topics: list[str], stats: Stats, timeout: float
) -> Closer:
    from websockets.asyncio.client import connect

    host_part = f"[{host}]" if ":" in host else host
    ws = await asyncio.wait_for(
        connect(
            f"ws://{host_part}:{port}/?topics={','.join(topics)}",
            compression=None,
            ping_interval=None,
            max_queue=None,
            open_timeout=timeout,
        ),
        timeout,
    )

    async def read() -> None:
        async for message in ws:
            if stats.latency:
                topic, _, text = str(message).partition(" ")
                stats.record(topic, text)
            else:
                stats.count += 1

    task = asyncio.create_task(read())

    async def close() -> None:
        task.cancel()
        await ws.close()

    return close


def _light_backend() -> str:
    try:
        import qh3  # noqa: F401
    except ImportError:
        return "aioquic"
    return "qh3"


async def _main(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.ERROR)
    stats = Stats(args.latency)
    topics = args.topics.split(",")
    limit = asyncio.Semaphore(args.concurrency)
    closers: list[Closer] = []
    errors: list[str] = []

    async def one() -> None:
        async with limit:
            try:
                if args.client in ("light", "light-aioquic"):
                    # qh3 receives about 4x cheaper than aioquic and speaks the same QUIC, so
                    # the bare receivers use it when installed: the server is what is measured.
                    backend = "aioquic" if args.client == "light-aioquic" else _light_backend()
                    closer = await connect_light(
                        backend, args.host, args.port, topics, stats, args.timeout, args.target
                    )
                elif args.client == "sdk":
                    closer = await connect_sdk(
                        args.target, args.host, args.port, topics, stats, args.timeout
                    )
                elif args.client == "sse":
                    closer = await connect_sse(args.host, args.port, topics, stats, args.timeout)
                else:
                    closer = await connect_ws(args.host, args.port, topics, stats, args.timeout)
                closers.append(closer)
            except Exception as exc:  # reported to the harness, which fails the run
                errors.append(f"{type(exc).__name__}: {exc}")

    await asyncio.gather(*(one() for _ in range(args.n)))
    emit("ready", connected=len(closers), errors=errors[:3])
    loop = asyncio.get_running_loop()
    stopped = asyncio.Event()

    def read_stdin() -> None:
        sys.stdin.readline()
        loop.call_soon_threadsafe(stopped.set)

    threading.Thread(target=read_stdin, daemon=True).start()
    samples: list[tuple[int, int]] = []
    deadline = time.monotonic() + args.max_time
    while not stopped.is_set() and time.monotonic() < deadline:
        samples.append((time.monotonic_ns(), stats.count))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopped.wait(), args.sample_interval)
    samples.append((time.monotonic_ns(), stats.count))
    emit(
        "result",
        connected=len(closers),
        count=stats.count,
        samples=samples,
        latencies=stats.latencies,
    )

    async def close_all() -> None:
        for closer in closers:
            result = closer()
            if result is not None:
                await result

    # Closing is best effort: the harness is done with this process.
    with contextlib.suppress(Exception):
        await asyncio.wait_for(close_all(), 3)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", required=True)
    parser.add_argument(
        "--client", choices=["light", "light-aioquic", "sdk", "sse", "ws"], required=True
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--n", type=int, default=1)
    parser.add_argument("--topics", default="bench")
    parser.add_argument("--latency", action="store_true")
    parser.add_argument("--loop", default="asyncio")
    parser.add_argument("--cpu", type=int, default=-1)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--timeout", type=float, default=20.0)
    parser.add_argument("--sample-interval", type=float, default=0.05)
    parser.add_argument("--max-time", type=float, default=600.0)
    args = parser.parse_args()
    if args.cpu >= 0:
        pin_to([args.cpu])
    raise_fd_limit()
    run_loop(lambda: _main(args), args.loop)
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
