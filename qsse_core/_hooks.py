"""Authentication and authorization hooks: plain callables, sync or async."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["Authenticator", "Authorizer", "allow_all_tokens", "allow_all_topics", "resolve"]

T = TypeVar("T")

#: ``(token) -> bool``: whether a client may connect at all. Go's ``AuthenticatorFunc``.
Authenticator = Callable[[str], bool | Awaitable[bool]]
#: ``(token, topic) -> bool``: whether a client may subscribe to one topic. Go's
#: ``AuthorizerFunc``; ``topic`` is the topic as the client asked for it.
Authorizer = Callable[[str, str], bool | Awaitable[bool]]


def allow_all_tokens(token: str) -> bool:
    """The default authenticator: every client is accepted, as in Go."""
    return True


def allow_all_topics(token: str, topic: str) -> bool:
    """The default authorizer: every declared topic is allowed, as in Go."""
    return True


async def resolve(value: T | Awaitable[T]) -> T:
    """Await ``value`` if a hook returned an awaitable."""
    if inspect.isawaitable(value):
        return await value
    return value
