"""Pieces shared by the harness and the processes it starts: payloads, frames, loops, stats.

Every payload is ASCII so that SSE and WebSocket text frames carry exactly the same bytes as
qsse: ``SEQ(10) SPACE MONOTONIC_NS(19) SPACE`` then ``x`` padding. The timestamp is
``time.monotonic_ns()`` of the publishing process; on Linux that clock is shared by every
process on the machine (and every network namespace), so receivers subtract it directly.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = [
    "HEADER_SIZE",
    "CertFiles",
    "cpu_seconds",
    "emit",
    "make_payload",
    "payload_timestamp",
    "percentile",
    "pin_to",
    "qsse1_frame",
    "raise_fd_limit",
    "rss_bytes",
    "run_loop",
    "write_certificate",
]

T = TypeVar("T")

HEADER_SIZE = 31


def make_payload(seq: int, size: int, now_ns: int | None = None) -> bytes:
    """A ``size``-byte ASCII payload carrying ``seq`` and the send time."""
    ts = time.monotonic_ns() if now_ns is None else now_ns
    head = b"%010d %019d " % (seq, ts)
    return head + b"x" * max(0, size - len(head))


def payload_timestamp(data: bytes | str) -> int:
    """The send time (monotonic ns) written by :func:`make_payload`."""
    return int(data[11:30])


def qsse1_frame(topic: str, data: bytes) -> bytes:
    """The qsse/1 event line (``{"topic":..,"data":base64}\\n``), as qsse writes it.

    The raw-transport ceiling writes these same bytes so that it carries the same volume.
    """
    return b'{"topic":"%s","data":"%s"}\n' % (topic.encode(), base64.b64encode(data))


def emit(event: str, **fields: Any) -> None:
    """One JSON line on stdout: how the processes report to the harness."""
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_bytes() -> int:
    """Resident set size of this process now (not the peak)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def pin_to(cpus: Sequence[int]) -> None:
    """Pin this process to ``cpus`` when the machine has them; otherwise leave it alone."""
    available = os.sched_getaffinity(0)
    wanted = {c for c in cpus if c in available}
    if wanted:
        os.sched_setaffinity(0, wanted)


def raise_fd_limit() -> None:
    """Raise the open-file soft limit to the hard limit: thousands of sockets are opened."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def run_loop(main: Callable[[], Coroutine[Any, Any, T]], loop: str) -> T:
    """Run ``main()`` on the asyncio or uvloop event loop."""
    if loop == "uvloop":
        import uvloop

        return uvloop.run(main())
    return asyncio.run(main())


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of already sorted values, nearest rank; NaN when empty."""
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * len(sorted_values) + 0.5) - 1))
    return float(sorted_values[index])


@dataclass(frozen=True, slots=True)
class CertFiles:
    """A self-signed certificate and key on disk, readable by aioquic and qh3 alike."""

    certfile: str
    keyfile: str


def write_certificate(directory: str | None = None) -> CertFiles:
    """Write an ECDSA P-256 certificate for 127.0.0.1, ::1, localhost and the netem address."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
        x509.IPAddress(ipaddress.ip_address("10.78.0.1")),
    ]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "qsse bench")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory = directory or tempfile.mkdtemp(prefix="qsse-bench-")
    certfile = os.path.join(directory, "cert.pem")
    keyfile = os.path.join(directory, "key.pem")
    with open(certfile, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(keyfile, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return CertFiles(certfile, keyfile)
