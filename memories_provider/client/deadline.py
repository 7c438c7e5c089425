"""A caller's deadline, carried into every client call made under it.

``with within(seconds): client.list_videos(...)`` — nothing the client does runs past the
deadline: a request is not started once it has passed, each request's connect and read timeouts
shrink to the time left, and the retry loop stops (re-raising the last error) when its next sleep,
``Retry-After`` included, would end after it. Nested deadlines keep the earliest.

It lives in a :mod:`contextvars` variable so that it follows a call into the sync client (same
thread) and the async client (same task) without a parameter on every method; the sensor, the
upload operator's wait and the trigger's poller all bound their status checks with it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from memories_provider.client.errors import MemoriesTimeoutError

# A time.monotonic() value, or None for "no deadline".
_DEADLINE: ContextVar[float | None] = ContextVar("memories_deadline", default=None)


@contextmanager
def within(seconds: float | None) -> Iterator[None]:
    """Bound every client call in the block to ``seconds`` from now (``None``: no new bound).

    :param seconds: time left; zero or less means "already passed" (no request is sent).
    """
    if seconds is None:
        yield
        return
    at = time.monotonic() + seconds
    current = _DEADLINE.get()
    token = _DEADLINE.set(at if current is None else min(at, current))
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def time_left() -> float | None:
    """Seconds until the current deadline (negative once passed), or ``None`` without one."""
    at = _DEADLINE.get()
    return None if at is None else at - time.monotonic()


def expired_error(endpoint: str) -> MemoriesTimeoutError:
    """The error of a call that reaches its deadline (never sent, or cut short)."""
    return MemoriesTimeoutError(
        "the caller's deadline has passed; not waiting any longer", endpoint=endpoint, request_sent=False
    )


def request_timeouts(connect: float, read: float, endpoint: str) -> tuple[float, float]:
    """``(connect, read)`` timeouts for a request starting now, shrunk to the time left.

    :raises MemoriesTimeoutError: when the deadline has already passed (the request is not sent).
    """
    left = time_left()
    if left is None:
        return connect, read
    if left <= 0:
        raise expired_error(endpoint)
    return min(connect, left), min(read, left)


def sleep_would_pass(seconds: float) -> bool:
    """Whether sleeping ``seconds`` from now ends at or after the deadline (a retry not worth making)."""
    left = time_left()
    return left is not None and seconds >= left


__all__ = ["expired_error", "request_timeouts", "sleep_would_pass", "time_left", "within"]
