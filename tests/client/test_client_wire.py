"""The wire format, checked with a tiny scripted HTTP server (variants the strict emulator never sends)."""

from __future__ import annotations

import email.parser
import email.policy
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from memories_provider import __version__
from memories_provider.client import (
    AsyncMemoriesClient,
    MemoriesClient,
    MemoriesIncompleteBodyError,
    MemoriesResponseError,
    RetryPolicy,
    VideoStatus,
)

NO_RETRY = RetryPolicy(max_retries=0)


class Scripted:
    """A local HTTP server answering each request with the next scripted response, recording requests."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.responses: list[tuple[int, dict[str, str], bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                outer.requests.append(
                    {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
                )
                status, headers, payload = outer.responses.pop(0)
                self.send_response(status)
                declared = headers.pop("X-Declared-Length", None)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", declared or str(len(payload)))
                if declared:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        self.v1 = f"http://127.0.0.1:{self.server.server_port}/serve/api/v1"
        self.v2 = f"http://127.0.0.1:{self.server.server_port}/serve/api/v2"

    def reply(self, payload, status: int = 200, headers: dict[str, str] | None = None) -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        hdrs = {"Content-Type": "application/json"} if not isinstance(payload, bytes) else {}
        hdrs.update(headers or {})
        self.responses.append((status, hdrs, body))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


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
    wire.reply(ok({"videoNo": "VI1", "videoName": "n", "videoStatus": "UNPARSE", "uploadTime": "17"}))
    with MemoriesClient("k", base_url=wire.v1, retry=NO_RETRY) as c:
        result = c.upload_video(path, unique_id="u", tags=["a", "b"], retain_original_video=True)
    assert (result.video_no, result.status, result.upload_time) == ("VI1", VideoStatus.UNPARSE, 17)
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
                        "video_no": "VI1",
                        "status": "PARSE_ERROR",
                        "cause": "null",
                        "size": "10",
                        "duration": "1.5",
                    },
                    {"video_no": "VI2", "status": "FAIL", "cause": "bad codec"},
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
                "videos": [{"videoNo": "VI3", "status": "PARSE"}],
            },
        }
    )
    with MemoriesClient("k", base_url=wire.v1, retry=NO_RETRY) as c:
        videos = list(c.iter_videos(page_size=2))
    assert [(v.video_no, v.status, v.cause) for v in videos] == [
        ("VI1", VideoStatus.FAILED, None),
        ("VI2", VideoStatus.FAILED, "bad codec"),
        ("VI3", VideoStatus.PARSE, None),
    ]
    assert (videos[0].size, videos[0].duration) == (10, 1.5)
    assert [json.loads(r["body"])["page"] for r in wire.requests] == [1, 2]


def test_html_error_page_is_quoted_not_a_traceback(wire):
    wire.reply(b"<html>Service Unavailable</html>", status=503, headers={"Content-Type": "text/html"})
    with (
        MemoriesClient("k", base_url=wire.v1, retry=NO_RETRY) as c,
        pytest.raises(MemoriesResponseError) as info,
    ):
        c.get_video("VI1")
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
    wire.reply(ok({"videoNo": "VI1", "videoName": "n", "videoStatus": "UNPARSE", "uploadTime": 1}))
    wire.reply(ok({"videoNo": "VI2", "videoName": "m", "videoStatus": "UNPARSE", "uploadTime": 2}))
    async with AsyncMemoriesClient("k", base_url=wire.v1, retry=NO_RETRY) as c:
        first = await c.upload_video(path)
        second = await c.upload_video_from_url("https://example.com/v.mp4", tags=["t1", "t2"])
    assert (first.video_no, second.video_no) == ("VI1", "VI2")
    upload, by_url = wire.requests
    assert "Transfer-Encoding" not in upload["headers"]
    assert int(upload["headers"]["Content-Length"]) == len(upload["body"]) > 3_000_000
    assert by_url["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
    assert by_url["body"] == b"url=https%3A%2F%2Fexample.com%2Fv.mp4&tags=t1&tags=t2"
