"""A lost upload answer is never paid twice, on the emulator with the service's documented reading.

Tags (our only proof of whose a video is) are shown only once a video is PARSE, so these tests
hold the earlier attempt's video UNPARSE (``parse_delay=3600``) and move it with
``control.set_status`` at chosen moments: right after the retry's first look at the scope
(:func:`after_first_look`), never, or to FAILED. The operator runs ``execute()`` directly with an
in-memory task state store; ``test_upload_dag.py`` runs the same stories through real Airflow retries.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import socket
from pathlib import Path
from typing import Any

import pytest
import requests
from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException, TaskDeferred
from local_http import LocalServer, QuietHandler, folder_handler
from test_upload import VIDEO, Store, _TaskInstance

from memories_provider.client import (
    MemoriesAuthError,
    MemoriesClient,
    MemoriesConnectionError,
    MemoriesInsufficientCreditsError,
    Video,
)
from memories_provider.hooks.memories import MemoriesHook
from memories_provider.operators._attempt_record import AttemptRecord
from memories_provider.operators._lost_upload import CLOCK_SKEW_MS, judge
from memories_provider.operators.upload import MemoriesUploadOperator

#: A different file of the same size as VIDEO: what another task might upload as "clip.mp4" too.
OTHER = bytes(reversed(VIDEO))
assert len(OTHER) == len(VIDEO) and OTHER != VIDEO
QUICK = {"poll_interval": 0.05, "lost_answer_grace": 0.2}


@pytest.fixture
def video(tmp_path: Path) -> Path:
    path = tmp_path / "clip.mp4"
    path.write_bytes(VIDEO)
    return path


@pytest.fixture
def held(emu: Any) -> Any:
    """The emulator with every upload held UNPARSE until a test moves it."""
    emu.control.configure(parse_delay=3600)
    return emu


def attempt(store: Store, try_number: int = 1, **kwargs: Any) -> tuple[str, _TaskInstance]:
    ti = _TaskInstance(try_number=try_number)
    op = MemoriesUploadOperator(task_id="upload", **{**QUICK, **kwargs})
    return op.execute({"ti": ti, "task_state_store": store}), ti


def lost_first_attempt(emu: Any, store: Store, source: Path, fault: str = "accept_then_drop") -> None:
    """Attempt 1: the body goes out whole and the answer is lost (``fault`` decides if it was kept)."""
    emu.control.inject_fault("upload", fault)
    with pytest.raises(MemoriesConnectionError) as info:
        attempt(store, source=str(source))
    assert info.value.request_sent
    record = store["memories_video_no"]
    assert "video_no" not in record and record["size"] == len(VIDEO)  # sent, no answer


def tag_of(video: dict) -> str:
    [tag] = [t for t in video["tags"] if t.startswith("airflow-")]
    return tag


# ---------------------------------------------------------------------------- the earlier video UNPARSE


def test_unparse_for_the_whole_retry_uploads_nothing_and_names_the_candidate(held: Any, video: Path) -> None:
    store = Store()
    lost_first_attempt(held, store, video)
    [earlier] = held.control.videos()
    with pytest.raises(AirflowFailException) as info:
        attempt(store, 2, source=str(video), timeout=0.5)
    message = str(info.value)
    assert earlier["video_no"] in message and "UNPARSE" in message and "not parsed after" in message
    assert "delete" in message and "idempotent=False" in message  # what the user can do
    assert [v["video_no"] for v in held.control.videos()] == [earlier["video_no"]]
    assert held.control.count("upload") == 1
    assert held.control.videos()[0]["status"] == "UNPARSE"  # the whole retry long
    assert "video_no" not in store["memories_video_no"]  # still undecided for the next try


def test_reaching_parse_during_the_retry_reuses_it(held: Any, video: Path, after_first_look: Any) -> None:
    store = Store()
    lost_first_attempt(held, store, video)
    [earlier] = held.control.videos()
    looks = after_first_look(lambda: held.control.set_status(earlier["video_no"], "PARSE"))
    video_no, ti = attempt(store, 2, source=str(video))
    assert video_no == earlier["video_no"] and ti.xcom["upload_result"]["reused"] is True
    assert looks[0] == 2  # saw it UNPARSE, waited, saw it PARSE with our tag
    assert held.control.count("upload") == 1 and len(held.control.videos()) == 1
    assert store["memories_video_no"]["video_no"] == video_no  # a further retry needs one get_metadata


def test_deferrable_retry_waits_for_the_candidates_on_the_status_trigger(held: Any, video: Path) -> None:
    from memories_provider.triggers.video_status import MemoriesVideoStatusTrigger

    store = Store()
    lost_first_attempt(held, store, video)
    [earlier] = held.control.videos()
    op = MemoriesUploadOperator(task_id="upload", source=str(video), deferrable=True, timeout=600, **QUICK)
    context = {"ti": _TaskInstance(try_number=2), "task_state_store": store}
    with pytest.raises(TaskDeferred) as info:
        op.execute(context)
    deferred = info.value
    assert isinstance(deferred.trigger, MemoriesVideoStatusTrigger)
    assert deferred.trigger.video_nos == [earlier["video_no"]]
    assert deferred.method_name == "execute_after_candidates"
    since = deferred.kwargs["since"]
    assert deferred.trigger.end_time == pytest.approx(since + 600)
    assert held.api_key not in str(deferred.trigger.serialize())
    # Resumed while still UNPARSE (e.g. the trigger timed out early): it defers again, same deadline.
    with pytest.raises(TaskDeferred) as again:
        op.execute_after_candidates(context, None, **deferred.kwargs)
    assert again.value.kwargs == deferred.kwargs  # the same `since` (and try start, if timed)
    held.control.set_status(earlier["video_no"], "PARSE")
    assert (
        op.execute_after_candidates(context, {"status": "success"}, **deferred.kwargs) == earlier["video_no"]
    )
    assert held.control.count("upload") == 1


def test_the_execution_timeout_survives_a_wait_for_candidates(held: Any, video: Path) -> None:
    # Airflow 3 gives a resumed run a whole new execution_timeout: the try's start must ride along,
    # or each deferral after a wait for candidates (another wait, a rate limit, PARSE) starts afresh.
    from datetime import timedelta

    store = Store()
    lost_first_attempt(held, store, video)
    kwargs: dict[str, Any] = dict(task_id="upload", source=str(video), deferrable=True, timeout=600, **QUICK)
    op = MemoriesUploadOperator(execution_timeout=timedelta(seconds=600), **kwargs)
    context = {"ti": _TaskInstance(try_number=2), "task_state_store": store}
    with pytest.raises(TaskDeferred) as info:
        op.execute(context)
    started = info.value.kwargs["started_at"]
    # Resumed 590 s into the try, in a new process (a new operator), still UNPARSE: it defers again
    # for at most the 10 s of execution_timeout left, not a new 600.
    resumed = MemoriesUploadOperator(execution_timeout=timedelta(seconds=600), **kwargs)
    with pytest.raises(TaskDeferred) as again:
        resumed.execute_after_candidates(context, None, **{**info.value.kwargs, "started_at": started - 590})
    assert again.value.timeout is not None and again.value.timeout <= timedelta(seconds=10)
    assert again.value.kwargs["started_at"] == started - 590
    assert held.control.count("upload") == 1


def test_the_execution_timeout_survives_the_deferred_wait_for_candidates(held: Any, video: Path) -> None:
    # Airflow 3 gives a resumed run a whole new execution_timeout: the try's start rides with the
    # deferral, and a resume that finds it passed (a trigger that fired late) uploads nothing.
    from datetime import timedelta

    from airflow.providers.common.compat.sdk import AirflowTaskTimeout

    store = Store()
    lost_first_attempt(held, store, video)
    kwargs: dict[str, Any] = {"source": str(video), "deferrable": True, "timeout": 3600, **QUICK}
    window = timedelta(seconds=600)
    context = {"ti": _TaskInstance(try_number=2), "task_state_store": store}
    with pytest.raises(TaskDeferred) as info:
        MemoriesUploadOperator(task_id="upload", execution_timeout=window, **kwargs).execute(context)
    deferred = info.value
    started = deferred.kwargs["started_at"]
    assert deferred.timeout is not None and deferred.timeout <= window
    resumed = MemoriesUploadOperator(task_id="upload", execution_timeout=window, **kwargs)  # a new process
    late = {**deferred.kwargs, "started_at": started - 601}
    with pytest.raises(AirflowTaskTimeout, match="execution_timeout"):
        resumed.execute_after_candidates(context, {"status": "success"}, **late)
    assert held.control.count("upload") == 1


def test_the_execution_timeout_survives_the_deferred_grace_for_a_late_listing(emu: Any, video: Path) -> None:
    # Nothing listed yet: the retry waits out the grace on a pause whose event carries the try's
    # start and `since` (dag.test() hands the resumed method the event alone).
    from datetime import timedelta

    from airflow.providers.common.compat.sdk import AirflowTaskTimeout

    from memories_provider.triggers.pause import MemoriesPauseTrigger

    store = Store()
    lost_first_attempt(emu, store, video, fault="drop_before_response")
    kwargs: dict[str, Any] = {"source": str(video), "deferrable": True, "timeout": 3600}
    kwargs |= {"poll_interval": 0.05, "lost_answer_grace": 60, "execution_timeout": timedelta(seconds=600)}
    context = {"ti": _TaskInstance(try_number=2), "task_state_store": store}
    with pytest.raises(TaskDeferred) as info:
        MemoriesUploadOperator(task_id="upload", **kwargs).execute(context)
    pause = info.value.trigger
    assert isinstance(pause, MemoriesPauseTrigger)
    assert info.value.timeout is not None and info.value.timeout <= timedelta(seconds=600)
    assert pause.payload["started_at"] <= pause.fire_at < pause.payload["started_at"] + 600
    late = {**pause.payload, "started_at": pause.payload["started_at"] - 601}
    with pytest.raises(AirflowTaskTimeout, match="execution_timeout"):
        MemoriesUploadOperator(task_id="upload", **kwargs).execute_after_candidates(context, late)
    assert emu.control.count("upload") == 1 and emu.control.videos() == []


def test_the_deadline_survives_deferral(held: Any, video: Path) -> None:
    # `since` comes back from the trigger: a resumed retry does not restart its timeout.
    store = Store()
    lost_first_attempt(held, store, video)
    op = MemoriesUploadOperator(task_id="upload", source=str(video), deferrable=True, timeout=60, **QUICK)
    context = {"ti": _TaskInstance(try_number=2), "task_state_store": store}
    with pytest.raises(AirflowFailException, match="not parsed after 60s"):
        op.execute_after_candidates(context, {"status": "timeout"}, since=1.0)  # long ago
    assert held.control.count("upload") == 1


# ---------------------------------------------------------------------------- someone else's upload


def test_another_tasks_same_size_same_name_video_is_never_taken_for_ours(
    held: Any, video: Path, upload_video: Any, after_first_look: Any
) -> None:
    store = Store()
    lost_first_attempt(held, store, video)
    [earlier] = held.control.videos()
    theirs = upload_video(OTHER, "clip.mp4")  # another task, between the attempts; UNPARSE too

    def both_parse() -> None:
        held.control.set_status(theirs, "PARSE")
        held.control.set_status(earlier["video_no"], "PARSE")

    after_first_look(both_parse)
    video_no, _ = attempt(store, 2, source=str(video))
    assert video_no == earlier["video_no"] != theirs
    assert {v["video_no"] for v in held.control.videos()} == {earlier["video_no"], theirs}
    assert held.control.count("upload") == 2  # attempt 1 and the other task: no duplicate


def test_our_upload_lost_before_it_arrived_is_sent_again_even_beside_a_look_alike(
    held: Any, video: Path, upload_video: Any, after_first_look: Any
) -> None:
    store = Store()
    # The body went out whole, the service dropped it without storing: nothing was billed.
    lost_first_attempt(held, store, video, fault="drop_before_response")
    assert held.control.videos() == []
    theirs = upload_video(OTHER, "clip.mp4")
    after_first_look(lambda: held.control.set_status(theirs, "PARSE"))
    video_no, ti = attempt(store, 2, source=str(video))
    assert video_no != theirs and ti.xcom["upload_result"]["reused"] is False
    videos = {v["video_no"]: v for v in held.control.videos()}
    assert set(videos) == {theirs, video_no}
    assert videos[video_no]["sha256"] != videos[theirs]["sha256"]
    assert tag_of(videos[video_no]) == store["memories_video_no"]["tag"]


def test_look_alikes_unparse_for_the_whole_retry_are_all_named(
    held: Any, video: Path, upload_video: Any
) -> None:
    store = Store()
    lost_first_attempt(held, store, video)
    [earlier] = held.control.videos()
    theirs = upload_video(OTHER, "clip.mp4")
    with pytest.raises(AirflowFailException) as info:
        attempt(store, 2, source=str(video), timeout=0.3)
    assert earlier["video_no"] in str(info.value) and theirs in str(info.value)
    assert held.control.count("upload") == 2


def test_two_tasks_losing_answers_for_the_same_file_each_find_their_own(
    held: Any, video: Path, after_first_look: Any
) -> None:
    # Two task instances (two runs) upload the very same bytes and both lose the answer: each
    # is the other's look-alike until PARSE shows the tags.
    stores = {"run-1": Store(), "run-2": Store()}
    for run_id, store in stores.items():
        held.control.inject_fault("upload", "accept_then_drop")
        ti = _TaskInstance()
        ti.run_id = run_id
        with pytest.raises(MemoriesConnectionError):
            MemoriesUploadOperator(task_id="upload", source=str(video), **QUICK).execute(
                {"ti": ti, "task_state_store": store}
            )
    by_tag = {tag_of(v): v["video_no"] for v in held.control.videos()}
    assert len(by_tag) == 2

    def all_parse() -> None:
        for v in held.control.videos():
            held.control.set_status(v["video_no"], "PARSE")

    after_first_look(all_parse)
    for run_id, store in stores.items():
        ti = _TaskInstance(try_number=2)
        ti.run_id = run_id
        got = MemoriesUploadOperator(task_id="upload", source=str(video), **QUICK).execute(
            {"ti": ti, "task_state_store": store}
        )
        assert got == by_tag[store["memories_video_no"]["tag"]]
    assert held.control.count("upload") == 2


def test_a_storm_of_0429_while_looking_is_waited_out(
    held: Any, video: Path, set_memories_conn: Any, after_first_look: Any
) -> None:
    store = Store()
    lost_first_attempt(held, store, video)
    [earlier] = held.control.videos()
    set_memories_conn(max_retries=0)  # the client gives up at once: the look itself must carry on
    held.control.inject_fault("list_videos", "code_0429", count=3, retry_after=0.01)
    after_first_look(lambda: held.control.set_status(earlier["video_no"], "PARSE"))
    video_no, _ = attempt(store, 2, source=str(video))
    assert video_no == earlier["video_no"] and held.control.count("upload") == 1
    codes = [r["code"] for r in held.control.request_log("list_videos")]
    assert codes[1:4] == ["0429"] * 3  # after attempt 1's tag lookup


def test_the_look_ends_by_the_timeout_under_a_0429_storm_with_a_long_retry_after(
    held: Any, video: Path, set_memories_conn: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # Deadlines are promises: the listing that looks for the earlier upload, its client retries
    # and their Retry-After sleeps included, ends by `timeout` (as _wait_for_parse and the sensor do).
    store = Store()
    lost_first_attempt(held, store, video)
    set_memories_conn(max_retries=1)
    held.control.inject_fault("list_videos", "code_0429", count=10_000, retry_after=30)
    caplog.set_level(logging.WARNING, logger="memories_provider.client")
    with pytest.raises(AirflowException, match="Could not list") as info:
        attempt(store, 2, source=str(video), timeout=1)
    assert not isinstance(info.value, AirflowFailException)
    # A 30 s Retry-After fits in no look of a 1 s wait: no client retry may be scheduled at all.
    retries = [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]
    assert retries == []
    assert held.control.count("upload") == 1


def test_a_refused_key_while_looking_fails_without_uploading(
    held: Any, video: Path, set_memories_conn: Any
) -> None:
    store = Store()
    lost_first_attempt(held, store, video)
    held.control.configure(api_keys=["sk-mavi-another-key"])
    with pytest.raises(MemoriesAuthError):
        attempt(store, 2, source=str(video))
    assert held.control.count("upload") == 1 and "video_no" not in store["memories_video_no"]


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        (
            "ignore_page",
            r"page 2 of the listing of unique_id .default. with exactly the videos of page 1 \(2,",
        ),
        ("no_rows", r"listing of unique_id .default. ended at page 2 after 2 video\(s\), though .* counts 3"),
    ],
)
def test_a_listing_that_cannot_be_read_whole_fails_the_try_instead_of_paying_again(
    emu: Any, video: Path, upload_video: Any, kind: str, message: str
) -> None:
    # Pages of 2, newest first: two other tasks' uploads after ours push it to page 2. A service
    # that answers page 1 whatever page is asked (a gateway dropping `page`) showed page 1 twice,
    # its total_count reached; one whose page 2 came back empty ended the listing there. Either
    # way the look saw no candidate, judged the upload lost and paid for it again.
    store = Store()
    lost_first_attempt(emu, store, video)
    [earlier] = emu.control.videos()
    upload_video(b"\x00" * 100, "a.mp4")
    upload_video(b"\x00" * 101, "b.mp4")
    emu.control.configure(max_page_size=2)
    emu.control.inject_fault("list_videos", "none")  # page 1 as it is
    emu.control.inject_fault("list_videos", kind)  # page 2
    with pytest.raises(AirflowException, match=message) as info:
        attempt(store, 2, source=str(video), lost_answer_grace=0)
    assert not isinstance(info.value, AirflowFailException)  # a later try looks again
    assert "so nothing was uploaded" in str(info.value) and emu.api_key not in str(info.value)
    assert emu.control.count("upload") == 3  # attempt 1 and the two others: no second payment
    assert "video_no" not in store["memories_video_no"]  # still undecided for the next try
    # The next try, on a listing read whole, finds the earlier upload on page 2.
    video_no, ti = attempt(store, 3, source=str(video), lost_answer_grace=0)
    assert video_no == earlier["video_no"] and ti.xcom["upload_result"]["reused"] is True
    assert emu.control.count("upload") == 3


def test_a_listing_that_ignores_page_still_finds_our_upload_on_page_1(
    emu: Any, video: Path, upload_video: Any
) -> None:
    # The usual case: the lost upload is the scope's newest video, on page 1. The pages after it
    # cannot be read (page 1 again), but its tag already proves it ours: reused, not a failed try.
    upload_video(b"\x00" * 100, "a.mp4")
    upload_video(b"\x00" * 101, "b.mp4")
    store = Store()
    lost_first_attempt(emu, store, video)
    emu.control.configure(max_page_size=2)
    emu.control.inject_fault("list_videos", "ignore_page", count=2)
    video_no, ti = attempt(store, 2, source=str(video), lost_answer_grace=0)
    [earlier] = [v for v in emu.control.videos() if v["size"] == len(VIDEO)]
    assert video_no == earlier["video_no"] and ti.xcom["upload_result"]["reused"] is True
    assert emu.control.count("upload") == 3


def test_a_listing_cut_short_waits_for_a_candidate_it_shows_unparse(
    held: Any, video: Path, upload_video: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The usual lost answer: our video is the newest, on page 1, still UNPARSE (tags not shown
    # yet). Page 2 cannot be read (page 1 again). The pages read show a candidate to wait for, as
    # a whole listing would: the try waits for it to parse and reuses it, not fail at the first look.
    upload_video(b"\x00" * 100, "a.mp4")
    upload_video(b"\x00" * 101, "b.mp4")
    store = Store()
    lost_first_attempt(held, store, video)
    earlier = next(v for v in held.control.videos() if v["size"] == len(VIDEO))
    held.control.configure(max_page_size=2)
    held.control.inject_fault("list_videos", "ignore_page", count=2)  # the first look's pages 1, 2
    real = MemoriesHook.iter_videos
    looks = [0]

    def iter_videos(self: MemoriesHook, **kwargs: Any) -> Any:
        try:
            yield from real(self, **kwargs)
        finally:
            looks[0] += 1
            if looks[0] == 1:  # once the first look has read what it could
                held.control.set_status(earlier["video_no"], "PARSE")

    monkeypatch.setattr(MemoriesHook, "iter_videos", iter_videos)
    video_no, ti = attempt(store, 2, source=str(video), lost_answer_grace=0, timeout=600)
    assert video_no == earlier["video_no"] and ti.xcom["upload_result"]["reused"] is True
    assert looks[0] == 2  # saw it UNPARSE on a cut listing, waited, saw it PARSE with our tag
    assert held.control.count("upload") == 3  # a, b and attempt 1: no second payment


def delete_on_page_2(
    emu: Any, monkeypatch: pytest.MonkeyPatch, victims: list[str], upload_video: Any = None
) -> list[int]:
    """Another task of the account deletes the next of ``victims`` (newer than ours) each time a
    look asks for page 2, once page 1 was read; with ``upload_video``, a backfill also uploads a
    new video (a victim too) before each later look. Returns the pages asked, in order."""
    real = MemoriesClient.list_videos
    pages: list[int] = []

    def list_videos(self: MemoriesClient, **kwargs: Any) -> Any:
        pages.append(kwargs.get("page", 1))
        if pages[-1] == 1 and len(pages) > 1 and upload_video is not None:
            victims.append(upload_video(b"\x00" * (200 + len(pages)), "backfill.mp4"))
        if pages[-1] == 2 and victims:
            requests.post(
                f"{emu.v1_url}/delete_videos",
                params={"unique_id": "default"},
                headers={"Authorization": emu.api_key},
                json=[victims.pop(0)],
                timeout=60,
            ).raise_for_status()
        return real(self, **kwargs)

    monkeypatch.setattr(MemoriesClient, "list_videos", list_videos)
    return pages


def test_a_newer_video_deleted_between_the_looks_pages_does_not_hide_ours(
    emu: Any, video: Path, upload_video: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A backfill: two uploads newer than ours push it to page 2 (pages of 2, newest first). Another
    # task of the account deletes one of them after the look read page 1: offset paging moves every
    # later video up a place, ours onto page 1, already read; page 2 came back empty, under a
    # total_count that matched what was read. The look saw nothing and the retry paid again.
    store = Store()
    lost_first_attempt(emu, store, video)
    [earlier] = emu.control.videos()
    newer = upload_video(b"\x00" * 100, "a.mp4")
    upload_video(b"\x00" * 101, "b.mp4")
    emu.control.configure(max_page_size=2)
    pages = delete_on_page_2(emu, monkeypatch, [newer])
    video_no, ti = attempt(store, 2, source=str(video), lost_answer_grace=0, timeout=600)
    assert video_no == earlier["video_no"] and ti.xcom["upload_result"]["reused"] is True
    assert emu.control.count("upload") == 3  # attempt 1, a and b: no second payment
    assert newer not in [v["video_no"] for v in emu.control.videos()]  # the deletion did happen
    assert pages == [1, 2, 1]  # a look that moved (total 3, then 2), then one whole page


def test_a_look_alike_that_failed_is_not_blamed_when_the_listing_moved_past_ours(
    emu: Any, video: Path, upload_video: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Newer than ours: another task's same-size upload that FAILED (tags never shown) and another
    # video. The look reads page 1 ([a, look-alike]), a is deleted, ours moves onto page 1: the
    # look saw only the look-alike and failed the task for good, asking a person to decide about
    # a video that is not ours, while ours was there, parsed and tagged.
    store = Store()
    lost_first_attempt(emu, store, video)
    [earlier] = emu.control.videos()
    theirs = upload_video(OTHER, "clip.mp4")
    emu.control.set_status(theirs, "FAILED", "unsupported codec")
    newer = upload_video(b"\x00" * 100, "a.mp4")
    emu.control.configure(max_page_size=2)
    pages = delete_on_page_2(emu, monkeypatch, [newer])
    video_no, ti = attempt(store, 2, source=str(video), lost_answer_grace=0, timeout=600)
    assert video_no == earlier["video_no"] and ti.xcom["upload_result"]["reused"] is True
    assert emu.control.count("upload") == 3 and pages == [1, 2, 1]


def test_a_listing_that_moves_under_every_look_fails_the_try_without_paying(
    emu: Any, video: Path, upload_video: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A backfill uploads ahead of ours before each look and another task deletes a newer video
    # between each look's pages, so every look misses ours: none proves it absent, and the try
    # ends at its timeout having uploaded nothing, keeping its record for the next try.
    import memories_provider.operators.upload as upload_module

    list_videos = MemoriesClient.list_videos
    store = Store()
    lost_first_attempt(emu, store, video)
    [earlier] = emu.control.videos()
    newer = [upload_video(b"\x00" * 100, "a.mp4"), upload_video(b"\x00" * 101, "b.mp4")]
    emu.control.configure(max_page_size=2)
    pages = delete_on_page_2(emu, monkeypatch, newer, upload_video)
    slept: list[float] = []
    real = upload_module.time

    class Clock:
        """The operator's clock: its pauses pass at once."""

        @staticmethod
        def time() -> float:
            return real.time() + sum(slept)

        @staticmethod
        def monotonic() -> float:
            return real.monotonic() + sum(slept)

        @staticmethod
        def sleep(seconds: float) -> None:
            slept.append(seconds)

    monkeypatch.setattr(upload_module, "time", Clock)
    with pytest.raises(AirflowException, match="Could not list the scope within 60s") as info:
        attempt(store, 2, source=str(video), lost_answer_grace=0, timeout=60, poll_interval=20)
    assert not isinstance(info.value, AirflowFailException)  # a later try looks again
    assert pages.count(2) >= 2 and set(pages) == {1, 2}  # several looks, each moved, none read ours
    ours = [v["video_no"] for v in emu.control.videos() if v["size"] == len(VIDEO)]
    assert ours == [earlier["video_no"]]  # no second payment for the file
    assert "video_no" not in store["memories_video_no"]
    # The next try, on a listing that holds still, finds the earlier upload.
    monkeypatch.setattr(upload_module, "time", real)
    monkeypatch.setattr(MemoriesClient, "list_videos", list_videos)
    uploads = emu.control.count("upload")
    video_no, _ = attempt(store, 3, source=str(video), lost_answer_grace=0)
    assert video_no == earlier["video_no"] and emu.control.count("upload") == uploads


# ---------------------------------------------------------------------------- the earlier video FAILED


def test_earlier_video_failed_to_parse_fails_the_retry_and_names_it(held: Any, video: Path) -> None:
    store = Store()
    lost_first_attempt(held, store, video)
    [earlier] = held.control.videos()
    held.control.set_status(earlier["video_no"], "FAILED", "unsupported codec")
    with pytest.raises(AirflowFailException) as info:
        attempt(store, 2, source=str(video), timeout=600)
    message = str(info.value)
    assert earlier["video_no"] in message and "FAILED: unsupported codec" in message
    assert "never FAILED ones" in message and "delete" in message
    assert held.control.count("upload") == 1  # at once, not after the timeout
    # What the message advises: delete it and clear the task — the next try uploads again.
    MemoriesHook().delete_videos([earlier["video_no"]])
    video_no, _ = attempt(store, 3, source=str(video))
    assert [v["video_no"] for v in held.control.videos()] == [video_no] != [earlier["video_no"]]


def test_failing_while_the_retry_waits_fails_it_too(held: Any, video: Path, after_first_look: Any) -> None:
    store = Store()
    lost_first_attempt(held, store, video)
    [earlier] = held.control.videos()
    after_first_look(lambda: held.control.set_status(earlier["video_no"], "FAILED", "bad"))
    with pytest.raises(AirflowFailException, match=earlier["video_no"]):
        attempt(store, 2, source=str(video), timeout=600)
    assert held.control.count("upload") == 1


# ---------------------------------------------------------------------------- "nothing arrived"


def test_a_body_cut_short_is_uploaded_again_at_once(emu: Any, tmp_path: Path) -> None:
    # The service drops the connection after 64 KiB: the body never finished going out, so it
    # cannot have been accepted. The record is forgotten and the retry uploads without looking.
    big = tmp_path / "big.mp4"
    big.write_bytes(b"v" * (32 * 1024 * 1024))
    store = Store()
    emu.control.inject_fault("upload", "drop_mid_request")
    with pytest.raises(MemoriesConnectionError) as info:
        attempt(store, source=str(big))
    assert info.value.request_sent  # the connection was made: only the body's progress tells
    assert store == {}
    video_no, _ = attempt(store, 2, source=str(big), lost_answer_grace=3600)
    assert [v["video_no"] for v in emu.control.videos()] == [video_no]
    assert emu.control.count("list_videos") == 2  # one tag lookup per attempt, no search, no grace


def test_a_whole_body_without_answer_nor_video_is_uploaded_again_after_the_grace(
    emu: Any, video: Path, after_first_look: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import memories_provider.operators.upload as upload_module

    store = Store()
    lost_first_attempt(emu, store, video, fault="drop_before_response")
    looks = after_first_look(lambda: None)
    slept: list[float] = []
    real = upload_module.time

    class Clock:
        """The operator's clock: its pauses pass at once (a real 60 s grace, without the wait, and
        without betting that a look ends within a short one on a loaded machine)."""

        @staticmethod
        def time() -> float:
            return real.time() + sum(slept)

        @staticmethod
        def monotonic() -> float:
            return real.monotonic() + sum(slept)

        @staticmethod
        def sleep(seconds: float) -> None:
            slept.append(seconds)

    monkeypatch.setattr(upload_module, "time", Clock)
    video_no, _ = attempt(store, 2, source=str(video), lost_answer_grace=60)
    assert looks[0] == 2  # looked, gave a late listing its grace, looked again
    assert 0 < sum(slept) <= 60  # the pause: what was left of the grace after the first look
    assert [v["video_no"] for v in emu.control.videos()] == [video_no]
    assert emu.control.count("upload") == 2


def test_a_refusal_is_not_looked_for(emu: Any, video: Path) -> None:
    emu.control.configure(credits=0.0)
    store = Store()
    with pytest.raises(MemoriesInsufficientCreditsError):
        attempt(store, source=str(video))
    assert store == {}  # refused: certainly not billed


def test_rate_limits_exhausted_leave_nothing_to_look_for(
    emu: Any, set_memories_conn: Any, video: Path
) -> None:
    set_memories_conn(max_retries=0)
    emu.control.inject_fault("upload", "code_0429")
    store = Store()
    with pytest.raises(Exception, match="exceeded the limit"):
        attempt(store, source=str(video))
    assert store == {}


def test_url_upload_lost_answer_is_found_by_the_size_the_url_reported(
    held: Any, video: Path, after_first_look: Any
) -> None:
    with LocalServer(folder_handler(video.parent)) as server:
        _url_upload_story(held, f"{server.url}/clip.mp4", after_first_look)


def _url_upload_story(held: Any, url: str, after_first_look: Any, earlier_videos: int = 0) -> None:
    store = Store()
    held.control.inject_fault("upload_url", "accept_then_drop")
    with pytest.raises(MemoriesConnectionError):
        attempt(store, source=url)
    assert store["memories_video_no"]["size"] == len(VIDEO)  # from HEAD
    earlier = held.control.videos()[earlier_videos]
    after_first_look(lambda: held.control.set_status(earlier["video_no"], "PARSE"))
    video_no, _ = attempt(store, 2, source=url)
    assert video_no == earlier["video_no"] and held.control.count("upload_url") == 1


# ---------------------------------------------------------------------------- the record itself


class _BrokenStore(Store):
    def __init__(self, *, reads: bool = True, writes: bool = True) -> None:
        super().__init__()
        self.reads, self.writes = reads, writes

    def get(self, key: str, default: Any = None) -> Any:
        if not self.reads:
            raise RuntimeError("state store unavailable")
        return super().get(key, default)

    def set(self, key: str, value: Any) -> None:
        if not self.writes:
            raise RuntimeError("state store unavailable")
        super().set(key, value)


def test_nothing_is_sent_when_the_send_cannot_be_recorded(emu: Any, video: Path) -> None:
    with pytest.raises(AirflowException, match="not sending"):
        attempt(_BrokenStore(writes=False), source=str(video))
    assert emu.control.count("upload") == 0


def test_nothing_is_uploaded_when_the_record_cannot_be_read(emu: Any, video: Path) -> None:
    with pytest.raises(AirflowException, match="not uploading blind"):
        attempt(_BrokenStore(reads=False), 2, source=str(video))
    assert emu.control.request_log() == []


def test_without_a_task_state_store_the_record_is_an_airflow_variable(
    emu: Any, video: Path, airflow_db: Any
) -> None:
    # Outside a task run on Airflow 3 there is no task state store and no Task SDK to hold a
    # Variable: nowhere to record the send, so nothing is sent. Airflow 2 writes the Variable to
    # the metastore directly: the upload goes through, and the Variable is gone once it succeeded.
    from airflow import __version__

    op = MemoriesUploadOperator(task_id="upload", source=str(video))
    if not __version__.startswith("2."):
        with pytest.raises(AirflowException, match="not sending"):
            op.execute({"ti": _TaskInstance()})
        assert emu.control.count("upload") == 0
        return
    from airflow.models.variable import Variable

    from memories_provider.operators._attempt_record import VARIABLE_PREFIX

    emu.control.inject_fault("upload", "accept_then_drop")
    with pytest.raises(MemoriesConnectionError):
        op.execute({"ti": _TaskInstance()})
    [v] = emu.control.videos()
    key = VARIABLE_PREFIX + tag_of(v)
    assert Variable.get(key, None) is not None  # the unanswered send, for the retry
    assert op.execute({"ti": _TaskInstance(try_number=2)}) == v["video_no"]  # PARSE: its tag shows
    assert Variable.get(key, None) is None


def test_an_answer_that_cannot_be_recorded_does_not_fail_the_billed_upload(
    emu: Any, video: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture
) -> None:
    class OneWrite(Store):
        writes = 0

        def set(self, key: str, value: Any) -> None:
            OneWrite.writes += 1
            if OneWrite.writes > 1:
                raise RuntimeError("state store unavailable")
            super().set(key, value)

    video_no, _ = attempt(OneWrite(), source=str(video))
    assert [v["video_no"] for v in emu.control.videos()] == [video_no]
    assert "a retry will find it by listing" in capsys.readouterr().out + caplog.text


def test_lost_answer_grace_is_validated() -> None:
    for bad in (-1, float("nan"), True):
        with pytest.raises(ValueError, match="lost_answer_grace"):
            MemoriesUploadOperator(task_id="t", source="a.mp4", lost_answer_grace=bad)


@pytest.mark.xfail(
    strict=True,
    reason="Without a task state store (Airflow < 3.3) the record Variable is deleted when the task "
    "succeeds; a clear of that task instance then finds its own video only by tag, which the service "
    "shows only once the video is PARSE (never when FAILED), so it uploads and pays again. Not kept "
    "on purpose: tasks there cannot list Variables, so expired records could only be removed by a "
    "later run of the same task instance, and every instance never cleared would leave one behind.",
)
def test_a_clear_of_a_succeeded_upload_before_its_video_parsed_does_not_pay_again(
    held: Any, video: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from memories_provider.operators import upload

    records: dict[str, AttemptRecord] = {}

    class VariableLikeBook:
        """VariableBook's semantics (done() deletes the record), kept in memory."""

        def __init__(self, tag: str) -> None:
            self.tag = tag

        def load(self) -> AttemptRecord | None:
            return records.get(self.tag)

        def save(self, record: AttemptRecord) -> None:
            records[self.tag] = record

        def clear(self) -> None:
            records.pop(self.tag, None)

        done = clear

    monkeypatch.setattr(upload, "record_book", lambda context, tag: VariableLikeBook(tag))
    first, _ = attempt(Store(), source=str(video))  # succeeds; its video is still UNPARSE
    again, _ = attempt(Store(), try_number=2, source=str(video))  # the same task instance, cleared
    assert again == first
    assert held.control.count("upload") == 1


def test_a_nan_timeout_or_poll_interval_is_refused() -> None:
    # NaN passes "<= 0" checks: a NaN timeout made every wait endless (no comparison with it holds).
    for name in ("timeout", "poll_interval"):
        with pytest.raises(ValueError, match=name):
            MemoriesUploadOperator(task_id="t", source="a.mp4", **{name: float("nan")})


# ---------------------------------------------------------------------------- deciding (pure)


def _video(video_no: str, **fields: Any) -> Video:
    return Video.from_api({"video_no": video_no, "size": 10, "create_time": 1_000_000, **fields})


def test_judge_sorts_candidates_by_basic_fields_then_tags() -> None:
    record = AttemptRecord(tag="airflow-x", size=10, started_ms=1_000_000)
    confirmed: list[str] = []

    def confirm(video_no: str) -> Video:
        confirmed.append(video_no)
        return _video(video_no, status="PARSE", tags=["airflow-x", "api"] if video_no == "VI3" else [])

    listed = [
        _video("VI1", status="UNPARSE", size=11),  # another size: not a candidate
        _video("VI2", status="FAILED", create_time=1_000_000 - CLOCK_SKEW_MS - 1),  # too early
        _video("VI3", status="PARSE"),  # a PARSE row without tags: get_metadata decides (ours)
        _video("VI4", status="PARSE", tags=["other", "api"]),  # someone else's
        _video("VI5", status="UNPARSE"),  # cannot tell yet
        _video("VI6", status="FAILED", cause="x"),  # can never tell
        _video("VI7", status="PARSE"),  # PARSE, and get_metadata shows no tags at all: doubt
        _video("VI8", status="UNPARSE", create_time=1_000_000 - CLOCK_SKEW_MS),  # within the skew
    ]
    verdict = judge(listed, record, confirm)
    assert verdict.ours is not None and verdict.ours.video_no == "VI3"
    assert [v.video_no for v in verdict.foreign] == ["VI4"]
    assert [v.video_no for v in verdict.pending] == ["VI5", "VI8"]
    assert [v.video_no for v in verdict.undecidable] == ["VI6", "VI7"]
    assert confirmed == ["VI3", "VI7"]
    assert not verdict.nothing


def test_judge_without_a_size_keeps_every_video_created_since() -> None:
    record = AttemptRecord(tag="airflow-x", size=None, started_ms=1_000_000)
    verdict = judge([_video("VI1", status="UNPARSE", size=99)], record, lambda v: _video(v))
    assert [v.video_no for v in verdict.pending] == ["VI1"]
    assert judge([], record, lambda v: _video(v)).nothing


def test_judge_takes_the_oldest_of_two_tagged_uploads() -> None:
    record = AttemptRecord(tag="airflow-x", size=10, started_ms=1_000_000)
    newer = _video("VI2", status="PARSE", tags=["airflow-x"], create_time=1_000_900)
    older = _video("VI1", status="PARSE", tags=["airflow-x"], create_time=1_000_100)
    assert judge([newer, older], record, lambda v: _video(v)).ours == older


def test_a_source_resized_after_a_lost_answer_is_uploaded_again_not_taken_for_the_old_video(
    held: Any, video: Path
) -> None:
    # Attempt 1 sent the file and lost the answer; the service kept it. Before the retry the file
    # at the same URI is replaced by a longer one. The earlier video (our tag, PARSE) holds the old
    # bytes: reusing it would report success for bytes the source no longer has — as an answered
    # record of another size is never reused.
    store = Store()
    lost_first_attempt(held, store, video)
    [earlier] = held.control.videos()
    held.control.set_status(earlier["video_no"], "PARSE")
    longer = VIDEO + b"\x00" * 1024
    video.write_bytes(longer)
    video_no, ti = attempt(store, 2, source=str(video))
    assert video_no != earlier["video_no"] and ti.xcom["upload_result"]["reused"] is False
    videos = {v["video_no"]: v for v in held.control.videos()}
    assert videos[video_no]["size"] == len(longer)
    assert held.control.count("upload") == 2


def test_a_presigned_url_signed_anew_for_the_retry_still_finds_the_lost_upload(
    held: Any, video: Path, after_first_look: Any
) -> None:
    # A presigned source rendered at run time carries a new date and signature on every try. The
    # idempotency tag hashed the whole URI: the retry's tag was another one, so it found neither the
    # record of the lost upload (kept under the old tag) nor the video (tagged with the old tag),
    # and paid for the same file again.
    def presigned(base: str, when: str, signature: str) -> str:
        query = f"X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Date={when}&X-Amz-Expires=900"
        query += f"&X-Amz-Signature={signature}"
        return f"{base}/clip.mp4?{query}"

    with LocalServer(folder_handler(video.parent)) as server:
        store = Store()
        held.control.inject_fault("upload_url", "accept_then_drop")
        with pytest.raises(MemoriesConnectionError):
            attempt(store, source=presigned(server.url, "20260101T000000Z", "a" * 64))
        [earlier] = held.control.videos()
        after_first_look(lambda: held.control.set_status(earlier["video_no"], "PARSE"))
        video_no, _ = attempt(store, 2, source=presigned(server.url, "20260101T001500Z", "b" * 64))
    assert video_no == earlier["video_no"]
    assert held.control.count("upload_url") == 1


def test_a_video_carrying_our_tag_is_ours_whatever_the_clocks_say(held: Any, video: Path) -> None:
    # The worker's clock ran 10 minutes ahead of the service's (more than CLOCK_SKEW_MS): the earlier
    # upload's create_time falls before the recorded start less the skew. It was ruled out as a
    # candidate before its tags were read, although they prove it is ours: the retry paid again.
    store = Store()
    lost_first_attempt(held, store, video)
    [earlier] = held.control.videos()
    held.control.set_status(earlier["video_no"], "PARSE")
    store["memories_video_no"]["started_ms"] += 2 * CLOCK_SKEW_MS
    video_no, ti = attempt(store, 2, source=str(video))
    assert video_no == earlier["video_no"] and ti.xcom["upload_result"]["reused"] is True
    assert held.control.count("upload") == 1


def test_judge_takes_a_tagged_video_of_our_size_whenever_it_was_created() -> None:
    record = AttemptRecord(tag="airflow-x", size=10, started_ms=1_000_000)
    early = _video("VI1", status="PARSE", tags=["airflow-x"], create_time=1_000_000 - 2 * CLOCK_SKEW_MS)
    resized = _video("VI2", status="PARSE", tags=["airflow-x"], size=11)  # an older version of the file
    verdict = judge([resized, early], record, lambda v: _video(v))
    assert verdict.ours == early and not verdict.foreign


class _Gzipping(QuietHandler):
    """Serves VIDEO gzip-encoded to a client that accepts gzip (as some application servers do for
    any content type), as it is to one that asks for ``identity``."""

    def _answer(self, with_body: bool) -> None:
        encoded = "gzip" in (self.headers.get("Accept-Encoding") or "")
        body = gzip.compress(VIDEO) if encoded else VIDEO
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        if encoded:
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self._answer(False)

    def do_GET(self) -> None:
        self._answer(True)


def test_an_http_source_is_sized_by_its_bytes_not_by_a_compressed_answer(
    held: Any, after_first_look: Any
) -> None:
    # The size probe's HEAD accepted gzip, so a server that compresses answered with the length of
    # the compressed body. Streamed (stream_http), the file then read longer than its size and
    # every try failed; fetched by the service (upload_url), the record held a size no video has,
    # so after a lost answer the retry found no candidate and uploaded (paid) again.
    with LocalServer(_Gzipping) as server:
        url = f"{server.url}/clip.mp4"
        video_no, _ = attempt(Store(), source=url, stream_http=True)
        assert [v["size"] for v in held.control.videos() if v["video_no"] == video_no] == [len(VIDEO)]
        held.control.set_status(video_no, "PARSE")  # its tag shows it is not the URL upload's
        _url_upload_story(held, f"{server.url}/fetched/clip.mp4", after_first_look, earlier_videos=1)


# ---------------------------------------------------------------------------- same size, other bytes


def replace(path: Path, data: bytes) -> None:
    """A new version lands at ``path`` as new versions usually do: written beside it, renamed over it."""
    fresh = path.with_name("fresh-" + path.name)
    fresh.write_bytes(data)
    os.replace(fresh, path)


def sha256_of(held: Any, video_no: str) -> str:
    return str({v["video_no"]: v["sha256"] for v in held.control.videos()}[video_no])


def test_a_source_replaced_by_a_same_size_file_after_a_lost_answer_is_uploaded_again(
    held: Any, video: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture
) -> None:
    # Attempt 1 sent the file and lost the answer; the service kept it and parsed it (our tag
    # shows). Before the retry another file of the same size took its place. Size and tag both
    # matched: the retry reported success for a video of the old bytes.
    store = Store()
    lost_first_attempt(held, store, video)
    [earlier] = held.control.videos()
    held.control.set_status(earlier["video_no"], "PARSE")
    replace(video, OTHER)
    video_no, ti = attempt(store, 2, source=str(video))
    assert video_no != earlier["video_no"] and ti.xcom["upload_result"]["reused"] is False
    assert sha256_of(held, video_no) == hashlib.sha256(OTHER).hexdigest()
    assert held.control.count("upload") == 2
    assert "has been written since (inode@" in capsys.readouterr().out + caplog.text


def test_a_source_replaced_by_a_same_size_file_after_an_answered_upload_is_uploaded_again(
    emu: Any, video: Path
) -> None:
    # The answer was recorded (a retry after a wait for PARSE ran out, or a clear on Airflow >= 3.3,
    # whose record outlives success): the recorded video was reused for whatever file had that size.
    store = Store()
    first, _ = attempt(store, source=str(video))
    replace(video, OTHER)
    again, ti = attempt(store, 2, source=str(video))
    assert again != first and ti.xcom["upload_result"]["reused"] is False
    assert sha256_of(emu, again) == hashlib.sha256(OTHER).hexdigest()
    # Untouched since: the next try reuses the new upload (its record holds the new marks).
    third, ti = attempt(store, 3, source=str(video))
    assert third == again and ti.xcom["upload_result"]["reused"] is True
    assert emu.control.count("upload") == 2


def test_a_record_written_before_version_marks_were_kept_is_still_reused_by_its_size(
    emu: Any, video: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture
) -> None:
    store = Store()
    first, _ = attempt(store, source=str(video))
    record = store["memories_video_no"]
    assert set(record["source_version"]) == {"mtime_ns", f"inode@{socket.gethostname()}"}
    del record["source_version"]  # as the previous version wrote it: tag, size, started_ms, video_no
    again, ti = attempt(store, 2, source=str(video))
    assert again == first and ti.xcom["upload_result"]["reused"] is True
    assert emu.control.count("upload") == 1
    assert "a record written before version marks were kept" in capsys.readouterr().out + caplog.text
    assert store["memories_video_no"]["source_version"] == record_marks(video)  # recorded from now on


def record_marks(path: Path) -> dict[str, str]:
    info = path.stat()
    return {"mtime_ns": str(info.st_mtime_ns), f"inode@{socket.gethostname()}": str(info.st_ino)}


def test_an_s3_source_replaced_by_a_same_size_object_after_a_lost_answer_is_uploaded_again(
    held: Any, moto_s3_server: Any, s3_bucket: str
) -> None:
    client = moto_s3_server.client()
    client.put_object(Bucket=s3_bucket, Key="in/clip.mp4", Body=VIDEO)
    source = {"source": f"s3://{s3_bucket}/in/clip.mp4", "source_conn_id": moto_s3_server.conn_id}
    store = Store()
    held.control.inject_fault("upload", "accept_then_drop")
    with pytest.raises(MemoriesConnectionError):
        attempt(store, **source)
    [earlier] = held.control.videos()
    assert set(store["memories_video_no"]["source_version"]) == {"etag"}
    held.control.set_status(earlier["video_no"], "PARSE")
    client.put_object(Bucket=s3_bucket, Key="in/clip.mp4", Body=OTHER)  # same key, same size
    video_no, ti = attempt(store, 2, **source)
    assert video_no != earlier["video_no"] and ti.xcom["upload_result"]["reused"] is False
    assert sha256_of(held, video_no) == hashlib.sha256(OTHER).hexdigest()
    assert attempt(store, 3, **source)[0] == video_no  # untouched since: reused
    assert held.control.count("upload") == 2


def test_version_marks_are_compared_where_both_records_have_them() -> None:
    from memories_provider.operators._attempt_record import changed_marks

    old = AttemptRecord.from_json({"tag": "airflow-x", "size": 3, "video_no": "VI1"})  # before marks
    assert old is not None and old.source_version is None
    odd = AttemptRecord.from_json(
        {"tag": "airflow-x", "source_version": {"etag": '"a"', "x": True, "y": None}}
    )
    assert odd is not None and odd.source_version == {"etag": '"a"'}  # an unknown shape is no mark
    assert AttemptRecord.from_json({"tag": "airflow-x", "source_version": "etag"}).source_version is None  # type: ignore[union-attr]
    assert changed_marks(None, {"etag": '"b"'}) == []  # an old record: the size alone decides
    assert changed_marks({"etag": '"a"', "version_id": "1"}, {"etag": '"a"'}) == []  # one lost: not a change
    assert changed_marks({"etag": '"a"', "version_id": "1"}, {"etag": '"b"', "version_id": "1"}) == ["etag"]


def test_a_retry_on_another_worker_compares_the_mtime_not_the_inode(
    emu: Any, video: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The source is one file on a mount every worker sees (NFS, gcsfuse, s3fs); the retry runs on
    # another worker, whose mount numbers the same file's inode otherwise (gcsfuse numbers them per
    # mount). Taking that for a new file would upload, and pay for, the same bytes again.
    monkeypatch.setattr(socket, "gethostname", lambda: "worker-1")
    store = Store()
    first, _ = attempt(store, source=str(video))
    marks = store["memories_video_no"]["source_version"]
    marks["inode@worker-1"] = str(int(marks["inode@worker-1"]) + 1000)  # as worker 1's mount said
    monkeypatch.setattr(socket, "gethostname", lambda: "worker-2")
    again, ti = attempt(store, 2, source=str(video))
    assert again == first and ti.xcom["upload_result"]["reused"] is True
    assert emu.control.count("upload") == 1
    # The record now holds worker 2's inode, which counts for a later try there.
    assert set(store["memories_video_no"]["source_version"]) == {"mtime_ns", "inode@worker-2"}


def test_a_url_source_replaced_by_a_same_size_file_after_a_lost_answer_is_fetched_again(
    held: Any, video: Path
) -> None:
    # upload_url: the service fetches the URL. A plain file server gives Last-Modified (whole
    # seconds) and no ETag; the file replaced a few seconds after try 1 is another Last-Modified.
    with LocalServer(folder_handler(video.parent)) as server:
        url = f"{server.url}/clip.mp4"
        store = Store()
        held.control.inject_fault("upload_url", "accept_then_drop")
        with pytest.raises(MemoriesConnectionError):
            attempt(store, source=url)
        assert set(store["memories_video_no"]["source_version"]) == {"last_modified"}
        [earlier] = held.control.videos()
        held.control.set_status(earlier["video_no"], "PARSE")
        replace(video, OTHER)
        later = video.stat().st_mtime + 5
        os.utime(video, (later, later))
        video_no, ti = attempt(store, 2, source=url)
    assert video_no != earlier["video_no"] and ti.xcom["upload_result"]["reused"] is False
    assert sha256_of(held, video_no) == hashlib.sha256(OTHER).hexdigest()
    assert held.control.count("upload_url") == 2
