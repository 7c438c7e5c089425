"""The pure parts of status waits: rounds, refused ids, timeout messages and the poller's pacing."""

from __future__ import annotations

import asyncio
import re

import pytest

from memories_provider.client import (
    MemoriesInvalidRequestError,
    MemoriesNotFoundError,
    MemoriesRouteNotFoundError,
    MemoriesServerError,
    Video,
    VideoPage,
)
from memories_provider.status import NOT_LISTED, StatusRound, evaluate, shown_status, timeout_message
from memories_provider.triggers import _poller


def page(*videos: Video) -> VideoPage:
    return VideoPage(videos=list(videos), current_page=1, page_size=100, total_count=len(videos))


def video(video_no: str, status: str = "UNPARSE") -> Video:
    return Video.from_api({"video_no": video_no, "status": status})


def test_a_refused_batch_is_split_down_to_the_bad_id():
    ids = [f"VI{i:03d}" for i in range(8)]
    round_ = StatusRound(ids, size=8)
    asked = []
    while (batch := round_.next_batch()) is not None:
        asked.append(list(batch))
        if "VI005" in batch:
            assert round_.refused(batch, MemoriesInvalidRequestError("video_nos: bad id", code="0001"))
        else:
            round_.answered(batch, page(*(video(v) for v in batch)))
    assert asked == [ids, ids[:4], ids[4:], ids[4:6], ids[4:5], ids[5:6], ids[6:]]
    assert round_.rejected == {"VI005": "video_nos: bad id"}
    assert set(round_.found) == set(ids) - {"VI005"} and round_.asked == set(ids)
    outcome = evaluate(["VI001", "VI005"], round_.found, rejected=round_.rejected)
    assert outcome.status == "failed" and "VI005: video_nos: bad id" in outcome.message
    assert evaluate(["VI001"], round_.found, rejected=round_.rejected).status == "pending"


def test_two_bad_ids_in_one_batch_are_both_isolated_and_the_rest_answered():
    ids = [f"VI{i:03d}" for i in range(100)]
    bad = {"VI017", "VI088"}
    round_ = StatusRound(ids)
    requests = 0
    while (batch := round_.next_batch()) is not None:
        requests += 1
        if bad & set(batch):
            assert round_.refused(batch, MemoriesInvalidRequestError("bad id", code="0001"))
        else:
            round_.answered(batch, page(*(video(v) for v in batch)))
    assert set(round_.rejected) == bad and set(round_.found) == set(ids) - bad
    assert requests <= 1 + 2 * 2 * 7  # about 2 x log2(100) more per bad id


def test_a_service_that_caps_the_page_is_asked_again_for_the_ids_it_left_out():
    ids = [f"VI{i:03d}" for i in range(10)]
    round_ = StatusRound(ids, size=10)
    asked = []
    while (batch := round_.next_batch()) is not None:
        asked.append(list(batch))
        listed = [video(v, "PARSE") for v in batch[:4]]  # an undocumented cap of 4 rows a page
        round_.answered(batch, VideoPage(videos=listed, current_page=1, page_size=4, total_count=len(batch)))
    assert asked == [ids, ids[4:], ids[8:]]
    assert set(round_.found) == set(ids) and round_.asked == set(ids)


def test_a_page_that_lists_none_of_the_batch_ends_the_batch_rather_than_looping():
    round_ = StatusRound(["VI001", "VI002"], size=2)
    batch = round_.next_batch()
    strangers = [video("VI999", "PARSE")]  # e.g. a service ignoring the video_nos filter
    round_.answered(batch, VideoPage(videos=strangers, current_page=1, page_size=1, total_count=50))
    assert round_.done and round_.asked == {"VI001", "VI002"} and not round_.found


def test_a_transient_error_keeps_the_batch_first_in_line_and_what_was_learnt():
    round_ = StatusRound([f"VI{i}" for i in range(250)], size=100)
    first = round_.next_batch()
    round_.answered(first, page(video(first[0], "PARSE")))
    second = round_.next_batch()
    assert not round_.refused(second, MemoriesServerError("down", http_status=503))
    assert round_.next_batch() is second and first[0] in round_.found  # resumed, nothing forgotten


def test_a_lone_id_not_found_is_only_not_listed_yet_for_a_fresh_upload():
    round_ = StatusRound(["VI1"], missing_is_pending=True)
    assert round_.refused(["VI1"], MemoriesNotFoundError("video not found", code="0001"))
    assert round_.done and round_.rejected == {} and round_.asked == {"VI1"}


def test_ids_no_longer_wanted_are_not_asked():
    round_ = StatusRound(["VI1", "VI2", "VI3"], size=2)
    assert round_.next_batch(lambda v: v != "VI1") == ["VI2"]
    round_.answered(["VI2"], page())
    assert round_.next_batch(lambda v: False) is None and round_.done


def test_timeout_message_groups_videos_by_the_status_last_seen_undocumented_ones_included():
    processing = video("VI2", "PROCESSING")
    assert shown_status(processing) == "PROCESSING"
    seen = {"VI1": "UNPARSE", "VI2": shown_status(processing), "VI3": "PARSE", "VI4": NOT_LISTED}
    message = timeout_message(["VI1", "VI2", "VI3", "VI4", "VI5"], seen, 60, "rate limited (code=0429)")
    assert message == (
        "timed out after 60s with 4 of 5 video(s) not parsed: UNPARSE: VI1; PROCESSING: VI2; "
        "not listed: VI4; no status seen: VI5 (the last status check failed: rate limited (code=0429))"
    )


def test_timeout_message_names_at_most_100_videos():
    message = timeout_message([f"VI{i}" for i in range(250)], {})
    assert "VI99" in message and "VI100" not in message and "and 150 more" in message


async def test_the_pacer_slow_starts_then_cuts_on_0429_and_grows_back_additively():
    pacer = _poller._Pacer()
    top = 1 / _poller.MIN_REQUEST_SPACING
    assert (pacer.rate, pacer.slow_start) == (_poller.START_RATE, True)
    for _ in range(4):  # slow start: a fixed step per answer (growing by a share a second)
        pacer.on_answer()
    assert pacer.rate == pytest.approx(_poller.START_RATE + 4 * _poller.SLOW_START_STEP)
    before = pacer.rate
    pause = pacer.on_rate_limit(retry_after=0.3)  # the first 0429 ends slow start
    assert pacer.rate == pytest.approx(before * _poller.SLOW_START_EXIT) and not pacer.slow_start
    floor = max(0.3, 1 / pacer.rate)  # spread above it (pacers told alike do not come back together)
    assert floor <= pause <= floor * (1 + _poller.PAUSE_SPREAD)
    pacer.on_rate_limit(retry_after=0.3)  # a second 0429 inside the pause: from before the cut
    assert pacer.rate == pytest.approx(before * _poller.SLOW_START_EXIT)
    pacer.cut_until = 0.0  # (as if the pause were over)
    rate = pacer.rate
    pacer.on_rate_limit(retry_after=None)
    assert pacer.rate == pytest.approx(rate * _poller.RATE_DECREASE)
    low = pacer.rate
    pacer.on_answer()
    grown_low = pacer.rate - low
    pacer.rate = 2 * low
    pacer.on_answer()
    assert grown_low > 2 * (pacer.rate - 2 * low)  # smaller shares grow back faster
    for _ in range(100_000):
        pacer.on_answer()
    assert pacer.rate == top  # never above the documented limit's margin
    loop = asyncio.get_running_loop()
    start = loop.time()
    pacer.on_rate_limit(retry_after=0.2)
    await pacer.wait()  # held back for the Retry-After
    assert loop.time() - start >= 0.2 - 0.01


def test_an_infrastructure_404_is_not_blamed_on_the_ids_asked_for(memories_emulator, tmp_path):
    # Spec section 1: a 404 is an infrastructure error (Spring-style body, no business code): the
    # route is missing, whatever ids were asked for. It is raised as it is, not split batch by
    # batch (2n requests) and then reported as "memories.ai refused video id(s)" for every id.
    from memories_provider.client import MemoriesClient, RetryPolicy
    from memories_provider.status import StatusCheck

    settings = {"base_url": memories_emulator.v1_url, "v2_base_url": memories_emulator.v2_url}
    with MemoriesClient(memories_emulator.api_key, retry=RetryPolicy(max_retries=0), **settings) as client:
        path = tmp_path / "clip.mp4"
        path.write_bytes(b"\x00video" * 100)
        ids = [client.upload_video(str(path)).video_no for _ in range(4)]
        memories_emulator.control.inject_fault("list_videos", "http_404", count=20)
        with pytest.raises(MemoriesRouteNotFoundError, match="HTTP 404"):
            StatusCheck(ids, None)(client.list_videos)
        assert memories_emulator.control.count("list_videos") == 1


def test_repeated_checks_go_on_with_the_other_batches_when_one_id_fails_its_batch(
    memories_emulator, tmp_path, monkeypatch
):
    # A poking sensor (or the upload's wait on the worker) keeps one StatusCheck: a batch that
    # fails every time (one row the service cannot list) must not be the only one ever asked again.
    from memories_provider import status
    from memories_provider.client import MemoriesClient, RetryPolicy
    from memories_provider.status import BATCH_SIZE, StatusCheck

    monkeypatch.setattr(status.random, "randrange", lambda n: 0)  # the round starts at the bad batch
    settings = {"base_url": memories_emulator.v1_url, "v2_base_url": memories_emulator.v2_url}
    with MemoriesClient(memories_emulator.api_key, retry=RetryPolicy(max_retries=0), **settings) as client:
        path = tmp_path / "clip.mp4"
        path.write_bytes(b"\x00video" * 100)
        ids = sorted(client.upload_video(str(path)).video_no for _ in range(2 * BATCH_SIZE + 1))
        bad = ids[0]
        memories_emulator.control.inject_fault("list_videos", "http_500", count=10**6, video_no=bad)
        check = StatusCheck(ids, None)
        outcomes = [check(client.list_videos) for _ in range(20)]
    assert {o.status for o in outcomes} == {"pending"}  # never "unknown video": only not answered
    assert bad not in check.last_seen and "HTTP 500" in (check.last_error or "")
    assert {v: check.last_seen.get(v) for v in ids[1:]} == {v: "PARSE" for v in ids[1:]}


ID1, ID2 = "VI568102998803353600", "VI568102998803353601"


@pytest.mark.parametrize(
    ("video_no", "video_nos", "expected"),
    [
        pytest.param(f" {ID1}\n", None, [ID1], id="one id, whitespace stripped"),
        pytest.param(None, [ID1, f" {ID1} ", ID2], [ID1, ID2], id="duplicates once, also when padded"),
        pytest.param(None, f"['{ID1}', '{ID2}']", [ID1, ID2], id="a list a template rendered as text"),
        pytest.param(None, f" ['{ID2}', '{ID1}', '{ID2}']\n", [ID2, ID1], id="rendered, padded, repeated"),
        pytest.param(None, (v for v in [ID1, ID2]), [ID1, ID2], id="any iterable (a lazy XCom)"),
        pytest.param(None, ID2, [ID2], id="video_nos as one id"),
    ],
)
def test_video_ids_are_normalized(video_no, video_nos, expected):
    from memories_provider.status import normalize_video_nos

    assert normalize_video_nos(video_no, video_nos) == expected


@pytest.mark.parametrize(
    ("video_no", "video_nos", "named", "rule"),
    [
        (None, "[]", "`video_nos`", "empty list"),
        (None, "[VI1, VI2]", "`video_nos`", "list of video ids"),
        (None, "{'a': 1}", "`video_nos`", "'VI' and 18 digits"),
        (None, f"('{ID1}',)", "`video_nos`", "'VI' and 18 digits"),  # not a list: one bad id
        (None, "[1, 2]", "`video_nos`", "'VI' and 18 digits"),
        (None, [ID1, "VI1"], "`video_nos`", "'VI' and 18 digits"),
        (None, [ID1, ""], "`video_nos`", "'VI' and 18 digits"),
        (None, [ID1, None], "`video_nos`", "'VI' and 18 digits"),
        (None, f"{ID1},{ID2}", "`video_nos`", "'VI' and 18 digits"),
        ("vi568102998803353600", None, "`video_no`", "'VI' and 18 digits"),
        ("VI/../x", None, "`video_no`", "'VI' and 18 digits"),
        (f"{ID1}0", None, "`video_no`", "'VI' and 18 digits"),
        ("VI" + "\u0663" * 18, None, "`video_no`", "'VI' and 18 digits"),  # Arabic-Indic digits
        (f"[{ID1}", None, "`video_no`", "list of video ids"),
    ],
)
def test_what_is_not_a_video_id_is_refused_naming_the_parameter(video_no, video_nos, named, rule):
    from memories_provider.status import normalize_video_nos

    with pytest.raises(ValueError, match=re.escape(named)) as info:
        normalize_video_nos(video_no, video_nos)
    assert rule in str(info.value)


def test_a_huge_bad_value_is_quoted_short():
    from memories_provider.status import normalize_video_nos

    with pytest.raises(ValueError) as info:
        normalize_video_nos(None, [ID1] * 5000 + ["x" * 10_000])
    assert len(str(info.value)) < 200


def test_a_video_nos_that_is_neither_an_id_nor_a_list_is_refused_naming_it():
    from memories_provider.status import normalize_video_nos

    with pytest.raises(ValueError, match="`video_nos` must be a list of video ids"):
        normalize_video_nos(None, 5)


def test_an_id_the_client_refuses_is_not_blamed_on_the_service(memories_emulator, tmp_path):
    # A wait restored with an id of the wrong shape (an old trigger's 'vi1 '): the client refuses it
    # before sending, and the wait failed as "memories.ai refused video id(s)", which it never saw.
    from memories_provider.client import MemoriesClient, RetryPolicy
    from memories_provider.status import StatusCheck

    settings = {"base_url": memories_emulator.v1_url, "v2_base_url": memories_emulator.v2_url}
    with MemoriesClient(memories_emulator.api_key, retry=RetryPolicy(max_retries=0), **settings) as client:
        outcome = StatusCheck(["vi1 "], None)(client.list_videos)
    assert outcome.status == "failed"
    assert "memories.ai" not in outcome.message
    assert outcome.message.startswith("video id(s) refused by the client before any request: vi1 :")
    assert memories_emulator.control.request_log() == []
