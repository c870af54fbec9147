"""Authentication and authorization hooks: plain callables, sync or async."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["Authenticator", "Authorizer", "allow_all_tokens", "allow_all_topics", "resolve"]

T = TypeVar("T")

#: ``(token) -> bool``: whether a client may connect at all. Go's ``AuthenticatorFunc``.
Authenticator = Callable[[str], bool | Awaitable[bool]]
#: ``(token, topic) -> bool``: whether a client may receive a topic. Go's ``AuthorizerFunc``.
#:
#: The server asks it first with the topic as the client subscribed to it, which may be a
#: pattern (``ride.*``, see :func:`qsse_core.is_pattern`); refusing refuses the subscription.
#: A pattern subscription can then reach concrete topics the authorizer has not seen, so before
#: the first event of each concrete topic (``ride.secret.status``) reaches the connection,
#: live or replayed from history, it is asked again with that concrete topic; the answer is
#: kept per connection (up to 1024 topics, then asked afresh). Events of a refused concrete
#: topic are not sent on that connection and not reported to it as a gap. An async authorizer
#: is awaited while the subscription's later events wait in order behind its answer; a sync
#: one answers inline (the cheaper choice on busy topics).
Authorizer = Callable[[str, str], bool | Awaitable[bool]]


def allow_all_tokens(token: str) -> bool:
    """The default authenticator: every client is accepted, as in Go."""
    return True


def allow_all_topics(token: str, topic: str) -> bool:
    """The default authorizer: every declared topic is allowed, as in Go (the server skips
    the per-topic checks of pattern subscriptions when this is the authorizer)."""
    return True


async def resolve(value: T | Awaitable[T]) -> T:
    """Await ``value`` if a hook returned an awaitable."""
    if inspect.isawaitable(value):
        return await value
    return value
