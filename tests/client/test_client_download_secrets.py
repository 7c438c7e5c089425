"""A download that is not the file never shows the key: issue 13's body checks through issue 14's rule.

The sniffer's verdicts (an envelope under any Content-Type, an HTML page, a body echoing the
request) and a body that breaks off all quote text from the response or the transport: each is
redacted with the client's :class:`~memories_provider.redaction.Redactor`, then cut. Pure checks of
the judge first, then both clients over real sockets: the emulator echoing requests (``0429``
answers with HTTP 200 on the download endpoints, the key placed across the cuts with ``auth_at``),
its ``json_error`` fault under other Content-Types, and a small server answering 200 with an echo.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from leaks import error_leaks, leaks
from local_http import LocalServer, echo_handler

from memories_provider.client import (
    AsyncMemoriesClient,
    MemoriesClient,
    MemoriesError,
    MemoriesInvalidRequestError,
    MemoriesRateLimitError,
    MemoriesResponseError,
    RetryPolicy,
    protocol,
)
from memories_provider.client.protocol import ERROR_BODY_QUOTE, ERROR_MESSAGE_QUOTE
from memories_provider.redaction import Redactor

CANARY = "sk-canary-dl-8Jw3Tq6Pz1"
REDACTOR = Redactor([CANARY])
NO_RETRY = RetryPolicy(max_retries=0)
FAST = RetryPolicy(max_retries=2, initial_delay=0.01, max_delay=0.02, jitter=False, documented_limits=False)
VIDEO = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8
CONTENT_TYPES = ["application/octet-stream", "video/mp4", "text/plain", "text/html", "application/json", None]


def judge(body: bytes, content_type: str | None) -> MemoriesError | None:
    sniffer = protocol.BodySniffer()
    sniffer.feed(body)
    if sniffer.needs_more:
        sniffer.feed(b"")
    headers = {"Content-Type": content_type} if content_type else {}
    return sniffer.error(200, headers, endpoint="v2_download", redactor=REDACTOR)


def _echo(at: int, key: str = CANARY) -> bytes:
    head = "GET /serve/api/v2/re_1/download HTTP/1.1\r\nAuthorization: "
    return ("." * max(0, at - len(head)) + head + key + "\r\nHost: x\r\n").encode()


ECHOES = {
    "raw key": _echo(0),
    "key across the quote's cut": _echo(ERROR_BODY_QUOTE - 6),
    "key far in": _echo(900),
    "8 characters of it": _echo(40, CANARY[5:13]),
    "URL-encoded": f"GET /x?api_key={CANARY.replace('-', '%2D')} HTTP/1.1".encode(),
    "in base64 (Basic auth)": b"Authorization: Basic " + base64.b64encode(f"me:{CANARY}".encode()),
    "JSON-escaped in a non-envelope": json.dumps({"headers": {"Authorization": CANARY}}).encode(),
    "in an HTML page": (
        b"<!DOCTYPE html><html><body><pre>" + b"." * 150 + f"Authorization: {CANARY}</pre>".encode()
    ),
}


@pytest.mark.parametrize("content_type", CONTENT_TYPES)
@pytest.mark.parametrize("name", list(ECHOES))
def test_a_body_holding_the_key_is_never_the_file_and_never_quoted(
    name: str, content_type: str | None
) -> None:
    error = judge(ECHOES[name], content_type)
    assert isinstance(error, MemoriesResponseError) and "echoed the request" in str(error), error
    assert error_leaks(error, CANARY) == []


ENVELOPES = {
    "0429, key across the message's cut": (
        json.dumps({"code": "0429", "msg": "m" * (ERROR_MESSAGE_QUOTE - 6) + CANARY, "data": None}),
        MemoriesRateLimitError,
    ),
    "0001 with 'message'": (
        json.dumps({"code": "0001", "message": f"bad key {CANARY}"}),
        MemoriesInvalidRequestError,
    ),
    "the key as the code": (json.dumps({"code": CANARY, "msg": "x"}), MemoriesResponseError),
    "Spring error": (json.dumps({"status": 500, "error": f"Authorization: {CANARY}"}), MemoriesError),
}


@pytest.mark.parametrize("content_type", CONTENT_TYPES)
@pytest.mark.parametrize("name", list(ENVELOPES))
def test_an_envelope_echoing_the_key_keeps_its_type_and_is_redacted(
    name: str, content_type: str | None
) -> None:
    # The envelope is judged before the echo: an echoed 0429 is still a rate limit, so retried.
    body, kind = ENVELOPES[name]
    error = judge(body.encode(), content_type)
    assert isinstance(error, kind), error
    assert error_leaks(error, CANARY) == [], error.message if error else None


@pytest.mark.parametrize("size", range(4, 8))
def test_an_html_page_cut_on_the_start_of_the_key_quotes_no_prefix_of_it(size: int) -> None:
    # Fewer than 8 characters of the key: no echo, an HTML page, quoted, cut on the key's start.
    page = (
        b"<html><body>" + b"." * (ERROR_BODY_QUOTE - 12 - size) + CANARY[:size].encode() + b"</body></html>"
    )
    error = judge(page, "text/html")
    assert isinstance(error, MemoriesResponseError) and "HTML" in str(error)
    assert error_leaks(error, CANARY) == [], error.message


def test_a_content_type_echoing_the_key_is_redacted_in_the_html_verdict() -> None:
    error = judge(b"<html><body>Sign in</body></html>", f"text/html; x={CANARY}")
    assert isinstance(error, MemoriesResponseError) and error_leaks(error, CANARY) == []


def test_a_broken_body_redacts_the_transport_text() -> None:
    cause = ConnectionError(f"reset while reading https://me:{CANARY}@host/x?key={CANARY}")
    error = protocol.broken_body_error(500, 1000, cause, status=200, endpoint="download", redactor=REDACTOR)
    assert "500 of 1000 bytes" in str(error)
    assert error_leaks(error, CANARY) == []


def test_the_echo_check_is_the_redactors_own_reading() -> None:
    # One mechanism: what the redactor would hide is what makes a body an echo, and nothing else.
    assert REDACTOR.reveals(_echo(10)) and REDACTOR.reveals(CANARY[2:10])
    assert not REDACTOR.reveals(CANARY[:7]) and not REDACTOR.reveals(VIDEO)
    assert not REDACTOR.reveals("https://user:pw@host/x")  # URL credentials are not our key
    assert not Redactor().reveals(_echo(10))
    # A (strange) 3-character key would be found in any video by chance: only its longer forms count.
    assert not Redactor(["abc"]).reveals(b"\x00\x01abc\x02") and Redactor(["abc"]).redact("xabcx") == "x***x"


# --------------------------------------------------------------------------- over real sockets


@pytest.fixture
def emu(memories_emulator: Any) -> Any:
    memories_emulator.control.configure(api_keys=[CANARY], echo_requests=True)
    return memories_emulator


def _client(kind: str, v1: str, v2: str, retry: RetryPolicy) -> Any:
    cls = MemoriesClient if kind == "sync" else AsyncMemoriesClient
    return cls(CANARY, base_url=v1, v2_base_url=v2, timeout=10, retry=retry)


async def _download(kind: str, v1: str, v2: str, asset_id: str, retry: RetryPolicy = NO_RETRY) -> bytes:
    if kind == "sync":
        with _client(kind, v1, v2, retry) as client, client.download_asset(asset_id) as resp:
            return b"".join(resp.iter_chunks())
    async with _client(kind, v1, v2, retry) as aclient, aclient.download_asset(asset_id) as aresp:
        return b"".join([chunk async for chunk in aresp.iter_chunks()])


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_an_echoed_0429_on_a_download_is_a_rate_limit_that_shows_no_key(emu: Any, kind: str) -> None:
    asset = emu.control.add_asset(VIDEO, "clip.mp4", "video/mp4")
    offsets = [ERROR_MESSAGE_QUOTE - 10, ERROR_MESSAGE_QUOTE - 3, ERROR_MESSAGE_QUOTE + 1]
    for auth_at in offsets:
        emu.control.inject_fault("v2_download", "code_0429", auth_at=auth_at, retry_after=0.01)
        with pytest.raises(MemoriesRateLimitError) as info:
            await _download(kind, emu.v1_url, emu.v2_url, asset["asset_id"])
        assert "request was:" in info.value.message  # the echo was there, and was read
        assert error_leaks(info.value, CANARY) == [], (auth_at, info.value.message)
    assert emu.control.count("v2_download") == len(offsets)


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_an_echoed_0429_is_retried_and_its_warning_is_clean(emu: Any, kind: str, caplog: Any) -> None:
    caplog.set_level(logging.DEBUG)
    asset = emu.control.add_asset(VIDEO, "clip.mp4", "video/mp4")
    emu.control.inject_fault("v2_download", "code_0429", auth_at=ERROR_MESSAGE_QUOTE - 5, retry_after=0.01)
    assert await _download(kind, emu.v1_url, emu.v2_url, asset["asset_id"], FAST) == VIDEO
    assert emu.control.count("v2_download") == 2
    assert "retrying" in caplog.text and leaks(caplog.text, CANARY) == []


@pytest.mark.parametrize("content_type", ["application/octet-stream", "text/plain", ""])
@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_an_envelope_under_another_type_quoting_the_key_is_redacted(
    emu: Any, kind: str, content_type: str
) -> None:
    asset = emu.control.add_asset(VIDEO, "clip.mp4", "video/mp4")
    msg = f"Resource does not exist; Authorization: {CANARY}"
    emu.control.inject_fault(
        "v2_download", "json_error", content_type=content_type, msg=msg, msg_key="message"
    )
    with pytest.raises(MemoriesError) as info:
        await _download(kind, emu.v1_url, emu.v2_url, asset["asset_id"])
    assert "Authorization: ***" in info.value.message
    assert error_leaks(info.value, CANARY) == []


@pytest.fixture(params=[("video/mp4", False), ("text/html", True), ("application/octet-stream", True)])
def echo200(request: pytest.FixtureRequest) -> Iterator[LocalServer]:
    """A server answering HTTP 200 with the request (``content_type``, plain or as an HTML page)."""
    with LocalServer(echo_handler(*request.param)) as server:
        yield server


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_200_echo_is_refused_by_both_clients_without_quoting_it(
    echo200: LocalServer, kind: str
) -> None:
    with pytest.raises(MemoriesResponseError, match="echoed the request") as info:
        await _download(kind, echo200.url, echo200.url, "re_1")
    assert error_leaks(info.value, CANARY) == []
