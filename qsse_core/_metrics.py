"""Prometheus metrics of a qsse server.

Topic labels are always declared topics (``ride.*.status``), never concrete ones
(``ride.42.status``): concrete topics carry ids, and a label per id would grow without bound.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import make_asgi_app as _make_asgi_app
from prometheus_client import make_wsgi_app as _make_wsgi_app
from prometheus_client import start_http_server as _start_http_server

__all__ = ["Metrics"]

_LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)


class Metrics:
    """The metrics of one server, registered in ``registry``.

    :param registry: where to register; a fresh registry by default, so that several servers
        in one process do not collide. Pass ``prometheus_client.REGISTRY`` to join the
        process-wide one.
    :param namespace: the metric name prefix.
    """

    def __init__(self, registry: CollectorRegistry | None = None, namespace: str = "qsse") -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        ns, reg = namespace, self.registry
        self.connections = Gauge(
            "connections", "Open subscriber connections.", ["protocol"], namespace=ns, registry=reg
        )
        self.subscribers = Gauge(
            "subscribers",
            "Subscriptions per declared topic.",
            ["topic"],
            namespace=ns,
            registry=reg,
        )
        self.events_published = Counter(
            "events_published",
            "Events published, per declared topic.",
            ["topic"],
            namespace=ns,
            registry=reg,
        )
        self.events_delivered = Counter(
            "events_delivered",
            "Events queued to a subscription, per declared topic.",
            ["topic"],
            namespace=ns,
            registry=reg,
        )
        self.events_dropped = Counter(
            "events_dropped",
            "Events that reached no subscriber, per declared topic and reason.",
            ["topic", "reason"],
            namespace=ns,
            registry=reg,
        )
        self.authentication_failures = Counter(
            "authentication_failures",
            "Connections refused by the authenticator.",
            namespace=ns,
            registry=reg,
        )
        self.authorization_failures = Counter(
            "authorization_failures",
            "Topic subscriptions refused by the authorizer.",
            ["topic"],
            namespace=ns,
            registry=reg,
        )
        self.protocol_errors = Counter(
            "protocol_errors",
            "Connections closed for breaking the protocol or a limit.",
            ["reason"],
            namespace=ns,
            registry=reg,
        )
        self.validation_rejections = Counter(
            "validation_rejections",
            "Typed events rejected before publishing, per topic.",
            ["topic"],
            namespace=ns,
            registry=reg,
        )
        self.path_migrations = Counter(
            "path_migrations",
            "Connections that moved to a new client address and kept going (RFC 9000"
            " section 9: a network change or a NAT rebinding), per protocol.",
            ["protocol"],
            namespace=ns,
            registry=reg,
        )
        self.publish_write_latency = Histogram(
            "publish_write_latency_seconds",
            "Seconds from publish() to the event being written to the QUIC connections.",
            namespace=ns,
            registry=reg,
            buckets=_LATENCY_BUCKETS,
        )
        # Label lookups lock and hash; the hot path reuses children per declared topic.
        self._published: dict[str, Any] = {}
        self._delivered: dict[str, Any] = {}

    def prepare(self, topics: Iterable[str]) -> None:
        """Create the per-topic series up front so they read 0 instead of being absent."""
        for topic in topics:
            self.published_child(topic)
            self.delivered_child(topic)
            self.subscribers.labels(topic=topic)

    def published_child(self, topic: str) -> Any:
        child = self._published.get(topic)
        if child is None:
            child = self._published[topic] = self.events_published.labels(topic=topic)
        return child

    def delivered_child(self, topic: str) -> Any:
        child = self._delivered.get(topic)
        if child is None:
            child = self._delivered[topic] = self.events_delivered.labels(topic=topic)
        return child

    def validation_rejected(self, topic: str) -> None:
        """Count a typed event rejected by validation for ``topic``."""
        self.validation_rejections.labels(topic=topic).inc()

    def wsgi_app(self) -> Callable[..., Any]:
        """A WSGI app serving these metrics (Go's ``MetricHandler()``)."""
        return _make_wsgi_app(self.registry)

    def asgi_app(self) -> Callable[..., Any]:
        """An ASGI app serving these metrics."""
        return _make_asgi_app(self.registry)

    def start_http_server(self, port: int, addr: str = "127.0.0.1") -> None:
        """Serve these metrics over HTTP on ``addr:port`` from a background thread."""
        _start_http_server(port, addr=addr, registry=self.registry)
