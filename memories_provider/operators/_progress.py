"""Progress lines for long transfers: bytes, percent and MB/s, at most every few seconds."""

from __future__ import annotations

import time
from typing import Any

#: Seconds between two progress log lines.
PROGRESS_INTERVAL = 5.0


class TransferProgress:
    """Logs ``label: done of total bytes (pct%), rate MB/s`` at most every ``interval`` seconds.

    :param log: the logger to write to (an operator's ``self.log``).
    :param label: what is moving, e.g. ``"video VI1 -> s3://b/k.mp4"``.
    :param total: expected bytes, or ``None`` when unknown.
    :param interval: minimum seconds between two lines (the final line is always written).
    """

    def __init__(self, log: Any, label: str, total: int | None, interval: float | None = None) -> None:
        self.log = log
        self.label = label
        self.total = total
        self.interval = PROGRESS_INTERVAL if interval is None else interval
        self.start = time.monotonic()
        self.last = self.start

    def update(self, done: int, *, final: bool = False) -> None:
        """Report ``done`` bytes so far; logs only when ``interval`` has passed or ``final``."""
        now = time.monotonic()
        if not final and now - self.last < self.interval:
            return
        self.last = now
        rate = done / max(now - self.start, 1e-6) / 1e6
        pct = f" ({100.0 * done / self.total:.1f}%)" if self.total else ""
        total = f" of {self.total}" if self.total is not None else ""
        self.log.info("%s: %d%s bytes%s, %.1f MB/s", self.label, done, total, pct, rate)
