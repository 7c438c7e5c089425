"""MemoriesVideoStatusTrigger and its shared poller, run in a real event loop against the emulator."""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import json
import logging
import math
import subprocess
import sys
import time

import pytest
from airflow.providers.common.compat.sdk import TaskDeferred
from connections import use_emulator_conn

from memories_provider.client import RetryPolicy
from memories_provider.sensors.video_status import MemoriesVideoStatusSensor
from memories_provider.status import BATCH_SIZE
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
    trigger = MemoriesVideoStatusTrigger(
        ["VI000000000000000001", "VI000000000000000002"], "mem", "u", 7.5, 1700000000.0
    )
    path, kwargs = trigger.serialize()
    assert path == "memories_provider.triggers.video_status.MemoriesVideoStatusTrigger"
    assert kwargs == {
        "video_nos": ["VI000000000000000001", "VI000000000000000002"],
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
    unknown = "VI" + "9" * 18
    event = await first_event(MemoriesVideoStatusTrigger([unknown], poll_interval=0.05))
    assert event["status"] == "failed"
    assert unknown in event["message"] and "not found" in event["message"]


async def test_a_bad_id_among_300_waits_fails_only_its_own_wait(emu, new_video):
    ids = [new_video(hold=False) for _ in range(300)]
    bad = "VI-not-an-id"  # the service refuses any batch naming it (0001)
    triggers = [MemoriesVideoStatusTrigger([v], poll_interval=0.05) for v in ids]
    triggers.append(MemoriesVideoStatusTrigger([ids[0], bad], poll_interval=0.05))
    *good, holding_bad = await asyncio.wait_for(asyncio.gather(*(first_event(t) for t in triggers)), 60)
    assert [e["status"] for e in good] == ["success"] * 300
    assert holding_bad["status"] == "failed"
    assert bad in holding_bad["message"] and "18 digits" in holding_bad["message"]
    assert ids[0] not in holding_bad["message"]
    # 2 batches (301 ids), and the refused one split in halves down to the bad id: 2 requests a level.
    assert emu.control.count("list_videos") <= 2 + 2 * math.ceil(math.log2(BATCH_SIZE))


@pytest.mark.parametrize("fault", ["http_503", "code_0429"])
async def test_a_round_resumes_at_the_batch_that_failed(emu, new_video, fault):
    ids = [new_video(hold=False) for _ in range(500)]  # five batches
    emu.control.inject_fault("list_videos", "none", count=2)
    emu.control.inject_fault("list_videos", fault, retry_after=0.05)  # the third batch fails once
    waits = [first_event(MemoriesVideoStatusTrigger([v], poll_interval=0.05)) for v in ids]
    events = await asyncio.wait_for(asyncio.gather(*waits), 60)
    assert {e["status"] for e in events} == {"success"}
    log = emu.control.request_log("list_videos")
    assert [r.get("fault") for r in log].count(fault) == 1
    # Each id answered exactly once: a round restarted after the failed batch, or one that dropped
    # what the batches before it learnt, would ask some ids again. (Counted per id rather than per
    # call: under load the 500 waits may join over more than one round.)
    asked = [v for r in log if r.get("fault") is None for v in r["video_nos"]]
    assert sorted(asked) == sorted(ids)


async def test_a_batch_one_id_keeps_failing_holds_back_no_other_wait_and_that_id_is_reported(emu, new_video):
    # Every list_videos naming one id fails (a row the service cannot list): its batch, the third
    # of five, fails every time. The other 999 waits still end, and the wait holding that id ends
    # with an error naming it, not silently at its timeout.
    ids = sorted(new_video(hold=False) for _ in range(5 * BATCH_SIZE))
    bad = ids[2 * BATCH_SIZE + 17]
    emu.control.inject_fault("list_videos", "http_500", count=10**6, video_no=bad)
    waits = [first_event(MemoriesVideoStatusTrigger([v], poll_interval=0.05)) for v in ids]
    events = dict(zip(ids, await asyncio.wait_for(asyncio.gather(*waits), 120), strict=True))
    poisoned = events.pop(bad)
    assert {e["status"] for e in events.values()} == {"success"}
    assert poisoned["status"] == "error"
    assert bad in poisoned["message"] and "500" in poisoned["message"]
    assert not any(v in poisoned["message"] for v in events)  # only the id that fails is named
    log = emu.control.request_log("list_videos")
    failed = [r for r in log if r.get("fault")]
    assert all(bad in r["video_nos"] for r in failed)
    # Split down to the id (one failure a level), then asked alone once a round until reported.
    alone = [r for r in failed if r["video_nos"] == [bad]]
    assert len(alone) == _poller.MAX_LONE_FAILURES
    assert len(failed) <= math.ceil(math.log2(BATCH_SIZE)) + 1 + _poller.MAX_LONE_FAILURES


async def test_a_service_that_caps_list_videos_pages_still_ends_every_wait(emu, new_video):
    ids = [new_video(hold=False) for _ in range(70)]
    emu.control.configure(max_page_size=30)  # an edition with an undocumented cap on `size`
    events = await asyncio.wait_for(
        asyncio.gather(*(first_event(MemoriesVideoStatusTrigger([v], poll_interval=0.05)) for v in ids)), 60
    )
    assert {e["status"] for e in events} == {"success"}
    sizes = [len(r["video_nos"]) for r in emu.control.request_log("list_videos")]
    assert sizes[0] > 30  # (70 when every trigger joined the first round)
    # A page of 30 out of more: the next request asks for the rest of the batch, until all were listed.
    assert all(after == before - 30 for before, after in itertools.pairwise(sizes) if before > 30), sizes


async def test_timeout_names_each_waiting_video_with_its_last_status(emu, new_video):
    held, parsed = new_video(hold=True), new_video(hold=False)
    end = time.time() + 0.5
    event = await first_event(MemoriesVideoStatusTrigger([held, parsed], poll_interval=0.05, end_time=end))
    assert event["status"] == "timeout"
    assert f"1 of 2 video(s) not parsed: UNPARSE: {held}" in event["message"]
    assert parsed not in event["message"]


async def test_a_0429_storm_ends_at_end_time_and_says_no_status_was_seen(emu, new_video):
    video_no = new_video(hold=True)
    emu.control.inject_fault("list_videos", "code_0429", count=10_000, retry_after=4)
    end = time.time() + 1.0
    event = await first_event(MemoriesVideoStatusTrigger([video_no], poll_interval=0.05, end_time=end))
    assert event["status"] == "timeout"
    assert f"no status seen: {video_no}" in event["message"] and "0429" in event["message"]
    for poller in _poller.active_pollers():
        await asyncio.wait_for(poller._task, 10)
    # The pacer held the next request back for the 4 s Retry-After, which ends past end_time.
    assert emu.control.count("list_videos") == 1


async def test_a_video_not_listed_yet_keeps_a_missing_is_pending_wait_going(emu):
    # The upload's wait for a video it just uploaded: not listed is "not yet", not unknown.
    unlisted = "VI" + "9" * 18
    trigger = MemoriesVideoStatusTrigger(
        [unlisted], poll_interval=0.05, end_time=time.time() + 0.5, missing_is_pending=True
    )
    kwargs = trigger.serialize()[1]
    assert kwargs["missing_is_pending"] is True
    event = await asyncio.wait_for(first_event(MemoriesVideoStatusTrigger(**kwargs)), 60)
    assert event["status"] == "timeout"
    assert f"not listed: {unlisted}" in event["message"]  # asked, and not listed: still waiting


async def test_timeout_at_end_time(emu, new_video):
    video_no = new_video(hold=True)
    trigger = MemoriesVideoStatusTrigger([video_no], poll_interval=3600, end_time=time.time() + 0.3)
    # The deadline cuts the hour's sleep short: anything else would trip wait_for.
    event = await asyncio.wait_for(first_event(trigger), 60)
    assert event["status"] == "timeout"


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


LOG_TRIGGER_ID: contextvars.ContextVar[int] = contextvars.ContextVar("trigger_id")


async def test_poller_logs_are_not_attributed_to_the_trigger_that_started_it(emu, new_video, caplog):
    """Like Airflow 2's TriggerMetadataFilter, tag records from a context var at emit time."""

    def tag(record: logging.LogRecord) -> bool:
        record.trigger_id = LOG_TRIGGER_ID.get(None)
        return True

    caplog.handler.addFilter(tag)
    video_no = new_video(hold=False)
    emu.control.inject_fault("list_videos", "http_503")  # the poller logs a warning about it
    LOG_TRIGGER_ID.set(1)  # the first trigger's task context, which its poller must not inherit
    logging.getLogger("trigger").warning("logged in the trigger's context")
    event = await first_event(MemoriesVideoStatusTrigger([video_no], poll_interval=0.01))
    assert event["status"] == "success"
    [trigger_log] = [r for r in caplog.records if r.name == "trigger"]
    [poller_log] = [r for r in caplog.records if r.name == _poller.log.name]
    assert (trigger_log.trigger_id, poller_log.trigger_id) == (1, None)


async def test_auth_error_ends_the_wait_as_failed(emu, monkeypatch):
    # "failed", not "error": a wrong key is refused on every retry (spec: fail fast), so the
    # resumed task fails without spending its retries (AirflowFailException).
    use_emulator_conn(monkeypatch, emu, "wrong_key", password="sk-wrong")
    event = await first_event(
        MemoriesVideoStatusTrigger(["VI000000000000000001"], memories_conn_id="wrong_key", poll_interval=0.05)
    )
    assert event["status"] == "failed" and "code=0401" in event["message"]
    assert "sk-wrong" not in event["message"]


async def test_cancelled_trigger_wakes_the_sleeping_loop_which_stops(emu, new_video):
    done, held = new_video(hold=False), new_video(hold=True)
    quick = asyncio.ensure_future(first_event(MemoriesVideoStatusTrigger([done], poll_interval=30)))
    waiting = asyncio.ensure_future(first_event(MemoriesVideoStatusTrigger([held], poll_interval=30)))
    # The poller resolves ``quick`` and goes straight to its 30 s sleep: it is asleep from here on.
    assert (await asyncio.wait_for(quick, 10))["status"] == "success"
    [poller] = _poller.active_pollers()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    # The last waiter left: the loop wakes, closes its session and ends, well before the 30 s sleep.
    await asyncio.wait_for(poller._task, 5)
    assert _poller.active_pollers() == []
    assert emu.control.count("list_videos") == 1


async def test_deadline_fires_during_a_stalled_round_and_skips_its_other_batches(emu, new_video):
    ids = [new_video(hold=True) for _ in range(BATCH_SIZE + 1)]  # two batches: BATCH_SIZE + 1
    emu.control.inject_fault("list_videos", "slow_body", delay=30.0)  # the round's first request stalls
    trigger = MemoriesVideoStatusTrigger(ids, poll_interval=0.05, end_time=time.time() + 0.5)
    # At end_time, not when the stalled response ends (30 s): anything else would trip wait_for.
    event = await asyncio.wait_for(first_event(trigger), 20)
    assert event["status"] == "timeout"
    for poller in _poller.active_pollers():  # (it may be gone already: its request ended at end_time)
        await asyncio.wait_for(poller._task, 10)
    [stalled] = emu.control.request_log("list_videos")  # nobody waits any more: batch 2 not asked
    assert stalled["fault"] == "slow_body"


async def test_read_timeout_is_transient_and_the_wait_succeeds(emu, new_video, monkeypatch):
    video_no = new_video(hold=False)
    use_emulator_conn(monkeypatch, emu, max_retries=0, timeout=0.5)
    emu.control.inject_fault("list_videos", "slow_body", delay=3.0)  # stalls past the 0.5 s read timeout
    event = await first_event(MemoriesVideoStatusTrigger([video_no], poll_interval=0.05))
    assert event["status"] == "success", event["message"]
    # Two requests: the stalled response would have answered PARSE had the poller waited it out.
    timed_out, answered = emu.control.request_log("list_videos")
    assert timed_out["fault"] == "slow_body" and "fault" not in answered


# Run in a fresh interpreter so that run() itself must import the client stack (aiohttp, the hook) off
# the loop. What would block is caught by where it runs, not by how long it takes (a timing threshold
# flakes on a loaded machine): a sync connection lookup, a blocking socket call, time.sleep or an
# import of the client stack made by the thread that is running the event loop is recorded.
NON_BLOCKING_SCRIPT = """
import asyncio, importlib.abc, json, socket, sys, time

from airflow.providers.common.compat.sdk import BaseHook

from memories_provider.triggers.video_status import MemoriesVideoStatusTrigger

video_no = sys.argv[1]
on_loop = []


def note(what):
    if asyncio._get_running_loop() is not None:  # this thread is running the loop
        on_loop.append(what)


sync_get_connection = BaseHook.get_connection.__func__


def watched_get_connection(cls, *args, **kwargs):
    note("get_connection")
    return sync_get_connection(cls, *args, **kwargs)


BaseHook.get_connection = classmethod(watched_get_connection)


def watch_blocking(name):
    original = getattr(socket.socket, name)

    def call(self, *args, **kwargs):
        if self.gettimeout() != 0.0:  # a blocking socket (the loop's own sockets are non-blocking)
            note(f"socket.{name}")
        return original(self, *args, **kwargs)

    setattr(socket.socket, name, call)


for name in ("connect", "recv", "recv_into", "send", "sendall"):
    watch_blocking(name)
real_sleep = time.sleep


def watched_sleep(seconds):
    note("time.sleep")
    real_sleep(seconds)


time.sleep = watched_sleep


class WatchImports(importlib.abc.MetaPathFinder):
    # The client stack, which is ours to import off the loop (Airflow's get_async_connection
    # makes small lazy imports of its own on the loop).
    def find_spec(self, fullname, path, target=None):
        if fullname.split(".")[0] in ("aiohttp", "memories_provider", "requests"):
            note(f"import {fullname}")
        return None


sys.meta_path.insert(0, WatchImports())
preloaded = [m for m in ("aiohttp", "memories_provider.triggers._poller") if m in sys.modules]


async def main():
    async for event in MemoriesVideoStatusTrigger([video_no], poll_interval=0.05).run():
        return event.payload


start = time.monotonic()
event = asyncio.run(main())
elapsed = time.monotonic() - start
print(json.dumps({"event": event, "elapsed": elapsed, "on_loop": on_loop, "preloaded": preloaded}))
"""


def test_nothing_blocks_the_event_loop(emu, new_video):
    video_no = new_video(hold=False)
    emu.control.inject_fault("list_videos", "slow_body", delay=1.0)
    proc = subprocess.run(
        [sys.executable, "-c", NON_BLOCKING_SCRIPT, video_no],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["preloaded"] == []  # run() imported the client stack itself
    assert result["event"]["status"] == "success"
    assert result["elapsed"] >= 1.0  # the stalled response was really waited for
    assert result["on_loop"] == []


def _max_within(times: list[float], width: float) -> int:
    """The most requests in any window ``[t, t + width)``."""
    return max(sum(1 for u in times if t <= u < t + width) for t in times)


async def test_500_triggers_share_one_poller_within_the_rate_limit(emu, new_video):
    emu.control.configure(parse_delay=3600)  # every upload stays UNPARSE until released
    ids = [new_video(hold=False) for _ in range(500)]
    emu.control.configure(rate_limits=True)
    interval = 0.5
    start = time.monotonic()
    waiting = asyncio.gather(
        *(first_event(MemoriesVideoStatusTrigger([v], poll_interval=interval)) for v in ids)
    )
    await wait_until(lambda: emu.control.count("list_videos") >= 2 * math.ceil(500 / BATCH_SIZE))  # 2 rounds
    await asyncio.to_thread(lambda: [emu.control.set_status(v, "PARSE") for v in ids])
    events = await asyncio.wait_for(waiting, 60)
    elapsed = time.monotonic() - start
    assert {e["status"] for e in events} == {"success"}
    log = emu.control.request_log("list_videos")
    assert all(r["code"] == "0000" and r["http_status"] == 200 for r in log)  # no 0429
    # Rounds of ceil(500/BATCH_SIZE) requests start a poll interval apart (or back to back when a
    # round, paced at 4 requests/s, takes longer than the interval).
    assert len(log) <= math.ceil(500 / BATCH_SIZE) * (math.floor(elapsed / interval) + 1)
    assert _max_within([r["time"] for r in log], 1.0) <= 5


async def test_pacer_keeps_large_rounds_under_5_requests_per_second(emu, new_video):
    emu.control.configure(parse_delay=3600)
    ids = [new_video(hold=False) for _ in range(1200)]  # 12 requests per round
    emu.control.configure(rate_limits=True)
    groups = [ids[i : i + 10] for i in range(0, len(ids), 10)]
    waiting = asyncio.gather(
        *(first_event(MemoriesVideoStatusTrigger(g, poll_interval=0.05)) for g in groups)
    )
    await wait_until(lambda: emu.control.count("list_videos") >= 15, timeout=60)  # into round two
    [poller] = _poller.active_pollers()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await asyncio.wait_for(poller._task, 10)
    log = emu.control.request_log("list_videos")
    assert all(r["code"] == "0000" and r["http_status"] == 200 for r in log)  # no 0429
    assert _max_within([r["time"] for r in log], 1.0) <= 5


async def test_unique_id_none_uses_the_connections_default_scope(emu, new_video, monkeypatch):
    """Like the worker-side check, the trigger's ``unique_id=None`` means the connection's ``unique_id``."""
    video_no = new_video(hold=False, unique_id="scoped")
    use_emulator_conn(monkeypatch, emu, "scoped", unique_id="scoped")
    event = await first_event(
        MemoriesVideoStatusTrigger([video_no], memories_conn_id="scoped", poll_interval=0.05)
    )
    assert event["status"] == "success", event["message"]
    assert [v["video_no"] for v in event["videos"]] == [video_no]


async def test_a_huge_retry_after_neither_outlives_the_waits_nor_stalls_the_connection(emu, new_video):
    # A proxy or the service saying "Retry-After: 1000000000": the wait still times out at its
    # end_time; then, as when any last waiter leaves, the poller ends (closing its session) rather
    # than sleeping on in its pacer; and the connection's pacer, which every later wait of this
    # triggerer shares, holds requests back no longer than the client ever honours a Retry-After.
    video_no = new_video(hold=True)
    emu.control.inject_fault("list_videos", "code_0429", retry_after=1e9)
    event = await first_event(
        MemoriesVideoStatusTrigger([video_no], poll_interval=0.05, end_time=time.time() + 0.5)
    )
    assert event["status"] == "timeout"
    for poller in _poller.active_pollers():
        await asyncio.wait_for(poller._task, 10)
    assert _poller.active_pollers() == []
    [pacer] = _poller._PACERS[asyncio.get_running_loop()].values()
    assert pacer.next_slot - time.monotonic() <= RetryPolicy().max_retry_after


@pytest.mark.parametrize("retry_after", [1e9, math.inf])
def test_the_pacer_honours_a_retry_after_only_up_to_the_clients_cap(retry_after):
    pause = _poller._Pacer().on_rate_limit(retry_after)
    assert pause == RetryPolicy().max_retry_after


async def test_a_wait_polling_every_hour_does_not_hold_back_one_that_polls_often(emu, new_video):
    # Two tasks on one connection and scope: one waits with poll_interval=3600, then a sensor
    # deferring with poke_interval=0.05 and a 20 s timeout joins. Its video is PARSE: it must be
    # checked at its own pace, not after the other's hour (and time out meanwhile).
    slow_video, quick_video = new_video(hold=True), new_video(hold=False)
    slow = asyncio.ensure_future(first_event(MemoriesVideoStatusTrigger([slow_video], poll_interval=3600)))
    await wait_until(lambda: emu.control.count("list_videos") >= 1)  # the slow one's round: now asleep
    quick = MemoriesVideoStatusTrigger([quick_video], poll_interval=0.05, end_time=time.time() + 20)
    try:
        event = await asyncio.wait_for(first_event(quick), 60)
        assert event["status"] == "success"
    finally:
        slow.cancel()
        await asyncio.gather(slow, return_exceptions=True)


def test_pacers_told_the_same_retry_after_do_not_come_back_together():
    # Triggerers sharing an account, turned away by one storm with the same Retry-After: each
    # holds back at least that long, not all exactly that long (they would meet the limit again
    # together).
    pauses = [_poller._Pacer().on_rate_limit(10.0) for _ in range(20)]
    assert all(10.0 <= p <= 10.0 * (1 + _poller.PAUSE_SPREAD) for p in pauses)
    assert len(set(pauses)) > 1


async def test_pollers_failed_together_by_an_outage_do_not_come_back_together(emu, new_video, monkeypatch):
    # Two pollers (two scopes) meet the same 503: each backs off at least interval * 2, not both
    # exactly that long (triggerers would come back in lockstep when the service does).
    backoffs: list[float] = []
    sleep = _poller.StatusPoller._sleep

    async def spy(self, seconds, **kwargs):
        if kwargs.get("also") is None:  # not the sleep between rounds
            backoffs.append(seconds)
        await sleep(self, seconds, **kwargs)

    monkeypatch.setattr(_poller.StatusPoller, "_sleep", spy)
    scoped = {u: new_video(hold=False, unique_id=u) for u in ("a", "b", "c", "d")}
    emu.control.inject_fault("list_videos", "http_503", count=len(scoped))
    interval = 0.02
    events = await asyncio.wait_for(
        asyncio.gather(
            *(
                first_event(MemoriesVideoStatusTrigger([v], unique_id=u, poll_interval=interval))
                for u, v in scoped.items()
            )
        ),
        60,
    )
    assert {e["status"] for e in events} == {"success"}
    assert len(backoffs) == len(scoped)
    assert all(2 * interval <= b <= 2 * interval * (1 + _poller.PAUSE_SPREAD) for b in backoffs)
    assert len(set(backoffs)) > 1


async def test_a_key_rotated_while_triggers_wait_is_read_again_not_failed(emu, new_video, monkeypatch):
    # An operator rotates the account's key: the connection gets the new one, then the old one is
    # revoked. The waits deferred before (and the poller serving them) must go on with the new key,
    # not end "failed" (no retries) for a refusal of a key the connection no longer holds.
    held, joins_later = new_video(hold=True), new_video(hold=True)
    first = asyncio.ensure_future(first_event(MemoriesVideoStatusTrigger([held], poll_interval=0.05)))
    await wait_until(lambda: emu.control.count("list_videos") >= 1)
    use_emulator_conn(monkeypatch, emu, max_retries=0, password="sk-rotated-key")
    emu.control.configure(api_keys=["sk-rotated-key"])
    later = asyncio.ensure_future(first_event(MemoriesVideoStatusTrigger([joins_later], poll_interval=0.05)))
    await wait_until(lambda: any(r["code"] == "0401" for r in emu.control.request_log("list_videos")))
    emu.control.set_statuses([held, joins_later], "PARSE")
    events = await asyncio.wait_for(asyncio.gather(first, later), 30)
    assert [e["status"] for e in events] == ["success", "success"], events
    refused = [r for r in emu.control.request_log("list_videos") if r["code"] == "0401"]
    assert len(refused) == 1  # the connection was read again once, not on every request


async def test_a_key_refused_that_the_connection_still_holds_fails_the_waits(emu, new_video):
    # The other side of the re-read: the connection unchanged, the refusal is final at once.
    held = new_video(hold=True)
    waiting = asyncio.ensure_future(first_event(MemoriesVideoStatusTrigger([held], poll_interval=0.05)))
    await wait_until(lambda: emu.control.count("list_videos") >= 1)
    emu.control.configure(api_keys=["sk-someone-else"])
    event = await asyncio.wait_for(waiting, 30)
    assert event["status"] == "failed" and event.get("refused") == "account", event
    assert [r["code"] for r in emu.control.request_log("list_videos")].count("0401") == 1


async def test_a_wait_deferred_after_the_default_unique_id_changed_is_asked_in_the_scope_checked(
    emu, new_video, monkeypatch
):
    # A busy triggerer's poller for (connection, unique_id=None) lives as long as waits keep it
    # busy, with the connection's default scope as it read it then. Its default is changed: a
    # sensor (no unique_id) checks its new video in the new scope on the worker and defers. The
    # trigger must ask where the worker checked, not in the poller's stale scope, where the video
    # is unknown and its wait would fail at once, unretried.
    held = new_video(hold=True)  # in "default", the connection's default scope
    first = asyncio.ensure_future(first_event(MemoriesVideoStatusTrigger([held], poll_interval=0.05)))
    await wait_until(lambda: emu.control.count("list_videos") >= 1)
    use_emulator_conn(monkeypatch, emu, max_retries=0, unique_id="team-b")
    moved = new_video(hold=True, unique_id="team-b")
    sensor = MemoriesVideoStatusSensor(task_id="wait", video_no=moved, deferrable=True, poke_interval=0.05)
    # In this thread (the loop waits meanwhile): Airflow 2.11's execute() fails in any thread but
    # the one that first imported BaseOperator ('_thread._local' object has no attribute 'callers').
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})
    emu.control.set_statuses([held, moved], "PARSE")
    events = await asyncio.wait_for(asyncio.gather(first, first_event(deferred.value.trigger)), 30)
    assert [e["status"] for e in events] == ["success", "success"], events


async def test_a_proxy_refusing_its_credentials_ends_the_waits_without_polling_on(emu, monkeypatch):
    """Behind a proxy that refuses its credentials (407), the poller ends the waits with the proxy's
    error after one request: it backed off and asked again until the waits' end_time (the
    credentials in HTTP_PROXY do not change meanwhile). Never the proxy's password."""
    from tests.client.test_client_proxy import ForwardingProxy

    with ForwardingProxy(credentials="corp:the-right-one") as proxy:
        monkeypatch.setenv("HTTP_PROXY", f"http://corp:pr0xy-pa55@127.0.0.1:{proxy.port}")
        trigger = MemoriesVideoStatusTrigger(
            ["VI000000000000000001"], poll_interval=0.01, end_time=time.time() + 60
        )
        event = await asyncio.wait_for(first_event(trigger), 120)
    assert event["status"] == "error", event
    assert f"the proxy {proxy.url} refused authentication (HTTP 407" in event["message"]
    assert "pr0xy-pa55" not in json.dumps(event)
    assert len(proxy.seen) == 1
