"""Injected faults: per endpoint, a queue of ``(kind, remaining count, params)`` consumed one per call."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any

from memories_provider.emulator.config import ENDPOINTS

#: Faults that replace the whole response before auth and validation run.
EARLY_KINDS = frozenset({"http_500", "http_503", "code_0429", "http_429", "drop_before_response"})
#: Faults applied to the response the request would otherwise have got.
LATE_KINDS = frozenset({"drop_mid_body", "slow_body", "json_error", "accept_then_drop"})
#: ``none`` answers normally: queued first, it aims the next fault at a later call.
NO_FAULT = "none"
KINDS = EARLY_KINDS | LATE_KINDS | {NO_FAULT}


@dataclass
class Fault:
    """One injected fault; ``count`` calls left."""

    kind: str
    count: int
    params: dict[str, Any] = field(default_factory=dict)


class FaultBook:
    """The pending faults of every endpoint."""

    def __init__(self) -> None:
        self._queues: dict[str, collections.deque[Fault]] = collections.defaultdict(collections.deque)

    def reset(self) -> None:
        """Drop every pending fault."""
        self._queues.clear()

    def add(self, endpoint: str, kind: str, count: int = 1, params: dict[str, Any] | None = None) -> None:
        """Queue ``kind`` for the next ``count`` calls of ``endpoint`` (after faults already queued)."""
        if endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {endpoint!r}; known: {', '.join(ENDPOINTS)}")
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(sorted(KINDS))}")
        if kind == "accept_then_drop" and endpoint not in ("upload", "upload_url"):
            raise ValueError("accept_then_drop applies to upload and upload_url only")
        if count < 1:
            raise ValueError("count must be >= 1")
        self._queues[endpoint].append(Fault(kind, count, dict(params or {})))

    def take(self, endpoint: str) -> Fault | None:
        """Consume one call's worth of the first pending fault of ``endpoint``."""
        queue = self._queues.get(endpoint)
        if not queue:
            return None
        fault = queue[0]
        fault.count -= 1
        if fault.count <= 0:
            queue.popleft()
        return fault

    def pending(self) -> dict[str, list[dict[str, Any]]]:
        """JSON view of what is still queued."""
        return {
            ep: [{"kind": f.kind, "count": f.count, "params": f.params} for f in q]
            for ep, q in self._queues.items()
            if q
        }
