"""No piece of the API key in anything the clients produce, against the emulator echoing requests.

The emulator's ``echo_requests`` mode makes 500, 401/0401 and 0429 answers quote the request,
``Authorization`` header included, as a debugging proxy or a careless server would. Over real
sockets, for both clients: the raised error (message, ``str``, ``repr``, ``args``) and every log
line (the retry warnings included) hold neither the key nor any 8 characters of it, nor its first
4+ characters at a cut.
"""

from __future__ import annotations

import json
import logging

import pytest
import requests
from leaks import error_leaks, leaks

from memories_provider.client import (
    AsyncMemoriesClient,
    MemoriesAuthError,
    MemoriesClient,
    MemoriesError,
    MemoriesRateLimitError,
    MemoriesServerError,
    RetryPolicy,
)
from memories_provider.client.protocol import ERROR_BODY_QUOTE

CANARY = "sk-canary-7Qx9Zr4Lm2Vb"
NO_RETRY = RetryPolicy(max_retries=0)
FAST = RetryPolicy(max_retries=4, initial_delay=0.01, max_delay=0.02, jitter=False, documented_limits=False)


@pytest.fixture
def emu(memories_emulator):
    memories_emulator.control.configure(api_keys=[CANARY], echo_requests=True)
    return memories_emulator


def sync_client(emu, retry=NO_RETRY, key=CANARY) -> MemoriesClient:
    return MemoriesClient(key, base_url=emu.v1_url, v2_base_url=emu.v2_url, timeout=10, retry=retry)


def async_client(emu, retry=NO_RETRY, key=CANARY) -> AsyncMemoriesClient:
    return AsyncMemoriesClient(key, base_url=emu.v1_url, v2_base_url=emu.v2_url, timeout=10, retry=retry)


def test_the_emulator_really_puts_the_key_across_the_cut(emu):
    # What the clients are up against: the raw body holds the key from character 190 on.
    emu.control.inject_fault("list_videos", "http_500", auth_at=190)
    resp = requests.post(f"{emu.v1_url}/list_videos", json={}, headers={"Authorization": CANARY}, timeout=10)
    assert resp.status_code == 500 and resp.text.index(CANARY) == 190
    assert resp.text[:ERROR_BODY_QUOTE].endswith("sk-canary-")  # a cut before redaction leaks this


def test_a_500_echoing_the_key_at_any_offset_around_the_cut_leaks_nothing(emu):
    # The first case, for every position of the key relative to the 200-character cut.
    with sync_client(emu) as client:
        for auth_at in range(ERROR_BODY_QUOTE - len(CANARY) - 2, ERROR_BODY_QUOTE + 2):
            emu.control.inject_fault("list_videos", "http_500", auth_at=auth_at)
            with pytest.raises(MemoriesServerError) as info:
                client.list_videos()
            assert "HTTP 500" in str(info.value)
            assert error_leaks(info.value, CANARY) == [], (auth_at, info.value.message)
    assert emu.control.count("list_videos") == len(CANARY) + 4


async def test_the_async_client_leaks_nothing_either(emu):
    async with async_client(emu) as client:
        for auth_at in (ERROR_BODY_QUOTE - 12, ERROR_BODY_QUOTE - 4, ERROR_BODY_QUOTE):
            emu.control.inject_fault("get_metadata", "http_500", auth_at=auth_at)
            with pytest.raises(MemoriesServerError) as info:
                await client.get_video("VI000000000000000001")
            assert error_leaks(info.value, CANARY) == [], (auth_at, info.value.message)


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_retry_warnings_never_quote_the_key(emu, caplog, kind):
    # The second case: the warning logged before each retry quotes the error.
    for fault, params in (
        ("http_500", {"auth_at": 191}),
        ("code_0429", {"retry_after": 0.01}),
        ("http_429", {"retry_after": 0.01, "auth_at": 496}),
        ("http_500", {}),
    ):
        emu.control.inject_fault("list_videos", fault, **params)
    caplog.set_level(logging.DEBUG)
    if kind == "sync":
        with sync_client(emu, FAST) as client:
            page = client.list_videos()
    else:
        async with async_client(emu, FAST) as aclient:
            page = await aclient.list_videos()
    assert page.videos == []
    warnings = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert len(warnings) == 4
    assert any("Authorization: ***" in r.getMessage() for r in warnings)  # the echo was there
    assert leaks(caplog.text, CANARY) == []
    assert all(leaks(r.getMessage(), CANARY) == [] for r in caplog.records)


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_401_0401_and_0429_echoes_are_redacted(emu, kind):
    async def call(client, method, *args):
        result = getattr(client, method)(*args)
        return await result if kind == "async" else result

    make = sync_client if kind == "sync" else async_client
    seen: list[MemoriesError] = []
    for key in (CANARY, "sk-wrong-canary-3Rt8Yp"):  # a refused key is echoed back as well (0401)
        client = make(emu, key=key)
        try:
            if key == CANARY:
                emu.control.inject_fault("list_unique_ids", "http_401", auth_at=40)
            with pytest.raises(MemoriesAuthError) as info:
                await call(client, "list_unique_ids")
            seen.append(info.value)
            emu.control.inject_fault("list_videos", "code_0429", retry_after=0.01)
            with pytest.raises((MemoriesRateLimitError, MemoriesAuthError)) as info:
                await call(client, "list_videos")
            seen.append(info.value)
            assert all(error_leaks(err, key) == [] for err in seen), [err.message for err in seen]
        finally:
            if kind == "async":
                await client.close()
            else:
                client.close()
    assert all("request was:" in err.message for err in seen)


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_download_errors_are_redacted(emu, kind):
    asset = emu.control.add_asset(b"bytes", "a.mp4", "video/mp4")
    emu.control.inject_fault("v2_download", "http_401", auth_at=60)
    emu.control.inject_fault("v2_download", "http_500", auth_at=ERROR_BODY_QUOTE - 7)
    errors = []
    for _ in range(2):
        if kind == "sync":
            with sync_client(emu) as client, pytest.raises(MemoriesError) as info:
                client.download_asset(asset["asset_id"])
        else:
            async with async_client(emu) as aclient:
                with pytest.raises(MemoriesError) as info:
                    async with aclient.download_asset(asset["asset_id"]):
                        pass
        errors.append(info.value)
    assert [type(e) for e in errors] == [MemoriesAuthError, type(errors[1])]
    assert isinstance(errors[1], MemoriesServerError)
    assert all(error_leaks(err, CANARY) == [] for err in errors), [e.message for e in errors]


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_an_error_quoting_the_key_upper_or_lower_cased_is_redacted(emu, kind):
    # A server (or a log pipeline in front of it) that changes the case of what it quotes: the
    # message the client raises must not carry the key in any case, nor a case-changed prefix at
    # its cut.
    folded = (CANARY.upper(), CANARY.lower(), CANARY.swapcase())
    msg = "bad key " + " / ".join(folded) + " end"
    emu.control.inject_fault("list_videos", "json_error", code="0001", msg=msg)
    emu.control.inject_fault("list_videos", "json_error", code="0001", msg="x" * 190 + CANARY.upper())
    errors = []
    for _ in range(2):
        if kind == "sync":
            with sync_client(emu) as client, pytest.raises(MemoriesError) as info:
                client.list_videos()
        else:
            async with async_client(emu) as aclient:
                with pytest.raises(MemoriesError) as info:
                    await aclient.list_videos()
        errors.append(info.value)
    assert errors[0].message.startswith("bad key *** / *** / *** end")
    for err in errors:
        texts = [str(err), repr(err), *map(str, err.args), err.message]
        assert [piece for text in texts for piece in leaks(text.lower(), CANARY.lower())] == [], err.message


def test_echo_mode_off_echoes_nothing(memories_emulator):
    memories_emulator.control.inject_fault("list_videos", "http_500")
    resp = requests.post(
        f"{memories_emulator.v1_url}/list_videos", json={}, headers={"Authorization": "x"}, timeout=10
    )
    assert resp.json()["error"] == "Internal Server Error"  # Spring-style, as without echo mode


async def test_a_file_name_or_type_echoing_the_key_is_redacted(emu):
    # Both end up in logs, XCom and the destination's name: texts from a response like any other.
    asset = emu.control.add_asset(b"bytes", f"clip-{CANARY}.mp4", f"video/mp4; note={CANARY}")
    with sync_client(emu) as client, client.download_asset(asset["asset_id"]) as resp:
        assert resp.filename == "clip-***.mp4" and resp.content_type == "video/mp4; note=***"
        assert b"".join(resp.iter_chunks()) == b"bytes"
    async with async_client(emu) as aclient, aclient.download_asset(asset["asset_id"]) as aresp:
        assert (aresp.filename, aresp.content_type) == ("clip-***.mp4", "video/mp4; note=***")


#: A presigned GET URL, as S3 makes them: its query is a credential for as long as it lives.
SIGNATURE = "5f2b8c9e0d4a7f1b3c6e9a2d5f8b1c4e7a0d3f6b9c2e5a8d1f4b7c0e3a6d9f2b"
CREDENTIAL = "AKIAEXAMPLE7QX9/20240101/us-east-1/s3/aws4_request"
PRESIGNED = (
    "https://bucket.s3.amazonaws.com/clip.mp4?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    f"&X-Amz-Credential={CREDENTIAL.replace('/', '%2F')}&X-Amz-Expires=3600"
    f"&X-Amz-SignedHeaders=host&X-Amz-Signature={SIGNATURE}"
)


def _url_quoting_service(codes: list[str]) -> type:
    """A memories.ai whose upload_url answers ``codes`` in turn, each error quoting the URL it was
    given both as sent and decoded (``could not fetch ...``), as a careless server would."""
    from urllib.parse import parse_qs

    from local_http import QuietHandler

    class Service(QuietHandler):
        def do_POST(self) -> None:
            form = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
            url = parse_qs(form)["url"][0]
            code = codes.pop(0) if codes else "0001"
            msg = f"url: could not fetch {url} (form was {form})"
            body = json.dumps({"code": code, "msg": msg, "data": None, "success": False, "failed": True})
            self.send_body(200, {"Content-Type": "application/json"}, body.encode())

    return Service


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_presigned_url_quoted_back_by_upload_url_is_redacted(kind, caplog):
    # The URL handed to upload_url carries a signature that opens the bucket's object to anyone
    # until it expires; a refusal quoting it must not put it into the task log, XCom or a trace.
    from local_http import LocalServer

    caplog.set_level(logging.WARNING, logger="memories_provider")
    fast = RetryPolicy(max_retries=1, initial_delay=0.01, jitter=False, documented_limits=False)
    with LocalServer(_url_quoting_service(["0429", "0001"])) as server:
        base = f"{server.url}/serve/api/v1"
        if kind == "sync":
            with (
                MemoriesClient(CANARY, base_url=base, retry=fast) as client,
                pytest.raises(MemoriesError) as info,
            ):
                client.upload_video_from_url(PRESIGNED)
        else:
            async with AsyncMemoriesClient(CANARY, base_url=base, retry=fast) as aclient:
                with pytest.raises(MemoriesError) as info:
                    await aclient.upload_video_from_url(PRESIGNED)
    assert "could not fetch https://bucket.s3.amazonaws.com/clip.mp4?***" in info.value.message
    secrets = (SIGNATURE, CREDENTIAL)
    assert error_leaks(info.value, *secrets) == [], info.value.message
    assert "retrying" in caplog.text  # the 0429's warning quoted the URL too
    assert leaks(caplog.text, *secrets) == []
