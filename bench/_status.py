"""Status waits for N videos in one process: the shared poller vs one get_metadata poller per video.

``python bench/_status.py '<json args>'`` prints JSON: requests made, ticks, CPU seconds.
Modes ``shared`` and ``per_video``: the videos are held ``UNPARSE`` by the parent, so every wait
runs until its ``end_time``. Mode ``ha``: one triggerer of several (each a process like this one)
waits until the parent marks the videos ``PARSE``, and reports when its waits ended.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any


async def shared(video_nos: list[str], interval: float, duration: float) -> dict[str, Any]:
    from memories_provider.triggers.video_status import MemoriesVideoStatusTrigger

    end = time.time() + duration
    triggers = [MemoriesVideoStatusTrigger([v], poll_interval=interval, end_time=end) for v in video_nos]

    async def one(trigger: MemoriesVideoStatusTrigger) -> str:
        async for event in trigger.run():
            return str(event.payload["status"])
        return "none"

    statuses = await asyncio.gather(*(one(t) for t in triggers))
    return {"statuses": sorted(set(statuses))}


async def ha(video_nos: list[str], interval: float, duration: float) -> dict[str, Any]:
    """One of several triggerers sharing the account: its waits, and when each one ended."""
    from memories_provider.triggers import _poller
    from memories_provider.triggers.video_status import MemoriesVideoStatusTrigger

    end = time.time() + duration
    ended: list[float] = []
    statuses: list[str] = []

    async def one(trigger: MemoriesVideoStatusTrigger) -> None:
        async for event in trigger.run():
            ended.append(time.time())
            statuses.append(str(event.payload["status"]))
            return

    pacers: list[Any] = []

    async def watch() -> None:  # the pacer lives as long as the loop; keep a handle for the report
        while not pacers:
            pacers.extend(p.pacer for p in _poller.active_pollers())
            await asyncio.sleep(0.05)

    watcher = asyncio.ensure_future(watch())
    triggers = [MemoriesVideoStatusTrigger([v], poll_interval=interval, end_time=end) for v in video_nos]
    await asyncio.gather(*(one(t) for t in triggers))
    watcher.cancel()
    pacer = pacers[0] if pacers else None
    return {
        "statuses": sorted(set(statuses)),
        "first_end": min(ended),
        "last_end": max(ended),
        "answered": getattr(pacer, "answered", None),
        "rate_limited": getattr(pacer, "rate_limited", None),
        "final_rate": getattr(pacer, "rate", None),
    }


async def per_video(
    video_nos: list[str], interval: float, duration: float, args: dict[str, Any]
) -> dict[str, Any]:
    from memories_provider.client import AsyncMemoriesClient, MemoriesError, RetryPolicy

    counts = {"requests": 0, "rejected": 0}
    end = time.monotonic() + duration
    async with AsyncMemoriesClient(
        args["api_key"], base_url=args["v1_url"], v2_base_url=args["v2_url"], retry=RetryPolicy(max_retries=0)
    ) as client:

        async def poll(video_no: str) -> None:
            while time.monotonic() < end:
                counts["requests"] += 1
                try:
                    await client.get_video(video_no)
                except MemoriesError:
                    counts["rejected"] += 1
                await asyncio.sleep(interval)

        await asyncio.gather(*(poll(v) for v in video_nos))
    return counts


def main() -> None:
    args = json.loads(sys.argv[1])
    video_nos, interval, duration = args["video_nos"], args["interval"], args["duration"]
    # Imported before the CPU clock starts: "CPU per tick" is the cost of waiting, not of importing
    # Airflow and aiohttp once (which a triggerer has done long before its first trigger).
    import aiohttp  # noqa: F401

    import memories_provider.hooks.memories
    import memories_provider.triggers._poller
    import memories_provider.triggers.video_status  # noqa: F401

    cpu = time.process_time()
    wall = time.perf_counter()
    if args["mode"] == "shared":
        result = asyncio.run(shared(video_nos, interval, duration))
    elif args["mode"] == "ha":
        result = asyncio.run(ha(video_nos, interval, duration))
    else:
        result = asyncio.run(per_video(video_nos, interval, duration, args))
    result.update({"cpu": time.process_time() - cpu, "wall": time.perf_counter() - wall})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
