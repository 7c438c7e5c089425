"""MemoriesVideoStatusTrigger and its shared poller, run in a real event loop against the emulator."""

from __future__ import annotations

import asyncio
import logging
import math
import time

import pytest

from memories_provider.triggers import _poller
from memories_provider.triggers.video_status import MemoriesVideoStatusTrigger


async def wait_until(predicate, timeout: float = 30.0) -> None:
    """Poll an external state (the emulator's request log) until ``predicate()`` holds."""
    deadline = time.monotonic() + timeout
    for _ in iter(int, 1):
        if predicate():
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def first_event(trigger: MemoriesVideoStatusTrigger) -> dict:
    async for event in trigger.run():
        return event.payload
    raise AssertionError("the trigger ended without an event")


def test_serialize_round_trips_plain_json():
    trigger = MemoriesVideoStatusTrigger(["VI1", "VI2"], "mem", "u", 7.5, 1700000000.0)
    path, kwargs = trigger.serialize()
    assert path == "memories_provider.triggers.video_status.MemoriesVideoStatusTrigger"
    assert kwargs == {
        "video_nos": ["VI1", "VI2"],
        "memories_conn_id": "mem",
        "unique_id": "u",
        "poll_interval": 7.5,
        "end_time": 1700000000.0,
    }
    again = MemoriesVideoStatusTrigger(**kwargs)
    assert again.serialize() == (path, kwargs)


async def test_success_when_all_parse(emu, new_video):
    ids = [new_video(hold=False), new_video(hold=False)]
    event = await first_event(MemoriesVideoStatusTrigger(ids, poll_interval=0.05))
    assert event["status"] == "success"
    assert [v["video_no"] for v in event["videos"]] == ids
    assert all(v["status"] == "PARSE" for v in event["videos"])


async def test_waits_through_unparse(emu, new_video):
    video_no = new_video(hold=True)
    task = asyncio.ensure_future(first_event(MemoriesVideoStatusTrigger([video_no], poll_interval=0.05)))
    # it polled at least twice while the video was UNPARSE
    await wait_until(lambda: emu.control.count("list_videos") >= 2)
    assert not task.done()
    emu.control.set_status(video_no, "PARSE")
    assert (await asyncio.wait_for(task, 10))["status"] == "success"


async def test_failed_video_names_the_id_and_cause(emu, new_video):
    ok, bad = new_video(hold=False), new_video()
    emu.control.set_status(bad, "FAILED", cause="unsupported codec")
    event = await first_event(MemoriesVideoStatusTrigger([ok, bad], poll_interval=0.05))
    assert event["status"] == "failed"
    assert bad in event["message"] and "unsupported codec" in event["message"]


async def test_unknown_video_fails_clearly(emu):
    event = await first_event(MemoriesVideoStatusTrigger(["VI-does-not-exist"], poll_interval=0.05))
    assert event["status"] == "failed"
    assert "VI-does-not-exist" in event["message"] and "not found" in event["message"]


async def test_timeout_at_end_time(emu, new_video):
    video_no = new_video(hold=True)
    start = time.time()
    event = await first_event(MemoriesVideoStatusTrigger([video_no], poll_interval=30, end_time=start + 0.3))
    assert event["status"] == "timeout"
    assert time.time() - start < 5  # the deadline cuts the 30 s sleep short


@pytest.mark.parametrize("kind", ["http_500", "http_503", "code_0429"])
async def test_transient_errors_never_end_the_wait(emu, new_video, kind):
    video_no = new_video(hold=False)
    emu.control.inject_fault("list_videos", kind, count=3, retry_after=0.01)
    event = await first_event(MemoriesVideoStatusTrigger([video_no], poll_interval=0.01))
    assert event["status"] == "success"
    codes = [(r["http_status"], r["code"]) for r in emu.control.request_log("list_videos")]
    assert len(codes) == 4  # three failures survived, then the answer


async def test_back_off_honours_retry_after(emu, new_video):
    video_no = new_video(hold=False)
    emu.control.inject_fault("list_videos", "code_0429", retry_after=1.0)
    event = await first_event(MemoriesVideoStatusTrigger([video_no], poll_interval=0.01))
    assert event["status"] == "success"
    limited, answered = emu.control.request_log("list_videos")
    assert limited["code"] == "0429"
    assert answered["time"] - limited["time"] >= 0.9  # not the 0.02 s back-off of the poll interval


async def test_auth_error_ends_the_wait_with_error(emu, monkeypatch):
    import json

    conn = json.loads(emu.conn_json)
    conn["password"] = "sk-wrong"
    monkeypatch.setenv("AIRFLOW_CONN_WRONG_KEY", json.dumps(conn))
    event = await first_event(
        MemoriesVideoStatusTrigger(["VI1"], memories_conn_id="wrong_key", poll_interval=0.05)
    )
    assert event["status"] == "error"
    assert "sk-wrong" not in event["message"]


async def test_cancelled_trigger_leaves_and_the_loop_stops(emu, new_video):
    video_no = new_video(hold=True)
    task = asyncio.ensure_future(first_event(MemoriesVideoStatusTrigger([video_no], poll_interval=0.05)))
    await wait_until(lambda: emu.control.count("list_videos") >= 1)
    [poller] = _poller.active_pollers()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(poller._task, 5)  # the loop notices nobody waits and ends
    assert _poller.active_pollers() == []


def test_nothing_blocks_the_event_loop(emu, new_video, caplog):
    video_no = new_video(hold=False)
    # The status response stalls for 1 s mid-body: a blocking (sync) call would hold the loop that
    # long. The 0.5 s threshold leaves room for a busy CI machine descheduling the process.
    emu.control.inject_fault("list_videos", "slow_body", delay=1.0)
    caplog.set_level(logging.WARNING, logger="asyncio")

    async def main() -> dict:
        loop = asyncio.get_running_loop()
        loop.slow_callback_duration = 0.5
        return await first_event(MemoriesVideoStatusTrigger([video_no], poll_interval=0.05))

    start = time.monotonic()
    assert asyncio.run(main(), debug=True)["status"] == "success"
    assert time.monotonic() - start >= 1.0  # the stalled response was really waited for
    slow = [r.getMessage() for r in caplog.records if "took" in r.getMessage()]
    assert slow == []


async def test_500_triggers_share_one_poller_within_the_rate_limit(emu, new_video):
    ids = [new_video(hold=True) for _ in range(500)]
    emu.control.configure(rate_limits=True)
    interval = 1.0
    triggers = [MemoriesVideoStatusTrigger([v], poll_interval=interval) for v in ids]
    start = time.monotonic()
    waiting = asyncio.gather(*(first_event(t) for t in triggers))
    await wait_until(lambda: emu.control.count("list_videos") >= 5)  # the first round covered everyone
    for video_no in ids:
        emu.control.set_status(video_no, "PARSE")
    events = await asyncio.wait_for(waiting, 60)
    elapsed = time.monotonic() - start
    assert {e["status"] for e in events} == {"success"}
    log = emu.control.request_log("list_videos")
    assert all(r["code"] in (None, "0000") and r["http_status"] == 200 for r in log)  # no 0429
    rounds = math.ceil(elapsed / interval) + 1
    assert len(log) <= math.ceil(500 / 100) * rounds
    # requests of one round arrive together: bucket them by poll interval
    first = log[0]["time"]
    per_interval: dict[int, int] = {}
    for r in log:
        per_interval[int((r["time"] - first) // interval)] = (
            per_interval.get(int((r["time"] - first) // interval), 0) + 1
        )
    assert max(per_interval.values()) <= 5 * 2  # at most one round (+ the next) within any interval


async def test_unique_id_none_uses_the_connections_default_scope(emu, new_video, monkeypatch):
    """Like the worker-side check, the trigger's ``unique_id=None`` means the connection's ``unique_id``."""
    import json

    video_no = new_video(hold=False, unique_id="scoped")
    conn = json.loads(emu.conn_json)
    conn["extra"]["unique_id"] = "scoped"
    monkeypatch.setenv("AIRFLOW_CONN_SCOPED", json.dumps(conn))
    event = await first_event(
        MemoriesVideoStatusTrigger([video_no], memories_conn_id="scoped", poll_interval=0.05)
    )
    assert event["status"] == "success", event["message"]
    assert [v["video_no"] for v in event["videos"]] == [video_no]
