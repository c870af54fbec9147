import logging

import pytest


@pytest.fixture(autouse=True)
def _quiet_quic_logs(caplog):
    # aioquic logs every handshake at INFO; keep failures readable.
    caplog.set_level(logging.WARNING, logger="quic")


@pytest.fixture(params=["qsse/2", "qsse/1"])
def protocol(request):
    """Run a test once per protocol: clients from tests.helpers.client() offer only it."""
    from . import helpers

    offered = ("qsse/2",) if request.param == "qsse/2" else ("PROTOCOL_QUIC",)
    helpers.PROTOCOLS.insert(0, offered)
    yield request.param
    helpers.PROTOCOLS.pop(0)
