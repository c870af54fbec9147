import logging

import pytest


@pytest.fixture(autouse=True)
def _quiet_quic_logs(caplog):
    # aioquic logs every handshake at INFO; keep failures readable.
    caplog.set_level(logging.WARNING, logger="quic")
