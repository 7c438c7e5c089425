"""The sync and async clients, given the same server answer, raise the same error.

Each scenario is played by a scripted local server to both clients; the error's class, message,
``code``, ``http_status`` and ``endpoint``, and the number of requests the server saw (retries,
redirects followed), must be the same.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from test_client_wire import Scripted, ok

from memories_provider.client import AsyncMemoriesClient, MemoriesClient, RetryPolicy

VIDEO = "VI000000000000000001"
KEY = "sk-parity-secret-key-0123456789"
#: Retries allowed, without delays (Retry-After capped to 0): a scenario that is retried shows it
#: in the request count.
RETRIES = RetryPolicy(
    max_retries=2, initial_delay=0, max_delay=0, jitter=False, documented_limits=False, max_retry_after=0
)
PRESIGNED = "https://bucket.s3.amazonaws.com/v.mp4?X-Amz-Signature=presigned0secret0999&X-Amz-Credential=c7"
MP4 = b"\x00\x00\x00\x18ftypmp42"


def _redirects(location: str, count: int = 1):
    def script(server: Scripted) -> None:
        for _ in range(count):
            server.reply(b"", status=302, headers={"Location": location})
        server.reply(ok([]))

    return script


#: name -> (script, method, args); a download's args: the expected size.
SCENARIOS: dict[str, tuple[Any, str, tuple[Any, ...]]] = {
    "redirect quoting the key": (_redirects(f"http://127.0.0.1:1/?k={KEY}"), "list_unique_ids", ()),
    "redirect to a non-URL": (_redirects("http://[::1"), "list_unique_ids", ()),
    "redirect to ftp": (_redirects("ftp://example.com/x"), "list_unique_ids", ()),
    "redirect loop": (_redirects("/serve/api/v1/list_unique_ids", 40), "list_unique_ids", ()),
    "404 without code": (lambda s: s.reply(b"", status=404), "list_unique_ids", ()),
    "500 quoting the key, thrice": (
        lambda s: [s.reply(f"oops {KEY}".encode(), status=500) for _ in range(3)],
        "list_unique_ids",
        (),
    ),
    "0429 with a long Retry-After, thrice": (
        lambda s: [
            s.reply({"code": "0429", "msg": "slow", "data": None}, headers={"Retry-After": "5000"})
            for _ in range(3)
        ],
        "list_unique_ids",
        (),
    ),
    "0409 on delete, one left": (
        lambda s: (
            s.reply({"code": "0409", "msg": f"dup {KEY}", "data": None}),
            s.reply(ok({"videos": [], "current_page": "1", "page_size": "1", "total_count": "1"})),
        ),
        "delete_videos",
        ([VIDEO],),
    ),
    # The multi-call operations (core.*_plan): each request's path and the outcome must agree.
    "0409 on delete, none left": (
        lambda s: (
            s.reply({"code": "0409", "msg": "dup", "data": None}),
            s.reply(ok({"videos": [], "current_page": "1", "page_size": "1", "total_count": "0"})),
        ),
        "delete_videos",
        ([VIDEO],),
    ),
    "0409 on delete, the listing fails": (
        lambda s: (
            s.reply({"code": "0409", "msg": "dup", "data": None}),
            s.reply({"code": "0401", "msg": "bad key", "data": None}),
        ),
        "delete_videos",
        ([VIDEO],),
    ),
    "0409 on the second delete batch, none left": (
        lambda s: (
            s.reply(ok(None)),
            s.reply({"code": "0409", "msg": "dup", "data": None}),
            s.reply(ok({"videos": [], "current_page": "1", "page_size": "1", "total_count": "0"})),
        ),
        "delete_videos",
        ([f"VI{n}" for n in range(101)],),
    ),
    "get_video: data null": (lambda s: s.reply(ok(None)), "get_video", (VIDEO,)),
    "captions: 404, then the older path answers": (
        lambda s: (
            s.reply(b"", status=404),
            s.reply(ok({"video_no": VIDEO, "transcriptions": [{"index": 0, "content": "a cat"}]})),
        ),
        "get_video_caption",
        (VIDEO,),
    ),
    "captions: 404 on both paths": (
        lambda s: (s.reply(b"", status=404), s.reply(b"", status=404)),
        "get_video_caption",
        (VIDEO,),
    ),
    "audio: 404, no older path": (lambda s: s.reply(b"", status=404), "get_audio_transcription", (VIDEO,)),
    "presigned URL echoed in msg": (
        lambda s: s.reply({"code": "0001", "msg": f"bad url {PRESIGNED}", "data": None}),
        "upload_video_from_url",
        (PRESIGNED,),
    ),
    "presigned URL echoed in an HTML 200": (
        lambda s: s.reply(f"<html>{PRESIGNED}</html>".encode(), headers={"Content-Type": "text/html"}),
        "upload_video_from_url",
        (PRESIGNED,),
    ),
    "download: envelope with 200": (lambda s: s.reply(ok(None)), "download", ()),
    "download: 206": (
        lambda s: s.reply(MP4, status=206, headers={"Content-Range": f"bytes 0-9/99 {KEY}"}),
        "download",
        (),
    ),
    "download: 404 without code": (lambda s: s.reply(b"", status=404), "download", ()),
    "download: empty body": (lambda s: s.reply(b"", headers={"Content-Type": "video/mp4"}), "download", ()),
    "download: Content-Length disagrees": (lambda s: s.reply(MP4 * 10), "download", (50,)),
    "download: redirect loop": (_redirects("/serve/api/v1/download", 40), "download", ()),
}


def _outcome(error: BaseException | None, result: Any, server: Scripted) -> tuple[Any, ...]:
    paths = [request["path"] for request in server.requests]
    if error is None:
        return ("returned", result, paths, len(server.requests))
    return (
        type(error).__name__,
        str(error),
        getattr(error, "code", None),
        getattr(error, "http_status", None),
        getattr(error, "endpoint", None),
        paths,
        len(server.requests),
    )


def _settings(server: Scripted) -> dict[str, Any]:
    return {"base_url": server.v1, "v2_base_url": server.v2, "retry": RETRIES, "timeout": 10}


def _sync(script, method: str, args: tuple[Any, ...]) -> tuple[Any, ...]:
    server = Scripted()
    script(server)
    try:
        with MemoriesClient(KEY, **_settings(server)) as client:
            try:
                if method == "download":
                    with client.download_video(VIDEO) as response:
                        size = next(iter(args), None)
                        result: Any = sum(map(len, response.iter_chunks(expected_size=size)))
                else:
                    result = getattr(client, method)(*args)
            except Exception as exc:
                return _outcome(exc, None, server)
            return _outcome(None, result, server)
    finally:
        server.close()


def _async(script, method: str, args: tuple[Any, ...]) -> tuple[Any, ...]:
    server = Scripted()
    script(server)

    async def play() -> tuple[Any, ...]:
        async with AsyncMemoriesClient(KEY, **_settings(server)) as client:
            try:
                if method == "download":
                    async with client.download_video(VIDEO) as response:
                        result: Any = 0
                        async for chunk in response.iter_chunks(expected_size=next(iter(args), None)):
                            result += len(chunk)
                else:
                    result = await getattr(client, method)(*args)
            except Exception as exc:
                return _outcome(exc, None, server)
            return _outcome(None, result, server)

    try:
        # Its own loop in this thread: the scripted server's thread stays free to answer.
        return asyncio.run(play())
    finally:
        server.close()


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_both_clients_answer_the_same(name):
    script, method, args = SCENARIOS[name]
    sync, aio = _sync(script, method, args), _async(script, method, args)
    assert sync == aio
    assert KEY not in repr(sync)
    assert "presigned0secret0999" not in repr(sync)


@pytest.mark.parametrize(
    ("name", "requests_seen"),
    [
        ("redirect to a non-URL", 1),
        ("redirect to ftp", 1),
        ("redirect quoting the key", 1),
        # MAX_REDIRECTS followed, then refused; a server's answer, not retried.
        ("redirect loop", 11),
        ("download: redirect loop", 11),
    ],
)
def test_refused_redirects_are_response_errors_not_retried(name, requests_seen):
    script, method, args = SCENARIOS[name]
    outcome = _sync(script, method, args)
    assert outcome[0] == "MemoriesResponseError"
    assert outcome[3] == 302
    assert outcome[-1] == requests_seen


def _filenames(header: str) -> tuple[str | None, str | None]:
    """The file name each client reads from a download's ``Content-Disposition`` (sent as Latin-1:
    each character one byte on the wire)."""

    def scripted() -> Scripted:
        server = Scripted()
        server.reply(MP4, headers={"Content-Type": "video/mp4", "Content-Disposition": header})
        return server

    server = scripted()
    try:
        with (
            MemoriesClient(KEY, **_settings(server)) as client,
            client.download_video(VIDEO) as response,
        ):
            sync = response.filename
    finally:
        server.close()

    async def play(server: Scripted) -> str | None:
        async with (
            AsyncMemoriesClient(KEY, **_settings(server)) as client,
            client.download_video(VIDEO) as response,
        ):
            return response.filename

    server = scripted()
    try:
        aio = asyncio.run(play(server))
    finally:
        server.close()
    return sync, aio


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ('attachment; filename="\xffclip.mp4"', "\xffclip.mp4"),  # a byte that is not UTF-8
        ('attachment; filename="\xc3\xa9\xff.mp4"', "\xc3\xa9\xff.mp4"),  # UTF-8, then a stray byte
        ('attachment; filename="\xc3\xa9.mp4"', "\xe9.mp4"),  # raw UTF-8 is repaired by both
    ],
)
def test_both_clients_read_the_same_file_name_from_raw_header_bytes(header: str, expected: str) -> None:
    # aiohttp decoded the header as UTF-8 with surrogateescape: the async client named the file
    # '\udcffclip.mp4', a lone surrogate that no file name, log line or XCom can encode.
    sync, aio = _filenames(header)
    assert sync == aio == expected
    expected.encode("utf-8")
