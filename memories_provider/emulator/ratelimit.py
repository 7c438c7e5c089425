"""Sliding-window rate limiting per endpoint (spec section 3)."""

from __future__ import annotations

import collections
import time

#: Endpoints that spend another's budget: spec section 3 gives "upload, upload_url" one row, and the
#: upload page speaks of one per-account upload rate limit, so a URL upload takes an upload's slot.
SHARED_BUDGETS: dict[str, str] = {"upload_url": "upload"}


class SlidingWindowLimiter:
    """Admits at most ``n`` calls per ``window`` seconds per budget; rejected calls take no slot.

    Each endpoint has its own budget but those of :data:`SHARED_BUDGETS`, which count their calls
    with another endpoint's (each against its own configured limit).
    """

    def __init__(self) -> None:
        self._hits: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)
        # The longest window a budget was asked with: its calls are kept that long, so an endpoint
        # sharing it with a shorter window does not forget calls the other still counts.
        self._longest: dict[str, float] = {}

    def reset(self) -> None:
        """Forget every past call."""
        self._hits.clear()
        self._longest.clear()

    def acquire(self, endpoint: str, limit: tuple[int, float] | None) -> float | None:
        """Take a slot; return None when admitted, else seconds until the oldest slot frees."""
        if limit is None:
            return None
        count, window = limit
        budget = SHARED_BUDGETS.get(endpoint, endpoint)
        now = time.monotonic()
        hits = self._hits[budget]
        self._longest[budget] = max(self._longest.get(budget, 0.0), window)
        while hits and hits[0] <= now - self._longest[budget]:
            hits.popleft()
        recent = [t for t in hits if t > now - window]
        if len(recent) >= count:
            return max(recent[-count] + window - now, 0.001)
        hits.append(now)
        return None
