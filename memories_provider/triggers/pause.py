"""MemoriesPauseTrigger: a deferred pause whose event carries what the resumed task must know."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


class MemoriesPauseTrigger(BaseTrigger):
    """Fires once, at ``fire_at``, with ``payload`` as its event.

    Airflow's ``TimeDeltaTrigger`` fires with the moment only. A deferral's ``kwargs`` reach the
    resumed method on a real triggerer, but ``dag.test()`` (and ``airflow dags test``) hands that
    method the event alone: what it must count or keep across the pause (the upload's ``0429``
    retries) therefore rides in the event, which both paths deliver.

    :param fire_at: when to fire, in epoch seconds.
    :param payload: the event's payload: plain JSON, and never a secret (it is stored with the
        task instance and logged by the triggerer).
    """

    def __init__(self, fire_at: float, payload: dict[str, Any]) -> None:
        super().__init__()
        if not math.isfinite(fire_at):
            raise ValueError(f"fire_at must be a finite epoch time in seconds, got {fire_at!r}")
        self.fire_at = float(fire_at)
        self.payload = dict(payload)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Classpath and kwargs, as the triggerer stores them."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"fire_at": self.fire_at, "payload": self.payload},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Sleep until ``fire_at``, then yield the payload."""
        await asyncio.sleep(max(self.fire_at - time.time(), 0.0))
        yield TriggerEvent(self.payload)
