"""The retry policy shared by the sync and async clients, and the one back-off formula.

Retried: connection errors, timeouts, 5xx and rate limits (``0429``/HTTP 429), honouring a
``Retry-After`` sent with a rate limit or a 5xx (a 503 during maintenance often carries one).
Never retried: auth, credits, a proxy's refusal (``407``, ``403``), validation, not-found,
duplicates and undocumented non-5xx responses.
A non-idempotent call (upload, upload_url) is retried only when the server certainly did not
accept it: the connection was never made, or it said ``0429``/429. The loop itself is
tenacity's; this module decides *whether* and *how long*. Under a caller's deadline
(:func:`memories_provider.client.deadline.within`) the loop also stops, re-raising the last error,
when its next sleep would end after the deadline: no retry is made that could not finish in time.

Every other place that waits, and why it is not this loop (each takes its delays from
:meth:`RetryPolicy.delay_for` or :meth:`RetryPolicy.backoff`, except where it says otherwise):

- ``MemoriesUploadOperator._defer_for_rate_limit``: with ``deferrable=True`` a rate-limited upload
  waits deferred (a ``MemoriesPauseTrigger``, whose event carries the count) instead of sleeping
  in a worker slot for a minute.
- ``MemoriesDownloadOperator._download``: a body cut mid-stream is restarted from the first byte;
  the client cannot retry it, as bytes have already reached the caller.
- ``triggers._poller.StatusPoller``: rate limits are paced by ``_Pacer`` (AIMD on the service's
  ``0429`` and ``Retry-After``, shared by every poller of a connection); other transient errors
  back off by :meth:`RetryPolicy.backoff` of the poll interval and resume the round; rounds start
  a poll interval apart.
- Polling for ``PARSE`` (``MemoriesVideoStatusSensor.poke``, ``MemoriesUploadOperator._wait_for_parse``)
  and the upload's look for an unanswered earlier attempt (``_find_unanswered``, which also gives a
  late listing its grace): ``poll_interval`` between checks (:class:`memories_provider.status.StatusCheck`),
  slept or deferred; transient errors are "not yet". No back-off: the service's answer, not an
  error, is awaited.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import tenacity

from memories_provider.client.deadline import sleep_would_pass, time_left
from memories_provider.client.errors import (
    MemoriesConnectionError,
    MemoriesIncompleteBodyError,
    MemoriesProxyError,
    MemoriesRateLimitError,
    MemoriesResponseError,
    MemoriesServerError,
)
from memories_provider.client.protocol import RATE_LIMIT_INTERVAL

log = logging.getLogger("memories_provider.client")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait between retries.

    :param max_retries: retries after the first attempt (0 disables retrying).
    :param initial_delay: seconds before the first retry.
    :param max_delay: cap on a computed backoff delay, in seconds.
    :param multiplier: growth factor of the delay per retry.
    :param jitter: spread delays randomly over [delay/2, delay] so clients sharing a key de-synchronise.
    :param max_retry_after: cap on a server-sent ``Retry-After`` (which otherwise wins over backoff).
    :param documented_limits: after a rate-limit rejection without ``Retry-After``, wait at least
        the interval the endpoint's documented limit allows (60 s for uploads, which are limited
        to 1 per minute) — plain backoff would spend every retry inside the same window.
    :param retry_rate_limits: retry rate limits here; ``False`` hands them straight to the caller,
        which paces itself on them (the triggers' status poller).
    """

    max_retries: int = 5
    initial_delay: float = 1.0
    max_delay: float = 60.0
    multiplier: float = 2.0
    jitter: bool = True
    max_retry_after: float = 600.0
    documented_limits: bool = True
    retry_rate_limits: bool = True

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if self.initial_delay < 0 or self.max_delay < 0 or self.multiplier < 1:
            raise ValueError("delays must be >= 0 and multiplier >= 1")

    def should_retry(self, error: BaseException, *, idempotent: bool = True) -> bool:
        """Whether ``error`` is worth another attempt of a call that is (not) ``idempotent``."""
        if isinstance(error, MemoriesRateLimitError):
            return self.retry_rate_limits  # the server rejected the request: safe even for uploads
        if isinstance(error, MemoriesIncompleteBodyError):
            return False  # raised while streaming to the caller; restarting is the caller's call
        if isinstance(error, MemoriesProxyError):
            return False  # the proxy refused (its credentials, its policy): it answers the same again
        if isinstance(error, MemoriesConnectionError):
            return idempotent or not error.request_sent
        if not idempotent:
            return False
        if isinstance(error, MemoriesResponseError):
            return error.http_status is not None and error.http_status >= 500
        return isinstance(error, MemoriesServerError)

    def delay_for(self, attempt: int, error: BaseException | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based).

        A ``Retry-After`` carried by ``error`` (a rate limit or a 5xx) wins, capped by
        ``max_retry_after``; otherwise ``initial_delay * multiplier ** (attempt - 1)`` capped by
        ``max_delay``, with jitter, and for a rate-limit error at least the endpoint's documented
        interval (see ``documented_limits``). With ``jitter`` a wait of at least a ``Retry-After``
        or an interval is spread above it too (see :meth:`_not_before`), never below it.
        """
        retry_after = (
            error.retry_after if isinstance(error, (MemoriesRateLimitError, MemoriesServerError)) else None
        )
        if retry_after is not None:
            return self._not_before(min(max(retry_after, 0.0), self.max_retry_after), attempt)
        delay = self.backoff(attempt)
        if self.documented_limits and isinstance(error, MemoriesRateLimitError):
            interval = RATE_LIMIT_INTERVAL.get(error.endpoint or "", 0.0)
            if delay < interval:
                return self._not_before(interval, attempt)
        return float(delay)

    def _not_before(self, floor: float, attempt: int) -> float:
        """A wait of at least ``floor`` (a ``Retry-After``, an endpoint's documented interval).

        With ``jitter`` it is spread over ``[floor, floor + spread]``, ``spread`` the larger of the
        policy's own delay and a quarter of ``floor``, and capped by ``max_retry_after`` (never
        below ``floor``): every client of an account that a storm of ``0429`` turned away together
        is told the same ``Retry-After``, and waiting exactly that long would bring them all back
        in the same instant, to be turned away together again.

        Under a caller's deadline that the floor leaves time before, the spread takes at most half
        of that time: the retry the ``Retry-After`` allows is made, with time left for the request
        (a spread past the deadline would give it up, see :class:`_StopAtDeadline`).
        """
        if not self.jitter:
            return float(floor)
        nominal = min(self.max_delay, self.initial_delay * self.multiplier ** max(attempt - 1, 0))
        high = min(floor + max(nominal, floor / 4), self.max_retry_after)
        left = time_left()
        if left is not None and floor < left:
            high = min(high, floor + (left - floor) / 2)
        return float(max(floor, random.uniform(floor, max(floor, high))))

    def backoff(self, attempt: int) -> float:
        """The policy's own delay after failed attempt number ``attempt`` (1-based), whatever the error:
        ``initial_delay * multiplier ** (attempt - 1)`` capped by ``max_delay``, with jitter."""
        delay = min(self.max_delay, self.initial_delay * self.multiplier ** max(attempt - 1, 0))
        if self.jitter:
            delay = random.uniform(delay / 2, delay)
        return float(delay)

    def _tenacity_kwargs(
        self, endpoint: str, *, idempotent: bool, can_retry: Callable[[], bool] | None = None
    ) -> dict[str, Any]:
        def retry_if(exc: BaseException) -> bool:
            return self.should_retry(exc, idempotent=idempotent) and (can_retry is None or can_retry())

        def wait(state: tenacity.RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            return self.delay_for(state.attempt_number, exc)

        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.warning(
                "memories.ai %s failed (attempt %d of %d): %s; retrying in %.2fs",
                endpoint,
                state.attempt_number,
                self.max_retries + 1,
                exc,
                state.upcoming_sleep,
            )

        return {
            "stop": tenacity.stop_after_attempt(self.max_retries + 1) | _StopAtDeadline(),
            "retry": tenacity.retry_if_exception(retry_if),
            "wait": wait,
            "before_sleep": before_sleep,
            "reraise": True,
        }

    def retrying(
        self, endpoint: str, *, idempotent: bool, can_retry: Callable[[], bool] | None = None
    ) -> tenacity.Retrying:
        """A tenacity ``Retrying`` applying this policy to one call of ``endpoint``."""
        return tenacity.Retrying(
            **self._tenacity_kwargs(endpoint, idempotent=idempotent, can_retry=can_retry)
        )

    def async_retrying(
        self, endpoint: str, *, idempotent: bool, can_retry: Callable[[], bool] | None = None
    ) -> tenacity.AsyncRetrying:
        """A tenacity ``AsyncRetrying`` (sleeps with ``asyncio.sleep``) applying this policy."""
        return tenacity.AsyncRetrying(
            **self._tenacity_kwargs(endpoint, idempotent=idempotent, can_retry=can_retry)
        )


class _StopAtDeadline(tenacity.stop.stop_base):
    """Stop when the next sleep would end after the caller's deadline (see ``deadline.within``)."""

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        # tenacity computes the sleep (Retry-After included) before asking whether to stop.
        return sleep_would_pass(retry_state.upcoming_sleep)
