"""The async client against the emulator over real sockets."""

from __future__ import annotations

import io
import logging

import pytest

from memories_provider.client import (
    AsyncMemoriesClient,
    MemoriesAuthError,
    MemoriesConnectionError,
    MemoriesIncompleteBodyError,
    MemoriesNotFoundError,
    MemoriesPagingError,
    MemoriesServerError,
    RetryPolicy,
    VideoStatus,
)


async def test_round_trip_every_endpoint(aclient, memories_emulator, make_video):
    path, data = make_video("a.mkv")
    progress: list[int] = []
    result = await aclient.upload_video(path, unique_id="async", tags=["x"], progress=progress.append)
    assert result.status is VideoStatus.UNPARSE
    assert progress[-1] == len(data)

    video = await aclient.get_video(result.video_no, unique_id="async")
    assert video.status is VideoStatus.PARSE
    page = await aclient.list_videos(unique_id="async", video_nos=[result.video_no])
    assert [v.video_no for v in page.videos] == [result.video_no]
    assert "async" in await aclient.list_unique_ids()

    async with aclient.download_video(result.video_no, unique_id="async") as resp:
        chunks = [chunk async for chunk in resp.iter_chunks()]
    assert b"".join(chunks) == data

    asset = memories_emulator.control.add_asset(b"q" * 50_000, "q q.mp4", content_type="video/mp4")
    for api in ("v1", "v2"):
        async with aclient.download_blob(asset["bucket"], asset["blob"], api=api) as resp:
            assert b"".join([c async for c in resp.iter_chunks()]) == b"q" * 50_000
            assert resp.filename == "q q.mp4"
    async with aclient.download_asset(asset["asset_id"]) as resp:
        assert resp.content_length == 50_000
        assert b"".join([c async for c in resp.iter_chunks()]) == b"q" * 50_000

    await aclient.delete_videos([result.video_no], unique_id="async")
    with pytest.raises(MemoriesNotFoundError):
        await aclient.get_video(result.video_no, unique_id="async")


async def test_iter_videos_is_an_async_iterator(aclient, make_video):
    path, _ = make_video()
    uploaded = {(await aclient.upload_video(path, unique_id="ap")).video_no for _ in range(3)}
    seen = [v.video_no async for v in aclient.iter_videos(page_size=2, unique_id="ap")]
    assert sorted(seen) == sorted(uploaded)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        (
            "ignore_page",
            r"answered page 2 of the listing of unique_id 'ap' with exactly the videos of page 1 \(2,",
        ),
        ("no_rows", r"the listing of unique_id 'ap' ended at page 2 after 2 video\(s\), though .* counts 3"),
    ],
)
async def test_iter_videos_refuses_a_listing_that_cannot_be_read_whole(
    aclient, memories_emulator, make_video, kind, message
):
    # As the sync client's: the same cursor, so the same refusal.
    path, _ = make_video()
    for _ in range(3):
        await aclient.upload_video(path, unique_id="ap")
    memories_emulator.control.inject_fault("list_videos", "none")
    memories_emulator.control.inject_fault("list_videos", kind, count=20)
    seen = []
    with pytest.raises(MemoriesPagingError, match=message):
        async for video in aclient.iter_videos(page_size=2, unique_id="ap"):
            seen.append(video.video_no)
    assert len(seen) == 2 and memories_emulator.control.count("list_videos") == 2


async def test_upload_file_object_retried_after_0429(aclient, memories_emulator):
    data = b"m" * 300_000
    memories_emulator.control.inject_fault("upload", "code_0429", count=1)
    result = await aclient.upload_video(io.BytesIO(data), filename="b.avi")
    assert memories_emulator.control.count("upload") == 2
    (stored,) = memories_emulator.control.videos()
    assert (stored["video_no"], stored["size"]) == (result.video_no, len(data))


async def test_upload_not_retried_after_accept_then_drop(aclient, memories_emulator, make_video):
    path, _ = make_video()
    memories_emulator.control.inject_fault("upload", "accept_then_drop", count=1)
    with pytest.raises(MemoriesConnectionError):
        await aclient.upload_video(path)
    assert memories_emulator.control.count("upload") == 1
    assert len(memories_emulator.control.videos()) == 1


async def test_5xx_retried_for_reads(aclient, memories_emulator):
    memories_emulator.control.inject_fault("list_videos", "http_500", count=2)
    page = await aclient.list_videos()
    assert page.videos == []
    assert memories_emulator.control.count("list_videos") == 3


async def test_download_json_error_and_drop_mid_body(aclient, memories_emulator):
    asset = memories_emulator.control.add_asset(b"z" * 2_000_000, "z.mp4")
    memories_emulator.control.inject_fault(
        "v2_download", "json_error", code="0001", msg="Resource does not exist"
    )
    with pytest.raises(MemoriesNotFoundError) as info:
        async with aclient.download_asset(asset["asset_id"]):
            pass
    assert info.value.http_status == 200

    memories_emulator.control.inject_fault("v2_download", "drop_mid_body", count=1)
    async with aclient.download_asset(asset["asset_id"]) as resp:
        with pytest.raises(MemoriesIncompleteBodyError):
            async for _ in resp.iter_chunks():
                pass


async def test_wrong_key_and_secret_hygiene(memories_emulator, caplog):
    caplog.set_level(logging.DEBUG)
    key = "sk-this-key-must-not-leak"
    async with AsyncMemoriesClient(
        key, base_url=memories_emulator.v1_url, retry=RetryPolicy(initial_delay=0)
    ) as c:
        assert key not in repr(c)
        with pytest.raises(MemoriesAuthError) as info:
            await c.list_videos()
    assert memories_emulator.control.count("list_videos") == 1
    assert key not in str(info.value) and key not in repr(info.value)
    assert key not in caplog.text


async def test_connection_refused_is_retried_then_raised(unused_port, caplog):
    caplog.set_level(logging.WARNING, logger="memories_provider.client")
    policy = RetryPolicy(max_retries=2, initial_delay=0, jitter=False)
    async with AsyncMemoriesClient("sk-x", base_url=f"http://127.0.0.1:{unused_port}/x", retry=policy) as c:
        with pytest.raises(MemoriesConnectionError) as info:
            await c.upload_video(io.BytesIO(b"v" * 100), filename="v.mp4")
    assert not info.value.request_sent
    assert sum("retrying" in r.getMessage() for r in caplog.records) == 2


async def test_upload_not_retried_on_5xx(aclient, memories_emulator, make_video):
    path, _ = make_video()
    memories_emulator.control.inject_fault("upload", "http_503", count=1)
    with pytest.raises(MemoriesServerError):
        await aclient.upload_video(path)
    assert memories_emulator.control.count("upload") == 1


async def test_stalled_download_body_raises_incomplete(memories_emulator):
    asset = memories_emulator.control.add_asset(b"s" * 3_000_000, "s.mp4")
    memories_emulator.control.inject_fault("v2_download", "slow_body", count=1, delay=4.0)
    c = AsyncMemoriesClient(memories_emulator.api_key, v2_base_url=memories_emulator.v2_url, timeout=1.0)
    async with c, c.download_asset(asset["asset_id"]) as resp:
        with pytest.raises(MemoriesIncompleteBodyError):
            async for _ in resp.iter_chunks():
                pass


async def test_read_timeout_on_a_json_call_is_retried(memories_emulator):
    memories_emulator.control.inject_fault("get_metadata", "slow_body", count=1, delay=4.0)
    policy = RetryPolicy(max_retries=2, initial_delay=0, jitter=False)
    c = AsyncMemoriesClient(
        memories_emulator.api_key, base_url=memories_emulator.v1_url, timeout=1.0, retry=policy
    )
    async with c:
        with pytest.raises(MemoriesNotFoundError):
            await c.get_video("VI000000000000000009")
    assert memories_emulator.control.count("get_metadata") == 2


async def test_delete_retry_answered_0409_counts_as_deleted(aclient, memories_emulator):
    memories_emulator.control.inject_fault("delete_videos", "drop_before_response", count=1)
    memories_emulator.control.inject_fault(
        "delete_videos", "json_error", count=1, code="0409", msg="deleted twice"
    )
    await aclient.delete_videos(["VI000000000000000010"])
    assert memories_emulator.control.count("delete_videos") == 2
