"""A UDP relay on loopback that moves a live connection to a new source port.

It stands where a NAT does: the client sends to the relay's listening port, and the relay
sends on to the server from a socket of its own (a *path*). :meth:`UdpRelay.move` opens a new
path, so the server sees the connection come from a new address (RFC 9000 section 9, "NAT
rebinding"), while the client sees nothing change. What happens to the old path is the
:class:`Move` mode. An optional delay per direction adds round-trip time.

Bounds: only loopback addresses, at most :attr:`UdpRelay.max_paths` paths held open, and
delayed datagrams beyond :attr:`UdpRelay.max_queued` in flight are dropped (and counted).
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import socket
from typing import Any


class Move(enum.Enum):
    """What a move does with the old path."""

    #: the old port stays open: the server's packets to it still reach the client.
    KEEP = "keep"
    #: the old port closes when the client's next datagram leaves by the new one.
    DROP_AT_NEXT = "drop"
    #: the old port closes at once, before the client says anything: a quiet client must
    #: notice by itself, or the server keeps sending to a dead address. Datagrams still in
    #: the relay's delay line from the old port die with it (the client's network is gone).
    KILL = "kill"


class _Path(asyncio.DatagramProtocol):
    def __init__(self, relay: UdpRelay, index: int) -> None:
        self.relay = relay
        self.index = index
        self.transport: asyncio.DatagramTransport | None = None
        self.from_server = 0
        self.reached = asyncio.Event()
        self.killed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.from_server += 1
        self.reached.set()
        self.relay._to_client(self, data)

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP from a closed server port: the datagram is lost, as on a network

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None


class _Front(asyncio.DatagramProtocol):
    def __init__(self, relay: UdpRelay) -> None:
        self.relay = relay

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.relay._from_client(data, addr)

    def error_received(self, exc: Exception) -> None:
        pass


def _require_loopback(host: str) -> None:
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"the relay only works on loopback addresses, got {host!r}")


class UdpRelay:
    """Relays one client's datagrams to ``server`` and back, through movable paths.

    Use as ``async with UdpRelay(("127.0.0.1", port)) as relay:`` and point the client at
    :attr:`address`.

    :param server: the server's (host, port), a loopback address.
    :param delay: seconds added to each datagram in each direction (half the added RTT).
    :param max_paths: paths held open at most; a move past it closes the oldest.
    :param max_queued: delayed datagrams in flight at most; more are dropped.
    """

    def __init__(
        self,
        server: tuple[str, int],
        *,
        delay: float = 0.0,
        max_paths: int = 64,
        max_queued: int = 10_000,
    ) -> None:
        _require_loopback(server[0])
        self.server = server
        self.delay = delay
        self.max_paths = max_paths
        self.max_queued = max_queued
        self.paths: list[_Path] = []
        self.dropped = 0
        self.client_datagrams = 0
        self._front: asyncio.DatagramTransport | None = None
        self._client: Any = None
        self._drop_at_next: list[_Path] = []
        self._queued = 0
        self._front_name: Any = None
        self._silenced: set[Any] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def address(self) -> str:
        """``host:port`` the client dials."""
        assert self._front is not None
        host, port = self._front.get_extra_info("sockname")[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @property
    def current(self) -> _Path:
        """The path the client's datagrams leave by."""
        return self.paths[-1]

    @property
    def source_port(self) -> int:
        """The source port the server now sees the client's datagrams come from."""
        transport = self.current.transport
        assert transport is not None
        port: int = transport.get_extra_info("sockname")[1]
        return port

    async def __aenter__(self) -> UdpRelay:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self.server[0] else socket.AF_INET
        self._front, _ = await self._loop.create_datagram_endpoint(
            lambda: _Front(self), local_addr=(self.server[0], 0), family=family
        )
        await self._open_path()

    def close(self) -> None:
        for path in self.paths:
            path.close()
        if self._front is not None:
            self._front.close()
            self._front = None

    async def _open_path(self) -> _Path:
        assert self._loop is not None
        path = _Path(self, len(self.paths))
        await self._loop.create_datagram_endpoint(
            lambda: path, local_addr=(self.server[0], 0), remote_addr=self.server
        )
        self.paths.append(path)
        open_paths = [p for p in self.paths if p.transport is not None]
        if len(open_paths) > self.max_paths:
            open_paths[0].close()
        return path

    async def move(self, mode: Move) -> _Path:
        """Send the client's datagrams from a new source port from now on.

        :returns: the new path; ``await path.reached.wait()`` until the server answers on it.
        """
        old = self.current
        path = await self._open_path()
        if mode is Move.KILL:
            old.killed = True
            old.close()
        elif mode is Move.DROP_AT_NEXT:
            self._drop_at_next.append(old)
        return path

    def blackhole(self) -> None:
        """Lose everything to and from the client's current address, in silence, as when its
        network goes away; a new client address gets through."""
        self._silenced.add(self._client)

    def refuse(self) -> None:
        """Close the port the client sends to: the kernel answers its datagrams with ICMP
        "port unreachable", which its socket reports as an error."""
        assert self._front is not None
        self._front_name = self._front.get_extra_info("sockname")
        self._front.close()
        self._front = None

    def accept(self) -> None:
        """Open the port again, at once (a callback may call it before the client's next send)."""
        assert self._loop is not None and self._front is None
        family = socket.AF_INET6 if ":" in self._front_name[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.bind(self._front_name)  # datagrams queue in the socket until the endpoint reads
        self._loop.create_task(self._serve_front(sock))

    async def _serve_front(self, sock: socket.socket) -> None:
        assert self._loop is not None
        self._front, _ = await self._loop.create_datagram_endpoint(lambda: _Front(self), sock=sock)

    async def retarget(self, server: tuple[str, int]) -> _Path:
        """Send to another server from now on, from a new port, closing the old paths.

        To the client the same server stopped answering: it lost the connection's state.
        """
        _require_loopback(server[0])
        self.server = server
        return await self.move(Move.KILL)

    def _from_client(self, data: bytes, addr: Any) -> None:
        if addr in self._silenced:
            self.dropped += 1
            return
        self._client = addr
        self.client_datagrams += 1
        path = self.current
        if self._drop_at_next:
            for old in self._drop_at_next:
                old.close()
            self._drop_at_next.clear()
        self._later(self._send_to_server, path, data)

    def _to_client(self, path: _Path, data: bytes) -> None:
        self._later(self._send_to_client, path, data)

    def _later(self, send: Any, *args: Any) -> None:
        if not self.delay:
            send(*args)
            return
        if self._queued >= self.max_queued:
            self.dropped += 1
            return
        self._queued += 1
        assert self._loop is not None
        self._loop.call_later(self.delay, self._deliver, send, args)

    def _deliver(self, send: Any, args: tuple[Any, ...]) -> None:
        self._queued -= 1
        send(*args)

    @staticmethod
    def _send_to_server(path: _Path, data: bytes) -> None:
        if path.transport is not None:
            path.transport.sendto(data)

    def _send_to_client(self, path: _Path, data: bytes) -> None:
        if self._client in self._silenced or path.killed:
            self.dropped += 1
        elif self._front is not None and self._client is not None:
            self._front.sendto(data, self._client)
