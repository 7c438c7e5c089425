"""The sync client against the emulator over real sockets: every endpoint, every error, every retry rule."""

from __future__ import annotations

import io
import logging

import pytest
from local_http import LocalServer, folder_handler

from memories_provider.client import (
    MemoriesAuthError,
    MemoriesClient,
    MemoriesConnectionError,
    MemoriesDuplicateError,
    MemoriesIncompleteBodyError,
    MemoriesInsufficientCreditsError,
    MemoriesInvalidRequestError,
    MemoriesNotFoundError,
    MemoriesPagingError,
    MemoriesRateLimitError,
    MemoriesServerError,
    RetryPolicy,
    UploadResult,
    VideoStatus,
)

# ---------------------------------------------------------------------------- round trips


def test_upload_path_then_status_list_download_delete(client, memories_emulator, make_video):
    path, data = make_video("holiday.MP4")
    progress: list[int] = []
    result = client.upload_video(path, unique_id="scope-a", tags=["beach", "sun"], progress=progress.append)
    assert isinstance(result, UploadResult)
    assert result.video_no.startswith("VI")
    assert result.status is VideoStatus.UNPARSE
    assert progress[-1] == len(data)

    stored = [v for v in memories_emulator.control.videos() if v["video_no"] == result.video_no]
    assert len(stored) == 1
    assert stored[0]["size"] == len(data)
    assert {"beach", "sun"} <= set(stored[0]["tags"])

    video = client.get_video(result.video_no, unique_id="scope-a")
    assert video.status is VideoStatus.PARSE
    assert video.size == len(data)

    page = client.list_videos(unique_id="scope-a", video_nos=[result.video_no])
    assert [v.video_no for v in page.videos] == [result.video_no]
    assert "scope-a" in client.list_unique_ids()

    with client.download_video(result.video_no, unique_id="scope-a") as resp:
        body = b"".join(resp.iter_chunks(chunk_size=64 * 1024))
        assert resp.content_length in (None, len(data))
    assert body == data

    client.delete_videos([result.video_no], unique_id="scope-a")
    with pytest.raises(MemoriesNotFoundError):
        client.get_video(result.video_no, unique_id="scope-a")


def test_upload_file_object_with_metadata(client, memories_emulator):
    data = b"\x00\x00\x00\x18ftypmp42" + bytes(5000)
    result = client.upload_video(
        io.BytesIO(data),
        filename="cam.mov",
        unique_id="s",
        camera_model="GoPro",
        latitude=1.25,
        longitude=2.5,
        datetime_taken="2024-05-01 10:11:12",
        retain_original_video=False,
        video_transcription_prompt="say hi",
    )
    (stored,) = [v for v in memories_emulator.control.videos() if v["video_no"] == result.video_no]
    assert stored["size"] == len(data)
    assert stored["filename"] == "cam.mov"


def test_iter_videos_walks_every_page(client, make_video):
    path, _ = make_video()
    uploaded = {client.upload_video(path, unique_id="paging").video_no for _ in range(5)}
    seen = [v.video_no for v in client.iter_videos(page_size=2, unique_id="paging")]
    assert sorted(seen) == sorted(uploaded)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        (
            "ignore_page",
            r"answered page 2 of the listing of unique_id 'paging' with exactly the videos of page 1 \(2,",
        ),
        (
            "no_rows",
            r"the listing of unique_id 'paging' ended at page 2 after 2 video\(s\), though .* counts 5",
        ),
    ],
)
def test_iter_videos_refuses_a_listing_that_cannot_be_read_whole(
    client, memories_emulator, make_video, kind, message
):
    # A service that answers page 1 to every page stopped the paging once its total was counted
    # (page 1 twice, the rest never seen); pages that end before the total ended it as complete.
    path, _ = make_video()
    for _ in range(5):
        client.upload_video(path, unique_id="paging")
    memories_emulator.control.inject_fault("list_videos", "none")  # page 1 as it is
    memories_emulator.control.inject_fault("list_videos", kind, count=20)
    seen = []
    with pytest.raises(MemoriesPagingError, match=message) as info:
        seen.extend(v.video_no for v in client.iter_videos(page_size=2, unique_id="paging"))
    assert len(seen) == 2 and info.value.endpoint == "list_videos"
    assert memories_emulator.control.count("list_videos") == 2
    assert memories_emulator.api_key not in str(info.value) + repr(info.value)


def test_delete_chunks_by_100(client, memories_emulator, make_video):
    path, _ = make_video()
    video_no = client.upload_video(path).video_no
    client.delete_videos([video_no] + [f"VI{n:018d}" for n in range(150)])
    assert memories_emulator.control.count("delete_videos") == 2
    assert video_no not in {v["video_no"] for v in memories_emulator.control.videos()}


def test_download_blob_v1_v2_and_asset(client, memories_emulator, tmp_path):
    data = b"asset-bytes" * 10000
    asset = memories_emulator.control.add_asset(data, "scene one.mp4", content_type="video/mp4")
    for api in ("v1", "v2"):
        with client.download_blob(asset["bucket"], asset["blob"], api=api) as resp:
            assert b"".join(resp.iter_chunks()) == data
            assert resp.filename == "scene one.mp4"
    with client.download_asset(asset["asset_id"]) as resp:
        assert resp.content_type.startswith("video/mp4")
        assert b"".join(resp) == data
    assert memories_emulator.control.count("download") == 1
    assert memories_emulator.control.count("v2_download") == 2


def test_chunked_download_without_content_length(client, memories_emulator):
    data = b"c" * 300_000
    asset = memories_emulator.control.add_asset(data, "c.mp4")
    memories_emulator.control.configure(chunked_downloads=True)
    with client.download_blob(asset["bucket"], asset["blob"]) as resp:
        assert resp.content_length is None
        assert b"".join(resp.iter_chunks()) == data


@pytest.fixture
def static_server(tmp_path):
    """Serves ``tmp_path/static`` over plain HTTP (what upload_url fetches, unauthenticated)."""
    root = tmp_path / "static"
    root.mkdir()

    with LocalServer(folder_handler(root), poll_interval=0.05) as server:
        yield root, server.url


def test_upload_from_url(client, memories_emulator, static_server):
    root, url = static_server
    data = b"remote-video" * 1000
    (root / "remote.mp4").write_bytes(data)
    result = client.upload_video_from_url(f"{url}/remote.mp4", unique_id="fromurl", tags=["t"])
    assert result.video_no.startswith("VI")
    assert result.status is VideoStatus.UNPARSE
    (stored,) = [v for v in memories_emulator.control.videos() if v["video_no"] == result.video_no]
    assert stored["size"] == len(data)
    assert memories_emulator.control.count("upload_url") == 1


def test_upload_from_url_not_retried_after_accept_then_drop(client, memories_emulator, static_server):
    root, url = static_server
    (root / "r.mp4").write_bytes(b"r" * 1000)
    memories_emulator.control.inject_fault("upload_url", "accept_then_drop", count=1)
    with pytest.raises(MemoriesConnectionError):
        client.upload_video_from_url(f"{url}/r.mp4")
    assert memories_emulator.control.count("upload_url") == 1


# ---------------------------------------------------------------------------- business codes


def test_wrong_key_is_auth_error_without_retry(memories_emulator):
    with (
        MemoriesClient(
            "sk-wrong", base_url=memories_emulator.v1_url, retry=RetryPolicy(initial_delay=0)
        ) as bad,
        pytest.raises(MemoriesAuthError) as info,
    ):
        bad.list_videos()
    assert info.value.code in ("0401", None)
    assert memories_emulator.control.count("list_videos") == 1


@pytest.mark.parametrize(("key", "account_disabled", "status"), [("sk-wrong", False, 401), (None, True, 403)])
def test_v2_http_401_and_403_are_auth_errors(memories_emulator, key, account_disabled, status):
    # The v2 host answers a bad key with HTTP 401 and a disabled account with HTTP 403.
    memories_emulator.control.configure(account_disabled=account_disabled)
    asset = memories_emulator.control.add_asset(b"a", "a.mp4", "video/mp4")
    with (
        MemoriesClient(
            key or memories_emulator.api_key,
            v2_base_url=memories_emulator.v2_url,
            retry=RetryPolicy(initial_delay=0),
        ) as c,
        pytest.raises(MemoriesAuthError) as info,
    ):
        c.download_asset(asset["asset_id"])
    assert info.value.http_status == status
    assert memories_emulator.control.count("v2_download") == 1  # never retried


def test_unknown_video_is_not_found(client):
    with pytest.raises(MemoriesNotFoundError) as info:
        client.get_video("VI000000000000000001")
    assert info.value.code == "0001"
    assert info.value.endpoint == "get_metadata"
    assert "not found" in info.value.message


def test_no_credits_fails_fast(client, memories_emulator, make_video):
    path, _ = make_video()
    memories_emulator.control.configure(credits=0)
    with pytest.raises(MemoriesInsufficientCreditsError) as info:
        client.upload_video(path)
    assert info.value.code == "0402"
    assert memories_emulator.control.count("upload") == 1


def test_server_side_validation_maps_to_invalid_request(client, memories_emulator):
    with pytest.raises(MemoriesInvalidRequestError) as info:
        client.download_blob("no-such-bucket", "no/such.mp4")
    assert info.value.code is not None
    assert memories_emulator.control.count("v2_download") == 1


# ---------------------------------------------------------------------------- retries


def test_5xx_on_idempotent_call_is_retried(client, memories_emulator):
    memories_emulator.control.inject_fault("list_videos", "http_503", count=2)
    page = client.list_videos()
    assert page.videos == []
    assert memories_emulator.control.count("list_videos") == 3


def test_5xx_retries_give_up_after_max_retries(client, memories_emulator):
    memories_emulator.control.inject_fault("list_unique_ids", "http_500", count=10)
    with pytest.raises(MemoriesServerError) as info:
        client.list_unique_ids()
    assert info.value.http_status == 500
    assert memories_emulator.control.count("list_unique_ids") == 4  # 1 + max_retries(3)


def test_upload_not_retried_on_5xx(client, memories_emulator, make_video):
    path, _ = make_video()
    memories_emulator.control.inject_fault("upload", "http_500", count=1)
    with pytest.raises(MemoriesServerError):
        client.upload_video(path)
    assert memories_emulator.control.count("upload") == 1


@pytest.mark.parametrize("kind", ["code_0429", "http_429"])
def test_upload_retried_after_explicit_rate_limit(client, memories_emulator, make_video, kind):
    path, data = make_video()
    memories_emulator.control.inject_fault("upload", kind, count=2)
    result = client.upload_video(path)
    assert memories_emulator.control.count("upload") == 3
    (stored,) = [v for v in memories_emulator.control.videos() if v["video_no"] == result.video_no]
    assert stored["size"] == len(data)  # the rewound file was sent whole again
    assert len(memories_emulator.control.videos()) == 1


def test_upload_not_retried_after_accept_then_drop(client, memories_emulator, make_video):
    path, _ = make_video()
    memories_emulator.control.inject_fault("upload", "accept_then_drop", count=1)
    with pytest.raises(MemoriesConnectionError) as info:
        client.upload_video(path)
    assert info.value.request_sent
    assert memories_emulator.control.count("upload") == 1
    assert len(memories_emulator.control.videos()) == 1  # accepted once, never duplicated


def test_unseekable_upload_is_not_retried(client, memories_emulator):
    class Stream(io.RawIOBase):
        def __init__(self):
            self.left = 1000

        def readable(self):
            return True

        def readinto(self, b):
            n = min(len(b), self.left)
            b[:n] = b"v" * n
            self.left -= n
            return n

    memories_emulator.control.inject_fault("upload", "code_0429", count=1)
    with pytest.raises(MemoriesRateLimitError):
        client.upload_video(Stream(), filename="s.mp4", size=1000)
    assert memories_emulator.control.count("upload") == 1


def test_drop_before_response_is_retried_for_reads(client, memories_emulator):
    memories_emulator.control.inject_fault("get_metadata", "drop_before_response", count=1)
    with pytest.raises(MemoriesNotFoundError):
        client.get_video("VI000000000000000002")
    assert memories_emulator.control.count("get_metadata") == 2


def test_retry_after_is_honoured(client, memories_emulator, caplog):
    memories_emulator.control.configure(retry_after=0.4)
    memories_emulator.control.inject_fault("list_videos", "code_0429", count=1)
    with caplog.at_level(logging.WARNING, logger="memories_provider.client"):
        client.list_videos()
    log = memories_emulator.control.request_log("list_videos")
    assert len(log) == 2
    # The policy's own delay is at most 0.05 s: the wait chosen is the server's Retry-After ...
    [announced] = [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]
    assert announced.endswith("retrying in 0.40s")
    # ... and it was kept (a lower bound: load only widens the gap between the two arrivals).
    assert log[1]["time"] - log[0]["time"] >= 0.4


def test_rate_limit_gives_up_with_retry_after_attribute(memories_emulator):
    memories_emulator.control.configure(retry_after=0.01)
    memories_emulator.control.inject_fault("list_videos", "code_0429", count=5)
    policy = RetryPolicy(max_retries=1, initial_delay=0)
    c = MemoriesClient(memories_emulator.api_key, base_url=memories_emulator.v1_url, retry=policy)
    with c, pytest.raises(MemoriesRateLimitError) as info:
        c.list_videos()
    assert info.value.code == "0429"
    assert info.value.retry_after == pytest.approx(0.01)
    assert memories_emulator.control.count("list_videos") == 2


def test_connection_refused_upload_is_retried(make_video, caplog, unused_port):
    path, _ = make_video()
    policy = RetryPolicy(max_retries=2, initial_delay=0, jitter=False)
    caplog.set_level(logging.WARNING, logger="memories_provider.client")
    c = MemoriesClient("sk-x", base_url=f"http://127.0.0.1:{unused_port}/serve/api/v1", retry=policy)
    with c, pytest.raises(MemoriesConnectionError) as info:
        c.upload_video(path)
    assert not info.value.request_sent
    assert sum("retrying" in r.getMessage() for r in caplog.records) == 2


# ---------------------------------------------------------------------------- downloads: errors


def test_download_json_error_with_http_200_is_typed(client, memories_emulator, make_video):
    path, _ = make_video()
    video_no = client.upload_video(path).video_no
    memories_emulator.control.inject_fault("download", "json_error", code="0001", msg="video not found")
    with pytest.raises(MemoriesNotFoundError) as info:
        client.download_video(video_no)
    assert (info.value.code, info.value.http_status) == ("0001", 200)


def test_download_of_unknown_video_is_not_found(client):
    with pytest.raises(MemoriesNotFoundError):
        client.download_video("VI000000000000000003")


def test_download_dropped_mid_body_raises_incomplete(client, memories_emulator):
    data = b"d" * 2_000_000
    asset = memories_emulator.control.add_asset(data, "d.mp4")
    memories_emulator.control.inject_fault("v2_download", "drop_mid_body", count=1)
    with client.download_asset(asset["asset_id"]) as resp, pytest.raises(MemoriesIncompleteBodyError):
        for _ in resp.iter_chunks():
            pass


def test_download_5xx_is_retried_before_the_body(client, memories_emulator):
    asset = memories_emulator.control.add_asset(b"x" * 1000, "x.mp4")
    memories_emulator.control.inject_fault("v2_download", "http_503", count=1)
    with client.download_asset(asset["asset_id"]) as resp:
        assert b"".join(resp.iter_chunks()) == b"x" * 1000
    assert memories_emulator.control.count("v2_download") == 2


# ---------------------------------------------------------------------------- secrecy


def test_key_never_in_logs_errors_or_reprs(memories_emulator, caplog):
    caplog.set_level(logging.DEBUG)
    key = memories_emulator.api_key
    memories_emulator.control.inject_fault("list_videos", "http_503", count=10)
    with MemoriesClient(
        key, base_url=memories_emulator.v1_url, retry=RetryPolicy(max_retries=1, initial_delay=0)
    ) as c:
        assert key not in repr(c)
        with pytest.raises(MemoriesServerError) as info:
            c.list_videos()
        with pytest.raises(MemoriesNotFoundError) as info2:
            c.get_video("VI000000000000000004")
    for err in (info.value, info2.value):
        assert key not in str(err) and key not in repr(err)
    assert caplog.records  # the client did log its retries
    assert key not in caplog.text


# ---------------------------------------------------------------------------- every code over a socket


@pytest.mark.parametrize(
    ("code", "msg", "exc_type"),
    [
        ("0001", "Parameter error: page", MemoriesInvalidRequestError),
        ("0003", "video not found", MemoriesNotFoundError),
        ("0401", "API key invalid", MemoriesAuthError),
        ("0402", "Insufficient balance", MemoriesInsufficientCreditsError),
        ("0403", "account disabled", MemoriesAuthError),
        ("0409", "non-repeatable operation", MemoriesDuplicateError),
        ("9009", "permission denied", MemoriesAuthError),
    ],
)
def test_each_business_code_fails_once_without_retry(client, memories_emulator, code, msg, exc_type):
    memories_emulator.control.inject_fault("list_videos", "json_error", count=5, code=code, msg=msg)
    with pytest.raises(exc_type) as info:
        client.list_videos()
    assert type(info.value) is exc_type
    assert (info.value.code, info.value.message, info.value.endpoint) == (code, msg, "list_videos")
    assert memories_emulator.control.count("list_videos") == 1


def test_v2_integer_code_for_unknown_asset(client):
    with pytest.raises(MemoriesNotFoundError) as info:
        client.download_asset("re_999999")
    assert info.value.code == "400"
    assert info.value.http_status == 400
    assert info.value.endpoint == "v2_download"


def test_real_rate_limit_waits_for_retry_after(client, memories_emulator):
    memories_emulator.control.configure(rate_limits={"list_videos": (1, 0.8)})
    client.list_videos()
    client.list_videos()  # limited at first; the client waits as told and succeeds
    log = memories_emulator.control.request_log("list_videos")
    # One 0429 and no more: the policy's own delays (0.01-0.05 s) would have met the closed window
    # again; only waiting the Retry-After (what is left of the 0.8 s window) gets straight through.
    assert [entry["code"] for entry in log] == ["0000", "0429", "0000"]


def test_indexing_cap_rejection_is_retried_for_uploads(client, memories_emulator, make_video):
    path, _ = make_video()
    memories_emulator.control.configure(indexing_cap=1, parse_delay=0.8)
    client.upload_video(path)
    second = client.upload_video(path)  # rejected with 0429 until the first finishes indexing
    log = memories_emulator.control.request_log("upload")
    assert log[1]["code"] == "0429"
    assert log[-1]["code"] == "0000"
    assert second.video_no in {v["video_no"] for v in memories_emulator.control.videos()}
    assert len(memories_emulator.control.videos()) == 2


# ---------------------------------------------------------------------------- timeouts


def test_read_timeout_on_a_json_call_is_retried(memories_emulator):
    memories_emulator.control.inject_fault("list_videos", "slow_body", count=1, delay=4.0)
    policy = RetryPolicy(max_retries=2, initial_delay=0, jitter=False)
    with MemoriesClient(
        memories_emulator.api_key, base_url=memories_emulator.v1_url, timeout=1.0, retry=policy
    ) as c:
        assert c.list_videos().videos == []
    assert memories_emulator.control.count("list_videos") == 2


def test_stalled_download_body_raises_incomplete(memories_emulator):
    asset = memories_emulator.control.add_asset(b"s" * 3_000_000, "s.mp4")
    memories_emulator.control.inject_fault("v2_download", "slow_body", count=1, delay=4.0)
    c = MemoriesClient(memories_emulator.api_key, v2_base_url=memories_emulator.v2_url, timeout=1.0)
    with c, c.download_asset(asset["asset_id"]) as resp, pytest.raises(MemoriesIncompleteBodyError) as info:
        for _ in resp.iter_chunks():
            pass
    assert "timed out" in str(info.value).lower() or "read" in str(info.value).lower()


def test_delete_retry_answered_0409_counts_as_deleted(client, memories_emulator):
    memories_emulator.control.inject_fault("delete_videos", "drop_before_response", count=1)
    memories_emulator.control.inject_fault(
        "delete_videos", "json_error", count=1, code="0409", msg="deleted twice"
    )
    client.delete_videos(["VI000000000000000010"])
    assert memories_emulator.control.count("delete_videos") == 2


def test_delete_first_answer_0409_is_done_when_the_video_is_gone(client, memories_emulator, make_video):
    # The fault replaces the answer of a delete that ran: the video is gone, the client sees 0409
    # (an older edition's "deleted twice") and a listing without it. A 0409 with the video still
    # listed is raised: test_client_wire.
    path, _ = make_video()
    video_no = client.upload_video(path).video_no
    memories_emulator.control.inject_fault(
        "delete_videos", "json_error", count=1, code="0409", msg="deleted twice"
    )
    client.delete_videos([video_no])
    assert [r["video_nos"] for r in memories_emulator.control.request_log("list_videos")] == [[video_no]]
    assert video_no not in {v["video_no"] for v in memories_emulator.control.videos()}


@pytest.mark.parametrize("chunked", [False, True])
def test_iter_into_fills_the_callers_buffers_whole(client, memories_emulator, chunked):
    """A plain body goes straight from the socket into the caller's buffers, a chunked one through
    urllib3: the same bytes either way, every buffer filled whole but the last, a spare one given back."""
    data = bytes(range(256)) * 4000 + b"tail"  # 1 024 004 bytes: not a multiple of the buffer
    asset = memories_emulator.control.add_asset(data, "v.mp4", "video/mp4")
    memories_emulator.control.configure(chunked_downloads=chunked)
    taken: list[memoryview] = []
    given_back: list[memoryview] = []

    def take() -> memoryview:
        taken.append(memoryview(bytearray(65536)))
        return taken[-1]

    with client.download_asset(asset["asset_id"]) as resp:
        assert resp._body_reader().__name__ == ("read_decoded" if chunked else "read_plain")
        views = [bytes(v) for v in resp.iter_into(take, given_back.append, expected_size=len(data))]
    assert b"".join(views) == data
    assert [len(v) for v in views[:-1]] == [65536] * (len(views) - 1)
    assert len(views) == -(-len(data) // 65536)
    # The body ended exactly at a buffer's end or not: an unused buffer is never lost.
    assert len(taken) == len(views) + len(given_back)


def test_no_credits_is_said_plainly_whatever_the_server_writes(client, memories_emulator):
    # Spec: 0402 -> "fail fast, no retry, say so plainly". The emulator's own msg happens to be plain
    # ("Insufficient balance..."); the service's wording is not documented, so the client says it.
    memories_emulator.control.inject_fault("download", "json_error", code="0402", msg="operation failed")
    with pytest.raises(MemoriesInsufficientCreditsError) as info:
        client.download_video("VI000000000000000012")
    assert "not enough credits" in str(info.value) and "operation failed" in str(info.value)
    assert memories_emulator.control.count("download") == 1
