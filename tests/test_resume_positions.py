"""Resume positions a peer may send that no store issued, over real QUIC on loopback: a
position that cannot be an event id closes only that connection, with a reason, and every
other subscriber keeps receiving."""

from __future__ import annotations

import asyncio
import ssl

import pytest
from aioquic.asyncio import connect
from aioquic.quic.configuration import QuicConfiguration

from qsse_core import ErrorCode, ReconnectPolicy, Server
from qsse_core._framing2 import Hello, Subscribe, encode_control

from .helpers import RawProtocol, Recorder, client, eventually


async def _subscribe_raw(port: int, last_id: int, epoch: int) -> RawProtocol:
    """A qsse/2 peer sending HELLO and one SUBSCRIBE carrying ``last_id`` as given."""
    config = QuicConfiguration(is_client=True, alpn_protocols=["qsse/2"])
    config.verify_mode = ssl.CERT_NONE
    async with connect(
        "127.0.0.1", port, configuration=config, create_protocol=RawProtocol
    ) as peer:
        assert isinstance(peer, RawProtocol)
        frames = encode_control(Hello(token="")) + encode_control(
            Subscribe(request_id=1, topic="t", last_id=last_id, epoch=epoch)
        )
        peer.send(0, frames)
        await eventually(lambda: peer.terminated is not None)
        return peer


@pytest.mark.parametrize("same_epoch", [True, False], ids=["same-epoch", "other-epoch"])
@pytest.mark.parametrize("last_id", [-1, -(2**63), 2**62, 2**64 - 1])
async def test_a_position_that_is_no_event_id_closes_only_that_connection(
    last_id: int, same_epoch: bool
) -> None:
    async with Server(["t"], host="127.0.0.1", port=0) as server:
        server.publish("t", b"before")
        good = client(
            server.address, ["t"], protocols=("qsse/2",), reconnect=ReconnectPolicy(retry=False)
        )
        rec = Recorder(good)
        async with good:
            await server.wait_subscribed("t")
            epoch = server.history.epoch if same_epoch else server.history.epoch % (2**63 - 1) + 1
            peer = await _subscribe_raw(server.port, last_id, epoch)
            assert peer.terminated is not None
            assert peer.terminated.error_code == ErrorCode.MALFORMED_FRAME
            # Ids are QUIC varints: the frame is refused when decoded, naming the field.
            bound = "`int` >= 0" if last_id < 0 else "`int` <= 4611686018427387903"
            assert peer.terminated.reason_phrase == (
                f"malformed SUBSCRIBE frame: Expected {bound} - at `$.last_id`"
            )
            # Before, 2**64 - 1 made every flush raise: nobody received anything again.
            server.publish("t", b"after")
            await eventually(lambda: [m.data for m in rec.messages] == [b"after"])
            assert server.subscription_count("t") == 1
        assert rec.errors == []
    await asyncio.sleep(0)


async def test_the_largest_event_id_is_still_a_position() -> None:
    """2**62 - 1 is an id a store could issue: it is answered (with an unknown gap, as it was
    never issued here), not refused."""
    async with Server(["t"], host="127.0.0.1", port=0) as server:
        server.publish("t", b"kept")
        gaps: list[object] = []
        c = client(
            server.address,
            ["t"],
            protocols=("qsse/2",),
            last_event_ids={"t": 2**62 - 1},
            epoch=server.history.epoch,
        )
        c.on_gap(gaps.append)
        rec = Recorder(c)
        async with c:
            await eventually(lambda: [m.data for m in rec.messages] == [b"kept"])
        assert len(gaps) == 1
        assert rec.errors == []
