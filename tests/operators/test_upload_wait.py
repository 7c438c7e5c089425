"""The upload operator's ``wait_for_parse`` keeps its timeout under a storm of ``0429``."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import requests
from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException, TaskDeferred

from memories_provider.hooks.memories import MemoriesHook
from memories_provider.operators.upload import MemoriesUploadOperator


def _uploaded(emu: Any) -> str:
    body = requests.post(
        f"{emu.v1_url}/upload",
        headers={"Authorization": emu.api_key},
        files={"file": ("clip.mp4", b"\x00\x00\x00\x18ftypmp42" + b"w" * 64, "video/mp4")},
        timeout=30,
    ).json()
    video_no = str(body["data"]["videoNo"])
    emu.control.set_status(video_no, "UNPARSE")  # held
    return video_no


def test_wait_for_parse_ends_by_its_timeout_under_a_0429_storm(
    emu: Any, set_memories_conn: Callable[..., None], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("WARNING", logger="memories_provider.client")
    set_memories_conn(max_retries=5)  # five retries, each honouring the 4 s Retry-After
    video_no = _uploaded(emu)
    emu.control.inject_fault("list_videos", "code_0429", count=10_000, retry_after=4)
    timeout, interval = 2.0, 0.5
    op = MemoriesUploadOperator(
        task_id="upload", source="x.mp4", poll_interval=interval, timeout=timeout, deferrable=False
    )
    hook = MemoriesHook()
    try:
        with pytest.raises(AirflowException) as info:
            op._wait_for_parse(hook, video_no, None)
    finally:
        hook.close()
    assert not isinstance(info.value, (AirflowFailException, TaskDeferred))
    message = str(info.value)
    assert f"timed out after 2s with 1 of 1 video(s) not parsed: no status seen: {video_no}" in message
    assert "Request has exceeded the limit" in str(info.value)
    times = [r["time"] for r in emu.control.request_log("list_videos")]
    # No retry fits (4 s > 2 s): one request per check, every poll interval, and no retry sleep at
    # all (the retry loop announces each one), whatever the machine's load.
    assert 1 <= len(times) <= math.floor(timeout / interval) + 1
    retries = [r for r in caplog.records if r.name == "memories_provider.client" and "retrying in" in r.msg]
    assert retries == []


def test_deferrable_wait_for_parse_defers_at_once_under_a_0429_storm_even_before_it_is_listed(
    emu: Any, set_memories_conn: Callable[..., None]
) -> None:
    # The check before deferring sleeps out no Retry-After in the worker slot, and a video not
    # listed yet is waited for on the trigger (which keeps waiting for it), not on the worker.
    set_memories_conn(max_retries=5)  # five retries, each honouring the 600 s Retry-After
    video_no = _uploaded(emu)
    emu.control.inject_fault("list_videos", "code_0429", count=10_000, retry_after=600)
    op = MemoriesUploadOperator(
        task_id="upload", source="x.mp4", poll_interval=30, timeout=5, deferrable=True
    )
    hook = MemoriesHook()
    try:
        with pytest.raises(TaskDeferred) as info:
            op._wait_for_parse(hook, video_no, None)
    finally:
        hook.close()
    trigger = info.value.trigger
    assert trigger.video_nos == [video_no] and trigger.missing_is_pending is True
    assert trigger.serialize()[1]["missing_is_pending"] is True
    assert emu.control.count("list_videos") == 1  # one check, its 0429 not retried here
