"""The retry policy: which errors retry (idempotent or not), backoff with jitter and cap, Retry-After."""

from __future__ import annotations

import pytest

from memories_provider.client import (
    MemoriesAuthError,
    MemoriesConnectionError,
    MemoriesDuplicateError,
    MemoriesIncompleteBodyError,
    MemoriesInsufficientCreditsError,
    MemoriesInvalidRequestError,
    MemoriesNotFoundError,
    MemoriesRateLimitError,
    MemoriesResponseError,
    MemoriesServerError,
    MemoriesTimeoutError,
    RetryPolicy,
)

POLICY = RetryPolicy()


@pytest.mark.parametrize(
    ("error", "idempotent", "expected"),
    [
        (MemoriesServerError("x", http_status=503), True, True),
        (MemoriesServerError("x", http_status=503), False, False),
        (MemoriesResponseError("x", http_status=502), True, True),
        (MemoriesResponseError("x", http_status=200), True, False),
        (MemoriesRateLimitError("x", code="0429"), True, True),
        (MemoriesRateLimitError("x", http_status=429), False, True),
        (MemoriesConnectionError("x", request_sent=True), True, True),
        (MemoriesConnectionError("x", request_sent=True), False, False),
        (MemoriesConnectionError("refused", request_sent=False), False, True),
        (MemoriesTimeoutError("read", request_sent=True), True, True),
        (MemoriesTimeoutError("read", request_sent=True), False, False),
        (MemoriesTimeoutError("connect", request_sent=False), False, True),
        (MemoriesIncompleteBodyError("short"), True, False),
        (MemoriesAuthError("x", code="0401"), True, False),
        (MemoriesInsufficientCreditsError("x", code="0402"), True, False),
        (MemoriesInvalidRequestError("x", code="0001"), True, False),
        (MemoriesNotFoundError("x", code="0001"), True, False),
        (MemoriesDuplicateError("x", code="0409"), True, False),
        (ValueError("caller bug"), True, False),
    ],
)
def test_should_retry(error, idempotent, expected):
    assert POLICY.should_retry(error, idempotent=idempotent) is expected


def test_delays_grow_exponentially_and_are_capped_without_jitter():
    policy = RetryPolicy(initial_delay=1.0, multiplier=2.0, max_delay=5.0, jitter=False)
    assert [policy.delay_for(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_jitter_stays_within_half_to_full_delay():
    policy = RetryPolicy(initial_delay=1.0, multiplier=2.0, max_delay=60.0, jitter=True)
    delays = {policy.delay_for(3) for _ in range(200)}
    assert all(2.0 <= d <= 4.0 for d in delays)
    assert len(delays) > 1  # actually random


def test_retry_after_wins_over_backoff_and_is_capped():
    policy = RetryPolicy(initial_delay=0.01, jitter=True, max_retry_after=30.0)
    # Jittered above Retry-After, never below it (clients told the same value do not come back
    # together; it was returned as is), by up to a quarter of it here, and never past the cap.
    waits = {policy.delay_for(1, MemoriesRateLimitError("x", retry_after=7.0)) for _ in range(50)}
    assert all(7.0 <= w <= 7.0 + 7.0 / 4 for w in waits) and len(waits) > 1
    assert policy.delay_for(1, MemoriesRateLimitError("x", retry_after=120.0)) == 30.0
    assert all(
        29.0 <= policy.delay_for(1, MemoriesRateLimitError("x", retry_after=29.0)) <= 30.0 for _ in range(50)
    )
    assert RetryPolicy(jitter=False).delay_for(1, MemoriesRateLimitError("x", retry_after=7.0)) == 7.0
    assert policy.delay_for(1, MemoriesRateLimitError("x", retry_after=None)) <= 0.01


def test_retry_after_of_a_5xx_wins_over_backoff():
    policy = RetryPolicy(initial_delay=0.01, jitter=False, max_retry_after=30.0)
    assert policy.delay_for(1, MemoriesServerError("x", http_status=503, retry_after=7.0)) == 7.0
    assert policy.delay_for(1, MemoriesResponseError("x", http_status=503, retry_after=120.0)) == 30.0
    assert policy.delay_for(1, MemoriesServerError("x", http_status=503)) == 0.01


def test_invalid_policy_values():
    with pytest.raises(ValueError):
        RetryPolicy(max_retries=-1)
    with pytest.raises(ValueError):
        RetryPolicy(multiplier=0.5)


def test_retrying_runs_exactly_max_retries_plus_one_attempts():
    policy = RetryPolicy(max_retries=3, initial_delay=0, jitter=False)
    calls = []

    def fail():
        calls.append(1)
        raise MemoriesServerError("boom", http_status=500)

    with pytest.raises(MemoriesServerError):
        policy.retrying("list_videos", idempotent=True)(fail)
    assert len(calls) == 4


def test_retrying_stops_at_once_on_a_permanent_error():
    policy = RetryPolicy(max_retries=3, initial_delay=0, jitter=False)
    calls = []

    def fail():
        calls.append(1)
        raise MemoriesAuthError("bad key", code="0401")

    with pytest.raises(MemoriesAuthError):
        policy.retrying("list_videos", idempotent=True)(fail)
    assert len(calls) == 1


def test_rate_limit_without_retry_after_waits_the_documented_interval():
    policy = RetryPolicy(initial_delay=1.0, jitter=False)
    assert policy.delay_for(1, MemoriesRateLimitError("x", code="0429", endpoint="upload")) == 60.0
    assert policy.delay_for(1, MemoriesRateLimitError("x", code="0429", endpoint="list_videos")) == 1.0
    assert policy.delay_for(1, MemoriesRateLimitError("x", endpoint="upload", retry_after=2.0)) == 2.0
    fast = RetryPolicy(initial_delay=0.01, jitter=False, documented_limits=False)
    assert fast.delay_for(1, MemoriesRateLimitError("x", code="0429", endpoint="upload")) == 0.01
    # Jittered: uploads turned away in the same minute do not all come back in the same instant.
    jittered = RetryPolicy(initial_delay=1.0)
    waits = {
        jittered.delay_for(1, MemoriesRateLimitError("x", code="0429", endpoint="upload")) for _ in range(50)
    }
    assert all(60.0 <= w <= 75.0 for w in waits) and len(waits) > 1


def test_backoff_is_the_formula_without_retry_after():
    policy = RetryPolicy(initial_delay=1.0, multiplier=2.0, max_delay=5.0, jitter=False)
    assert [policy.backoff(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    rate_limited = MemoriesRateLimitError("x", retry_after=30.0, endpoint="list_videos")
    assert policy.delay_for(2, rate_limited) == 30.0  # Retry-After wins in delay_for ...
    assert policy.backoff(2) == 2.0  # ... never in backoff (the poller takes the larger of the two)
    jittered = RetryPolicy(initial_delay=4.0, jitter=True)
    assert all(2.0 <= jittered.backoff(1) <= 4.0 for _ in range(50))


def test_the_pollers_backoff_is_interval_times_two_to_the_failures():
    interval = 0.5
    for failures in range(1, 12):
        policy = RetryPolicy(initial_delay=2 * interval, max_delay=300.0, jitter=False)
        assert policy.backoff(min(failures, 8)) == min(300.0, interval * 2 ** min(failures, 8))
