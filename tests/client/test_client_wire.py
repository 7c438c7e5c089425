"""The wire format, checked with a tiny scripted HTTP server (variants the strict emulator never sends)."""

from __future__ import annotations

import email.parser
import email.policy
import json
import logging
import sys
import time
from typing import Any

import pytest
from local_http import LocalServer, QuietHandler

from memories_provider import __version__
from memories_provider.client import (
    AsyncMemoriesClient,
    MemoriesAuthError,
    MemoriesClient,
    MemoriesDuplicateError,
    MemoriesError,
    MemoriesIncompleteBodyError,
    MemoriesRateLimitError,
    MemoriesResponseError,
    MemoriesTimeoutError,
    RetryPolicy,
    VideoStatus,
)

NO_RETRY = RetryPolicy(max_retries=0)


class Scripted:
    """A local HTTP server answering each request with the next scripted response, recording requests."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.responses: list[tuple[int, dict[str, str], bytes, float]] = []
        outer = self

        class Handler(QuietHandler):
            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                outer.requests.append(
                    {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
                )
                status, headers, payload, delay = outer.responses.pop(0)
                time.sleep(delay)  # a slow server: it thinks before answering
                try:
                    self._respond(status, headers, payload)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client gave up waiting (timeout tests)

            def _respond(self, status, headers, payload):
                self.send_response(status)
                declared = headers.pop("X-Declared-Length", None)
                for k, v in headers.items():
                    for each in v if isinstance(v, list) else [v]:  # a list: the header sent once per value
                        self.send_header(k, each)
                self.send_header("Content-Length", declared or str(len(payload)))
                if declared:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _handle

        self._server = LocalServer(Handler, poll_interval=0.05)
        self._server.__enter__()
        self.v1 = f"{self._server.url}/serve/api/v1"
        self.v2 = f"{self._server.url}/serve/api/v2"

    def reply(
        self, payload, status: int = 200, headers: dict[str, Any] | None = None, delay: float = 0.0
    ) -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        hdrs = {"Content-Type": "application/json"} if not isinstance(payload, bytes) else {}
        hdrs.update(headers or {})
        self.responses.append((status, hdrs, body, delay))

    def close(self) -> None:
        self._server.__exit__(None, None, None)


@pytest.fixture
def wire():
    server = Scripted()
    yield server
    server.close()


def ok(data):
    return {"code": "0000", "msg": "success", "data": data}


def test_headers_auth_and_user_agent(wire):
    wire.reply(ok({"unique_ids": ["default", "x"]}))
    with MemoriesClient("sk-raw-key", base_url=wire.v1, retry=NO_RETRY) as c:
        assert c.list_unique_ids() == ["default", "x"]
    headers = wire.requests[0]["headers"]
    assert headers["Authorization"] == "sk-raw-key"  # raw, no "Bearer"
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert headers["User-Agent"] == f"airflow-provider-memories/{__version__} python/{py}"


def test_upload_multipart_shape(wire, tmp_path):
    path = tmp_path / "Clip.MKV"
    path.write_bytes(b"\x1a\x45\xdf\xa3" + b"k" * 10_000)
    wire.reply(
        ok(
            {
                "videoNo": "VI000000000000000001",
                "videoName": "n",
                "videoStatus": "UNPARSE",
                "uploadTime": "17",
            }
        )
    )
    with MemoriesClient("k", base_url=wire.v1, retry=NO_RETRY) as c:
        result = c.upload_video(path, unique_id="u", tags=["a", "b"], retain_original_video=True)
    assert (result.video_no, result.status, result.upload_time) == (
        "VI000000000000000001",
        VideoStatus.UNPARSE,
        17,
    )
    request = wire.requests[0]
    assert request["path"] == "/serve/api/v1/upload"
    assert "Transfer-Encoding" not in request["headers"]
    assert int(request["headers"]["Content-Length"]) == len(request["body"])
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {request['headers']['Content-Type']}\r\n\r\n".encode() + request["body"]
    )
    parts = {}
    for part in message.iter_parts():
        parts.setdefault(part.get_param("name", header="content-disposition"), []).append(part)
    assert [p.get_payload() for p in parts["tags"]] == ["a", "b"]
    assert parts["retain_original_video"][0].get_payload() == "true"
    (file_part,) = parts["file"]
    assert file_part.get_filename() == "Clip.MKV"
    assert file_part.get_content_type() == "video/x-matroska"
    assert file_part.get_payload(decode=True) == path.read_bytes()


def test_older_string_fields_and_v2_integer_codes(wire):
    wire.reply(
        ok(
            {
                "current_page": "1",
                "page_size": "2",
                "total_count": "3",
                "videos": [
                    {
                        "video_no": "VI000000000000000001",
                        "status": "PARSE_ERROR",
                        "cause": "null",
                        "size": "10",
                        "duration": "1.5",
                    },
                    {"video_no": "VI000000000000000002", "status": "FAIL", "cause": "bad codec"},
                ],
            }
        )
    )
    wire.reply(
        {
            "code": 200,
            "msg": "ok",
            "data": {
                "currentPage": 2,
                "pageSize": 2,
                "totalCount": 3,
                "videos": [{"videoNo": "VI000000000000000003", "status": "PARSE"}],
            },
        }
    )
    with MemoriesClient("k", base_url=wire.v1, retry=NO_RETRY) as c:
        videos = list(c.iter_videos(page_size=2))
    assert [(v.video_no, v.status, v.cause) for v in videos] == [
        ("VI000000000000000001", VideoStatus.FAILED, None),
        ("VI000000000000000002", VideoStatus.FAILED, "bad codec"),
        ("VI000000000000000003", VideoStatus.PARSE, None),
    ]
    assert (videos[0].size, videos[0].duration) == (10, 1.5)
    assert [json.loads(r["body"])["page"] for r in wire.requests] == [1, 2]


def test_html_error_page_is_quoted_not_a_traceback(wire):
    wire.reply(b"<html>Service Unavailable</html>", status=503, headers={"Content-Type": "text/html"})
    with (
        MemoriesClient("k", base_url=wire.v1, retry=NO_RETRY) as c,
        pytest.raises(MemoriesResponseError) as info,
    ):
        c.get_video("VI000000000000000001")
    assert "HTTP 503" in str(info.value) and "<html>Service Unavailable" in str(info.value)


def test_blob_download_sends_slashes_and_reads_json_files(wire):
    wire.reply({"not": "an envelope"}, headers={"Content-Disposition": 'attachment; filename="d.json"'})
    with (
        MemoriesClient("k", base_url=wire.v1, v2_base_url=wire.v2, retry=NO_RETRY) as c,
        c.download_blob("bk", "dir/sub dir/f.json") as resp,
    ):
        body = b"".join(resp.iter_chunks())
        assert resp.filename == "d.json"
    assert json.loads(body) == {"not": "an envelope"}  # a JSON *file* is not mistaken for an error
    assert wire.requests[0]["path"] == "/serve/api/v2/download?bucket=bk&blob=dir/sub%20dir/f.json"


def test_sync_short_body_is_incomplete(wire):
    wire.reply(b"x" * 1000, headers={"Content-Type": "video/mp4", "X-Declared-Length": "5000"})
    with (
        MemoriesClient("k", base_url=wire.v1, v2_base_url=wire.v2, retry=NO_RETRY) as c,
        c.download_asset("re_1") as resp,
        pytest.raises(MemoriesIncompleteBodyError),
    ):
        list(resp.iter_chunks())


async def test_async_short_body_is_incomplete(wire):
    wire.reply(b"x" * 1000, headers={"Content-Type": "video/mp4", "X-Declared-Length": "5000"})
    async with (
        AsyncMemoriesClient("k", base_url=wire.v1, v2_base_url=wire.v2, retry=NO_RETRY) as c,
        c.download_asset("re_1") as resp,
    ):
        assert resp.content_length == 5000
        with pytest.raises(MemoriesIncompleteBodyError):
            async for _ in resp.iter_chunks():
                pass


async def test_async_upload_has_exact_length_and_form_for_url(wire, tmp_path):
    path = tmp_path / "a.mp4"
    path.write_bytes(b"a" * 3_000_000)
    wire.reply(
        ok({"videoNo": "VI000000000000000001", "videoName": "n", "videoStatus": "UNPARSE", "uploadTime": 1})
    )
    wire.reply(
        ok({"videoNo": "VI000000000000000002", "videoName": "m", "videoStatus": "UNPARSE", "uploadTime": 2})
    )
    async with AsyncMemoriesClient("k", base_url=wire.v1, retry=NO_RETRY) as c:
        first = await c.upload_video(path)
        second = await c.upload_video_from_url("https://example.com/v.mp4", tags=["t1", "t2"])
    assert (first.video_no, second.video_no) == ("VI000000000000000001", "VI000000000000000002")
    upload, by_url = wire.requests
    assert "Transfer-Encoding" not in upload["headers"]
    assert int(upload["headers"]["Content-Length"]) == len(upload["body"]) > 3_000_000
    assert by_url["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
    assert by_url["body"] == b"url=https%3A%2F%2Fexample.com%2Fv.mp4&tags=t1&tags=t2"


# ---------------------------------------------------------------------------- malformed success data

RETRYING = RetryPolicy(max_retries=2, initial_delay=0, jitter=False)

#: A "0000" envelope whose data lacks what the call needs, per call.
MALFORMED = [
    ("upload_video", {"videoName": "n", "videoStatus": "UNPARSE"}),
    ("upload_video_from_url", {"videoName": "n"}),
    ("get_video", {"name": "clip.mp4"}),
    ("get_video", ["VI000000000000000001"]),
    ("list_videos", {"videos": [{"status": "PARSE"}]}),
    ("list_videos", "page one"),
    ("list_unique_ids", {"unique_ids": "default"}),
]


def _sync_call(client, name, video):
    if name == "upload_video":
        return client.upload_video(video)
    if name == "upload_video_from_url":
        return client.upload_video_from_url("https://example.com/v.mp4")
    if name == "get_video":
        return client.get_video("VI000000000000000001")
    if name == "list_videos":
        return client.list_videos()
    return client.list_unique_ids()


async def _async_call(client, name, video):
    if name == "upload_video":
        return await client.upload_video(video)
    if name == "upload_video_from_url":
        return await client.upload_video_from_url("https://example.com/v.mp4")
    if name == "get_video":
        return await client.get_video("VI000000000000000001")
    if name == "list_videos":
        return await client.list_videos()
    return await client.list_unique_ids()


def _check_undocumented_data(error, name, wire):
    assert isinstance(error, MemoriesResponseError)
    assert error.http_status == 200
    text = str(error)
    assert "HTTP 200" in text and '"code": "0000"' in text  # the status and the body's first bytes
    billed = "may have accepted (and billed) the upload" in text
    assert billed is name.startswith("upload")
    assert len(wire.requests) == 1  # a success envelope is never retried, least of all an upload


@pytest.fixture
def video(tmp_path):
    path = tmp_path / "v.mp4"
    path.write_bytes(b"v" * 1000)
    return path


@pytest.mark.parametrize(("name", "data"), MALFORMED)
def test_sync_malformed_success_data_is_a_response_error(wire, video, name, data):
    wire.reply(ok(data))
    with MemoriesClient("k", base_url=wire.v1, retry=RETRYING) as c, pytest.raises(MemoriesError) as info:
        _sync_call(c, name, video)
    _check_undocumented_data(info.value, name, wire)


@pytest.mark.parametrize(("name", "data"), MALFORMED)
async def test_async_malformed_success_data_is_a_response_error(wire, video, name, data):
    wire.reply(ok(data))
    async with AsyncMemoriesClient("k", base_url=wire.v1, retry=RETRYING) as c:
        with pytest.raises(MemoriesError) as info:
            await _async_call(c, name, video)
    _check_undocumented_data(info.value, name, wire)


# ---------------------------------------------------------------------------- Retry-After on 5xx

RETRY_AFTER_503 = [
    pytest.param(b"<html>down for maintenance</html>", {"Content-Type": "text/html"}, id="html"),
    pytest.param(
        json.dumps({"timestamp": 1, "path": "/x", "status": 503, "error": "Service Unavailable"}).encode(),
        {"Content-Type": "application/json"},
        id="spring-json",
    ),
]
#: Its own delay (0.01 s) differs from the server's Retry-After (0.2 s) the log must show.
SHORT_BACKOFF = RetryPolicy(max_retries=1, initial_delay=0.01, jitter=False, documented_limits=False)


@pytest.mark.parametrize(("body", "headers"), RETRY_AFTER_503)
def test_sync_503_retry_after_sets_the_retry_delay(wire, caplog, body, headers):
    wire.reply(body, status=503, headers={**headers, "Retry-After": "0.2"})
    wire.reply(ok({"unique_ids": ["a"]}))
    caplog.set_level(logging.WARNING, logger="memories_provider.client")
    with MemoriesClient("k", base_url=wire.v1, retry=SHORT_BACKOFF) as c:
        assert c.list_unique_ids() == ["a"]
    assert len(wire.requests) == 2
    assert "retrying in 0.20s" in caplog.text


@pytest.mark.parametrize(("body", "headers"), RETRY_AFTER_503)
async def test_async_503_retry_after_sets_the_retry_delay(wire, caplog, body, headers):
    wire.reply(body, status=503, headers={**headers, "Retry-After": "0.2"})
    wire.reply(ok({"unique_ids": ["a"]}))
    caplog.set_level(logging.WARNING, logger="memories_provider.client")
    async with AsyncMemoriesClient("k", base_url=wire.v1, retry=SHORT_BACKOFF) as c:
        assert await c.list_unique_ids() == ["a"]
    assert len(wire.requests) == 2
    assert "retrying in 0.20s" in caplog.text


#: ``Retry-After`` sent twice (a proxy adding its own to the service's), then again as HTTP dates.
TWICE = [
    pytest.param(["0.05", "7"], 7.0, id="delta-seconds"),
    pytest.param(["7", "junk"], 7.0, id="one-unreadable"),
    pytest.param(["Wed, 21 Oct 2015 07:28:00 GMT", "7"], 7.0, id="past-date-and-delta"),
]


@pytest.mark.parametrize(("values", "expected"), TWICE)
@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_retry_after_sent_twice_is_read_alike_by_both_clients(wire, kind, values, expected):
    # requests joins repeated headers ("0.05, 7"), which the sync client could not read (so it
    # ignored both); aiohttp's get() gave the first (0.05 s). The longest wait asked for counts.
    wire.reply({"code": "0429", "msg": "busy", "data": None}, headers={"Retry-After": values})
    with pytest.raises(MemoriesRateLimitError) as info:
        if kind == "sync":
            with MemoriesClient("k", base_url=wire.v1, retry=NO_RETRY) as c:
                c.list_unique_ids()
        else:
            async with AsyncMemoriesClient("k", base_url=wire.v1, retry=NO_RETRY) as ac:
                await ac.list_unique_ids()
    assert info.value.retry_after == expected


# ---------------------------------------------------------------------------- upload timeout

ACCEPTED = ok({"videoNo": "VI000000000000000001", "videoName": "n", "videoStatus": "UNPARSE"})


def test_sync_uploads_wait_upload_timeout_other_calls_timeout(wire, video):
    # The server answers after 1 s: longer than timeout (0.3 s), shorter than upload_timeout (5 s).
    for answer in (ACCEPTED, ACCEPTED, ok({"video_no": "VI000000000000000001"})):
        wire.reply(answer, delay=1.0)
    with MemoriesClient("k", base_url=wire.v1, timeout=0.3, upload_timeout=5, retry=NO_RETRY) as c:
        assert c.upload_video(video).video_no == "VI000000000000000001"
        assert c.upload_video_from_url("https://example.com/v.mp4").video_no == "VI000000000000000001"
        with pytest.raises(MemoriesTimeoutError):
            c.get_video("VI000000000000000001")


async def test_async_uploads_wait_upload_timeout_other_calls_timeout(wire, video):
    for answer in (ACCEPTED, ACCEPTED, ok({"video_no": "VI000000000000000001"})):
        wire.reply(answer, delay=1.0)
    async with AsyncMemoriesClient("k", base_url=wire.v1, timeout=0.3, upload_timeout=5, retry=NO_RETRY) as c:
        assert (await c.upload_video(video)).video_no == "VI000000000000000001"
        assert (await c.upload_video_from_url("https://example.com/v.mp4")).video_no == "VI000000000000000001"
        with pytest.raises(MemoriesTimeoutError):
            await c.get_video("VI000000000000000001")


# ---------------------------------------------------------------------------- HTTP 401/403


@pytest.mark.parametrize("status", [401, 403])
def test_sync_http_401_and_403_are_auth_errors(wire, status):
    wire.reply(b"Unauthorized", status=status, headers={"Content-Type": "text/plain"})
    with MemoriesClient("k", base_url=wire.v1, retry=RETRYING) as c, pytest.raises(MemoriesAuthError) as info:
        c.list_videos()
    assert info.value.http_status == status
    assert len(wire.requests) == 1  # never retried


@pytest.mark.parametrize("status", [401, 403])
async def test_async_http_401_and_403_are_auth_errors(wire, status):
    wire.reply(b"Forbidden", status=status, headers={"Content-Type": "text/plain"})
    async with AsyncMemoriesClient("k", base_url=wire.v1, retry=RETRYING) as c:
        with pytest.raises(MemoriesAuthError) as info:
            await c.list_videos()
    assert info.value.http_status == status
    assert len(wire.requests) == 1


# An older docs page answers 0409 to deleting twice. A cleanup task re-run after a lost answer meets
# it on its first attempt: the client asks list_videos whether any of the batch is left, and fails
# only if one is (the refusal then stands: some of the batch may not have been deleted).
_DELETED_TWICE = {"code": "0409", "msg": "Operation cannot be repeated", "data": None}
_BATCH = ["VI000000000000000001", "VI000000000000000002"]


def _listing(*video_nos):
    videos = [{"video_no": v, "status": "PARSE"} for v in video_nos]
    return ok({"current_page": 1, "page_size": 2, "total_count": len(videos), "videos": videos})


def _check_confirmation(wire):
    assert [r["path"] for r in wire.requests] == [
        "/serve/api/v1/delete_videos?unique_id=u",
        "/serve/api/v1/list_videos",
    ]
    asked = json.loads(wire.requests[1]["body"])
    assert (asked["video_nos"], asked["unique_id"]) == (_BATCH, "u")


def test_sync_delete_answered_0409_first_time_is_done_when_nothing_is_left(wire):
    wire.reply(_DELETED_TWICE)
    wire.reply(_listing())
    with MemoriesClient("k", base_url=wire.v1, retry=NO_RETRY) as c:
        c.delete_videos(_BATCH, unique_id="u")
    _check_confirmation(wire)


def test_sync_delete_answered_0409_fails_when_a_video_is_left(wire):
    wire.reply(_DELETED_TWICE)
    wire.reply(_listing(_BATCH[1]))
    with (
        MemoriesClient("k", base_url=wire.v1, retry=NO_RETRY) as c,
        pytest.raises(MemoriesDuplicateError, match="cannot be repeated"),
    ):
        c.delete_videos(_BATCH, unique_id="u")
    _check_confirmation(wire)


async def test_async_delete_answered_0409_first_time_is_done_when_nothing_is_left(wire):
    wire.reply(_DELETED_TWICE)
    wire.reply(_listing())
    async with AsyncMemoriesClient("k", base_url=wire.v1, retry=NO_RETRY) as c:
        await c.delete_videos(_BATCH, unique_id="u")
    _check_confirmation(wire)


async def test_async_delete_answered_0409_fails_when_a_video_is_left(wire):
    wire.reply(_DELETED_TWICE)
    wire.reply(_listing(_BATCH[0]))
    async with AsyncMemoriesClient("k", base_url=wire.v1, retry=NO_RETRY) as c:
        with pytest.raises(MemoriesDuplicateError, match="cannot be repeated"):
            await c.delete_videos(_BATCH, unique_id="u")
    _check_confirmation(wire)


def test_sync_delete_answered_0409_stands_when_the_listing_is_data_null(wire):
    wire.reply(_DELETED_TWICE)
    wire.reply(ok(None))  # a success without a count proves nothing
    with (
        MemoriesClient("k", base_url=wire.v1, retry=NO_RETRY) as c,
        pytest.raises(MemoriesDuplicateError),
    ):
        c.delete_videos(_BATCH, unique_id="u")
    _check_confirmation(wire)
