"""A ride-hailing publisher and subscriber using the SDK generated from ``schemas/rides.toml``.

Run the whole thing over QUIC on loopback with ``python -m examples.rides``.
"""
