"""The ``qsse`` command line, run as real processes talking QUIC over loopback."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

QSSE = [sys.executable, "-m", "qsse_core"]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def serve(tmp_path_factory):
    procs = []

    def start(*args: str) -> tuple[subprocess.Popen[bytes], int]:
        port = free_udp_port()
        # stderr to a file: a pipe nobody reads would block a chatty server once full.
        with tmp_path_factory.mktemp("serve").joinpath("stderr").open("wb") as err:
            proc = subprocess.Popen(
                [*QSSE, "serve", "--port", str(port), *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
            )
        procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        assert line == f"listening on 127.0.0.1:{port}\n"
        return proc, port

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None and not pipe.closed:
                pipe.close()


def sub(port: int, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*QSSE, "sub", f"127.0.0.1:{port}", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def publish_until_received(server, subscriber, lines: list[bytes], timeout: float = 20):
    """qsse/1 has no subscription ack: repeat the first line until the subscriber has it."""
    assert server.stdin is not None and subscriber.stdout is not None
    os.set_blocking(subscriber.stdout.fileno(), False)
    deadline = time.monotonic() + timeout
    got = b""
    while b"\n" not in got:
        assert time.monotonic() < deadline, "subscriber received nothing"
        server.stdin.write(lines[0] + b"\n")
        server.stdin.flush()
        time.sleep(0.2)
        got += subscriber.stdout.read() or b""
    for line in lines[1:]:
        server.stdin.write(line + b"\n")
    server.stdin.flush()
    os.set_blocking(subscriber.stdout.fileno(), True)
    return got


def test_serve_and_sub_roundtrip_text_and_binary(serve):
    server, port = serve("ride.*", "other")
    subscriber = sub(port, "ride.*", "nope", "--insecure", "--count", "3")
    first = publish_until_received(
        server, subscriber, [b"ride.a hello", b"other skipped", b"ride.b \xff\xfe", b"ride.c last"]
    )
    out, err = subscriber.communicate(timeout=20)
    lines = (first + out).decode().splitlines()
    assert lines[-2:] == ["ride.b\t//4=", "ride.c\tlast"]
    assert set(lines[:-2]) == {"ride.a\thello"}
    assert subscriber.returncode == 0
    assert 'error TOPIC_NOT_AVAILABLE (2): {"topic": "nope"}' in err.decode()
    server.stdin.close()
    assert server.wait(10) == 0  # clean exit on EOF


def test_sub_json_output(serve):
    server, port = serve("t")
    subscriber = sub(port, "t", "--insecure", "--json", "--count", "2")
    first = publish_until_received(server, subscriber, [b"t one", b"t two"])
    out, err = subscriber.communicate(timeout=20)
    assert subscriber.returncode == 0, err.decode()
    records = [json.loads(line) for line in (first + out).decode().splitlines()]
    # qsse/2 (the default) carries event ids; they count up within the run.
    ids = [r.pop("id") for r in records]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert records[-1] == {"topic": "t", "data": "two", "encoding": "utf-8"}
    assert {"topic": "t", "data": "one", "encoding": "utf-8"} in records
    server.stdin.close()


def test_sub_exits_non_zero_when_refused():
    port = free_udp_port()
    result = subprocess.run(
        [*QSSE, "sub", f"127.0.0.1:{port}", "t", "--insecure"],
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert f"cannot connect to 127.0.0.1:{port}" in result.stderr.decode()


def test_sub_exits_non_zero_when_token_rejected(serve):
    server, port = serve("t", "--token", "right")
    result = subprocess.run(
        [*QSSE, "sub", f"127.0.0.1:{port}", "t", "--insecure", "--token", "wrong"],
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 1
    err = result.stderr.decode()
    assert "error NOT_AUTHORIZED (1)" in err
    assert "connection closed by peer: NOT_AUTHORIZED (1) 'not authorized'" in err
    server.stdin.close()


def test_sub_exits_non_zero_when_server_shuts_down(serve):
    server, port = serve("t")
    subscriber = sub(port, "t", "--insecure")
    publish_until_received(server, subscriber, [b"t x"])
    server.stdin.close()  # EOF: the server closes every connection with GOING_AWAY
    _, err = subscriber.communicate(timeout=20)
    assert subscriber.returncode == 1
    assert "GOING_AWAY (256) 'server shutting down'" in err.decode()


def test_sub_can_insist_on_the_go_protocol(serve):
    server, port = serve("t")
    subscriber = sub(port, "t", "--insecure", "--json", "--count", "1", "--protocol", "qsse/1")
    first = publish_until_received(server, subscriber, [b"t go"])
    out, _ = subscriber.communicate(timeout=20)
    record = json.loads((first + out).decode().splitlines()[0])
    assert record == {"topic": "t", "data": "go", "encoding": "utf-8"}  # qsse/1: no id
    assert subscriber.returncode == 0
    server.stdin.close()


DIAL_MANY = """
import asyncio, sys, uvloop
from qsse_core import Client, ReconnectPolicy

async def main() -> int:
    clients = [
        Client(sys.argv[1], ["t"], insecure=True, connect_timeout=10,
               reconnect=ReconnectPolicy(retry=False))
        for _ in range(20)
    ]
    results = await asyncio.gather(*(c.connect() for c in clients), return_exceptions=True)
    await asyncio.gather(*(c.close() for c in clients))
    failed = [str(r) for r in results if r is not None]
    print(len(failed), failed[:1])
    return 1 if failed else 0

sys.exit(uvloop.run(main()))
"""


def test_many_clients_on_uvloop_dial_a_server_in_another_process(serve):
    # Handshakes that complete before anyone awaits them must still count (uvloop runs
    # datagram callbacks before new tasks); the server is a separate process, as in life.
    server, port = serve("t")
    for backend in ("aioquic", "qh3"):
        result = subprocess.run(
            [sys.executable, "-c", DIAL_MANY, f"127.0.0.1:{port}"],
            capture_output=True,
            timeout=60,
            env={**os.environ, "QSSE_QUIC_BACKEND": backend},
        )
        assert result.returncode == 0, (backend, result.stdout, result.stderr[-2000:])
    server.stdin.close()
