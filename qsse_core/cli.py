"""``qsse``: try qsse peers (Go or Python) without writing code."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
from collections.abc import Coroutine, Mapping
from enum import StrEnum
from typing import Annotated, Any

import typer

from ._codes import ErrorCode
from ._config import ReconnectPolicy
from ._exceptions import ConfigurationError, ConnectError, QsseError
from ._framing import ALPN_QSSE1
from ._framing2 import ALPN_QSSE2, ContentType
from ._history import HistoryPolicy, MemoryHistory
from ._state import ConnectionState, Gap, Message, StateChange
from ._topics import TopicTable
from .asyncio import Client, RedisBroker, Server


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
    address: Annotated[
        str,
        typer.Argument(
            help="Server address, HOST:PORT; several separated by commas (nodes of one "
            "deployment): the next is tried when one goes away."
        ),
    ],
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
        address.split(","),
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
    redis: Annotated[
        str | None,
        typer.Option(
            envvar="QSSE_REDIS_URL",
            help="Share ids, history and events with every node on this Redis "
            "(redis://, rediss:// for TLS, unix://); prefer the environment variable for a "
            "URL with a password.",
            show_envvar=True,
        ),
    ] = None,
    redis_prefix: Annotated[str, typer.Option(help="Names the store in Redis.")] = "qsse",
    workers: Annotated[
        int, typer.Option(min=1, help="Server processes sharing the port (SO_REUSEPORT).")
    ] = 1,
    reuse_port: Annotated[
        bool, typer.Option(help="Listen with SO_REUSEPORT, to share the port with others.")
    ] = False,
    history_events: Annotated[
        int, typer.Option(min=0, help="Events kept per declared topic for resume.")
    ] = 1000,
) -> None:
    """Serve TOPICS and publish each stdin line `TOPIC DATA`; exit on EOF or Ctrl-C."""
    options = _ServeOptions(
        topics=topics,
        host=host,
        port=port,
        token=token,
        certfile=certfile,
        keyfile=keyfile,
        redis=redis,
        redis_prefix=redis_prefix,
        reuse_port=reuse_port or workers > 1,
        history_events=history_events,
    )
    if workers > 1:
        raise typer.Exit(_run(_serve_workers(options, workers)))
    raise typer.Exit(_run(_serve(options)))


class _ServeOptions:
    def __init__(
        self,
        *,
        topics: list[str],
        host: str,
        port: int,
        token: str | None,
        certfile: str | None,
        keyfile: str | None,
        redis: str | None,
        redis_prefix: str,
        reuse_port: bool,
        history_events: int,
    ) -> None:
        self.topics = topics
        self.host = host
        self.port = port
        self.token = token
        self.certfile = certfile
        self.keyfile = keyfile
        self.redis = redis
        self.redis_prefix = redis_prefix
        self.reuse_port = reuse_port
        self.history = HistoryPolicy(max_events=history_events)


async def _stdin_lines(stop: asyncio.Event) -> Any:
    """Lines of stdin (without the line end) until EOF or ``stop``."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        while not stop.is_set():
            read = asyncio.ensure_future(reader.readline())
            await asyncio.wait([read, stopped], return_when=asyncio.FIRST_COMPLETED)
            if not read.done():
                read.cancel()
                return
            line = read.result()
            if not line:
                return
            yield line.rstrip(b"\r\n")
    finally:
        stopped.cancel()


async def _serve(options: _ServeOptions) -> int:
    try:
        broker = None
        if options.redis is not None:
            broker = RedisBroker(
                options.redis, default=options.history, prefix=options.redis_prefix
            )
        server = Server(
            options.topics,
            host=options.host,
            port=options.port,
            authenticator=None if options.token is None else (lambda t: t == options.token),
            certfile=options.certfile,
            keyfile=options.keyfile,
            broker=broker,
            history=None if broker is not None else MemoryHistory(options.history),
            reuse_port=options.reuse_port,
            registry=None if broker is None else broker.metrics_registry,
        )
        await server.start()
    except QsseError as exc:
        print(f"qsse: {exc}", file=sys.stderr)
        return 2
    print(f"listening on {server.address}", flush=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    _on_signals(loop, stop)
    try:
        async for line in _stdin_lines(stop):
            topic, _, data = line.partition(b" ")
            if not topic:
                continue
            try:
                if broker is None:
                    server.publish(topic.decode("utf-8", "replace"), data)
                else:
                    await server.publish_confirmed(topic.decode("utf-8", "replace"), data)
            except QsseError as exc:
                print(f"qsse: {exc}", file=sys.stderr)
    finally:
        await server.close()
    return 0


async def _serve_workers(options: _ServeOptions, workers: int) -> int:
    """Run ``workers`` server processes on one port and one broker; publish stdin lines
    through the broker, so every worker's subscribers get them."""
    if options.redis is None:
        print("qsse: --workers needs --redis to share events", file=sys.stderr)
        return 2
    if options.port == 0:
        print("qsse: --workers needs a fixed --port for the processes to share", file=sys.stderr)
        return 2
    argv = [sys.executable, "-m", "qsse_core", "serve", *options.topics]
    argv += ["--host", options.host, "--port", str(options.port), "--reuse-port"]
    argv += ["--redis-prefix", options.redis_prefix]
    argv += ["--history-events", str(options.history.max_events)]
    if options.token is not None:
        argv += ["--token", options.token]
    if options.certfile is not None:
        argv += ["--certfile", options.certfile]
    if options.keyfile is not None:
        argv += ["--keyfile", options.keyfile]
    # The Redis URL goes through the environment: a password stays out of `ps`.
    env = {**os.environ, "QSSE_REDIS_URL": options.redis}
    # Each worker's stdin stays open and unused: a worker exits on EOF, so none outlives
    # this process.
    procs = [subprocess.Popen(argv, stdin=subprocess.PIPE, env=env) for _ in range(workers)]
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    _on_signals(loop, stop)
    table = TopicTable(options.topics)
    code = 0

    async def watch() -> None:
        # A worker that dies takes the others down: a supervisor restarts the whole unit.
        nonlocal code
        while not stop.is_set():
            for proc in procs:
                if proc.poll() is not None:
                    print(f"qsse: worker {proc.pid} exited with {proc.returncode}", file=sys.stderr)
                    code = code or 1
                    stop.set()
            await asyncio.sleep(0.2)

    watcher = asyncio.ensure_future(watch())
    try:
        async with RedisBroker(options.redis, prefix=options.redis_prefix) as broker:
            async for line in _stdin_lines(stop):
                topic, _, data = line.partition(b" ")
                try:
                    for concrete, label in table.publish_targets(topic.decode()):
                        await broker.publish(label, concrete, data, ContentType.JSON)
                except (QsseError, ValueError) as exc:
                    print(f"qsse: {exc}", file=sys.stderr)
            await stop.wait()  # stdin closed: serve until told to stop
    except QsseError as exc:
        print(f"qsse: {exc}", file=sys.stderr)
        code = 2
    finally:
        stop.set()
        watcher.cancel()
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = loop.time() + 20
        while any(p.poll() is None for p in procs) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stdin is not None:
                proc.stdin.close()
    return code


@app.command()
def publish(
    topic: Annotated[str, typer.Argument(help="The topic, e.g. ride.42.status.")],
    data: Annotated[str, typer.Argument(help="The payload (JSON by default).")],
    redis: Annotated[
        str,
        typer.Option(envvar="QSSE_REDIS_URL", help="The Redis of the nodes.", show_envvar=True),
    ] = "redis://127.0.0.1:6379",
    redis_prefix: Annotated[str, typer.Option(help="Names the store in Redis.")] = "qsse",
    content_type: Annotated[
        int, typer.Option(help="Content type of DATA: 1 JSON, 2 MessagePack, 0 bytes.")
    ] = ContentType.JSON,
) -> None:
    """Publish DATA on TOPIC through Redis to every node's subscribers; print the ids."""
    raise typer.Exit(_run(_publish(topic, data.encode(), redis, redis_prefix, content_type)))


async def _publish(topic: str, data: bytes, url: str, prefix: str, content_type: int) -> int:
    try:
        async with RedisBroker(url, prefix=prefix) as broker:
            declared = await broker.declared_topics()
            if not declared:
                raise ConfigurationError(
                    f"no node has declared topics in store {prefix!r} at {broker.url}"
                )
            targets = TopicTable(declared).publish_targets(topic)
            if not targets:
                raise ConfigurationError(
                    f"topic {topic!r} matches no declared topic (declared: {declared})"
                )
            for concrete, label in targets:
                event_id = await broker.publish(label, concrete, data, content_type)
                print(f"{concrete}\t{event_id}", flush=True)
    except (QsseError, ValueError) as exc:
        print(f"qsse: {exc}", file=sys.stderr)
        return 1
    return 0


def main() -> None:
    app()


if __name__ == "__main__":
    main()
