import asyncio
import logging
import os

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


def pytest_asyncio_loop_factories(config, item):
    """uvloop when QSSE_TEST_UVLOOP=1 (CI's qh3 run), so the fast stack is tested whole."""
    if os.environ.get("QSSE_TEST_UVLOOP") == "1":
        import uvloop

        return {"uvloop": uvloop.new_event_loop}
    return {"asyncio": asyncio.new_event_loop}


@pytest.fixture
def redis_server(tmp_path):
    """A real redis-server on a unix socket in a temp dir, stopped after the test."""
    from .redis_support import RedisProcess

    server = RedisProcess(tmp_path / "redis")
    server.start()
    yield server
    server.stop()
