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

    def reset(self) -> None:
        """Forget every past call."""
        self._hits.clear()

    def acquire(self, endpoint: str, limit: tuple[int, float] | None) -> float | None:
        """Take a slot; return None when admitted, else seconds until the oldest slot frees."""
        if limit is None:
            return None
        count, window = limit
        now = time.monotonic()
        hits = self._hits[SHARED_BUDGETS.get(endpoint, endpoint)]
        while hits and hits[0] <= now - window:
            hits.popleft()
        if len(hits) >= count:
            return max(hits[0] + window - now, 0.001)
        hits.append(now)
        return None
