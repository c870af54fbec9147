"""``qsse``: try qsse peers (Go or Python) without writing code."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import sys
from collections.abc import Coroutine, Mapping
from enum import StrEnum
from typing import Annotated, Any

import typer

from ._codes import ErrorCode
from ._config import ReconnectPolicy
from ._exceptions import ConnectError, QsseError
from ._framing import ALPN_QSSE1
from ._framing2 import ALPN_QSSE2
from ._state import ConnectionState, Gap, Message, StateChange
from .asyncio import Client, Server


class Protocol(StrEnum):
    AUTO = "auto"
    QSSE2 = "qsse/2"
    QSSE1 = "qsse/1"


_PROTOCOLS = {
    Protocol.AUTO: (ALPN_QSSE2, ALPN_QSSE1),
    Protocol.QSSE2: (ALPN_QSSE2,),
    Protocol.QSSE1: (ALPN_QSSE1,),
}

app = typer.Typer(
    help="Subscribe to and serve qsse topics over QUIC.",
    no_args_is_help=True,
    add_completion=False,
)


def _run(main: Coroutine[Any, Any, int]) -> int:
    """Run ``main`` on uvloop when it is installed (cheaper per datagram), else asyncio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def _on_signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    # Ctrl-C and SIGTERM end the command cleanly; Windows event loops have no signal handlers.
    if sys.platform != "win32":
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)


def _text(data: bytes) -> tuple[str, str]:
    """The payload as UTF-8 text, or base64 when it is not valid UTF-8."""
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(data).decode("ascii"), "base64"


def _code_name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return str(code)


def _jsonable(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _text(v)[0] if isinstance(v, bytes) else v for k, v in data.items()}


@app.command()
def sub(
    address: Annotated[str, typer.Argument(help="Server address, HOST:PORT.")],
    patterns: Annotated[list[str], typer.Argument(help="Topics or patterns to subscribe to.")],
    token: Annotated[str, typer.Option(help="Token for the server's authenticator.")] = "",
    insecure: Annotated[
        bool, typer.Option(help="Skip certificate verification (needed for Go servers).")
    ] = False,
    cafile: Annotated[str | None, typer.Option(help="PEM file of CAs to trust.")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object per event.")
    ] = False,
    count: Annotated[
        int, typer.Option(help="Exit after this many events (0: run until closed).")
    ] = 0,
    retry: Annotated[bool, typer.Option(help="Reconnect when the connection drops.")] = False,
    protocol: Annotated[
        Protocol, typer.Option(help="auto prefers qsse/2 and falls back to Go's qsse/1.")
    ] = Protocol.AUTO,
) -> None:
    """Print each event as TOPIC<TAB>DATA (or JSON); errors go to stderr."""
    code = _run(
        _sub(
            address=address,
            patterns=patterns,
            token=token,
            insecure=insecure,
            cafile=cafile,
            as_json=as_json,
            count=count,
            retry=retry,
            protocols=_PROTOCOLS[protocol],
        )
    )
    raise typer.Exit(code)


async def _sub(
    *,
    address: str,
    patterns: list[str],
    token: str,
    insecure: bool,
    cafile: str | None,
    as_json: bool,
    count: int,
    retry: bool,
    protocols: tuple[str, ...],
) -> int:
    client = Client(
        address,
        patterns,
        token=token,
        insecure=insecure,
        cafile=cafile,
        reconnect=ReconnectPolicy(retry=retry, max_attempts=None if retry else 0),
        protocols=protocols,
    )
    received = 0
    enough = asyncio.Event()

    def on_message(message: Message) -> None:
        nonlocal received
        text, encoding = _text(message.data)
        if as_json:
            record: dict[str, Any] = {"topic": message.topic, "data": text, "encoding": encoding}
            if message.id is not None:
                record["id"] = message.id
            print(json.dumps(record), flush=True)
        else:
            print(f"{message.topic}\t{text}", flush=True)
        received += 1
        if count and received >= count:
            enough.set()

    def on_error(code: int, data: Mapping[str, Any]) -> None:
        print(f"error {_code_name(code)} ({code}): {json.dumps(_jsonable(data))}", file=sys.stderr)

    def on_gap(gap: Gap) -> None:
        last = "?" if gap.last_id is None else gap.last_id
        print(f"gap {gap.topic}: ids {gap.first_id}..{last} lost ({gap.reason})", file=sys.stderr)

    def on_state(change: StateChange) -> None:
        # One line per change a user waiting on a quiet terminal needs to see.
        if change.state is ConnectionState.LOST:
            print(f"qsse: connection lost: {change.reason}", file=sys.stderr)
        elif change.state is ConnectionState.RETRYING:
            print(
                f"qsse: retry {change.attempt} in {change.delay:.1f} s ({change.reason})",
                file=sys.stderr,
            )

    client.on_message(on_message)
    client.on_error(on_error)
    client.on_gap(on_gap)
    client.on_state(on_state)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    _on_signals(loop, stop)  # before connecting: --retry may dial for a long time
    connecting = asyncio.ensure_future(client.connect())
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait([connecting, stopped], return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if not connecting.done():
        connecting.cancel()
        await asyncio.gather(connecting, return_exceptions=True)
        await client.close()
        return 0
    if isinstance(connecting.exception(), ConnectError):
        print(f"qsse: {connecting.exception()}", file=sys.stderr)
        await client.close()
        return 1
    connecting.result()
    waiters = [
        asyncio.ensure_future(client.wait_closed()),
        asyncio.ensure_future(enough.wait()),
        asyncio.ensure_future(stop.wait()),
    ]
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    for waiter in waiters:
        waiter.cancel()
    error = client.error
    await client.close()
    if error is not None and not enough.is_set() and not stop.is_set():
        print(f"qsse: {error}", file=sys.stderr)
        return 1
    return 0


@app.command()
def serve(
    topics: Annotated[list[str], typer.Argument(help="Topics (or patterns) to declare.")],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="UDP port; 0 picks a free one.")] = 4242,
    token: Annotated[
        str | None, typer.Option(help="Accept only clients presenting this token.")
    ] = None,
    certfile: Annotated[str | None, typer.Option(help="PEM certificate chain.")] = None,
    keyfile: Annotated[str | None, typer.Option(help="PEM private key.")] = None,
) -> None:
    """Serve TOPICS and publish each stdin line `TOPIC DATA`; exit on EOF or Ctrl-C."""
    code = _run(
        _serve(
            topics=topics,
            host=host,
            port=port,
            token=token,
            certfile=certfile,
            keyfile=keyfile,
        )
    )
    raise typer.Exit(code)


async def _serve(
    *,
    topics: list[str],
    host: str,
    port: int,
    token: str | None,
    certfile: str | None,
    keyfile: str | None,
) -> int:
    try:
        server = Server(
            topics,
            host=host,
            port=port,
            authenticator=None if token is None else (lambda t: t == token),
            certfile=certfile,
            keyfile=keyfile,
        )
        await server.start()
    except QsseError as exc:
        print(f"qsse: {exc}", file=sys.stderr)
        return 2
    print(f"listening on {server.address}", flush=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    _on_signals(loop, stop)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        while not stop.is_set():
            read = asyncio.ensure_future(reader.readline())
            await asyncio.wait([read, stopped], return_when=asyncio.FIRST_COMPLETED)
            if not read.done():
                read.cancel()
                break
            line = read.result()
            if not line:
                break
            topic, _, data = line.rstrip(b"\r\n").partition(b" ")
            if not topic:
                continue
            try:
                server.publish(topic.decode("utf-8", "replace"), data)
            except QsseError as exc:
                print(f"qsse: {exc}", file=sys.stderr)
    finally:
        stopped.cancel()
        await server.close()
    return 0


def main() -> None:
    app()


if __name__ == "__main__":
    main()
