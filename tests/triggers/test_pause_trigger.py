"""MemoriesPauseTrigger: a pause whose event carries the resumed task's state."""

from __future__ import annotations

import asyncio
import importlib
import json
import math
import time

import pytest

from memories_provider.triggers.pause import MemoriesPauseTrigger


def test_serialize_round_trips_plain_json() -> None:
    trigger = MemoriesPauseTrigger(1_700_000_000.5, {"rate_limited": 2})
    path, kwargs = trigger.serialize()
    assert json.loads(json.dumps(kwargs)) == {"fire_at": 1_700_000_000.5, "payload": {"rate_limited": 2}}
    module, _, name = path.rpartition(".")
    again = getattr(importlib.import_module(module), name)(**kwargs)
    assert again.serialize() == (path, kwargs)


def test_a_moment_passed_fires_at_once_with_the_payload() -> None:
    async def first_event() -> object:
        async for event in MemoriesPauseTrigger(time.time() - 5, {"rate_limited": 3}).run():
            return event.payload
        return None

    assert asyncio.run(first_event()) == {"rate_limited": 3}


def test_a_moment_ahead_is_waited_for() -> None:
    async def fired_within(seconds: float) -> bool:
        run = MemoriesPauseTrigger(time.time() + 3600, {}).run()
        try:
            await asyncio.wait_for(run.__anext__(), seconds)
        except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
            return False
        finally:
            await run.aclose()
        return True

    assert not asyncio.run(fired_within(0.05))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_moment_that_is_not_a_time_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="fire_at"):
        MemoriesPauseTrigger(bad, {})
