"""The key never travels into a transport error's chain, with servers that misbehave.

Both clients map the HTTP library's errors to their own (redacted) ones and chain the original as
``__cause__``; a traceback, a debugger or an error tracker shows that one too, ``args`` included.
Over real sockets: a server answering with a malformed response (aiohttp's error then carries the
request, ``Authorization`` header included), and one redirecting to a location that quotes the key
(following it would put the key in a URL: urllib3's DEBUG log, the library's error, the server's
access log).
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterator
from typing import Any

import pytest
from leaks import chain_leaks, leaks
from local_http import LocalServer, QuietHandler

from memories_provider.client import (
    AsyncMemoriesClient,
    MemoriesClient,
    MemoriesConnectionError,
    MemoriesError,
    MemoriesResponseError,
    RetryPolicy,
)

CANARY = "sk-canary-wire-3Vb7Nq1Xk"
NO_RETRY = RetryPolicy(max_retries=0)


async def _list_unique_ids(kind: str, url: str) -> Any:
    settings = {"base_url": f"{url}/serve/api/v1", "v2_base_url": f"{url}/serve/api/v2"}
    if kind == "sync":
        with MemoriesClient(CANARY, timeout=10, retry=NO_RETRY, **settings) as client:
            return client.list_unique_ids()
    async with AsyncMemoriesClient(CANARY, timeout=10, retry=NO_RETRY, **settings) as aclient:
        return await aclient.list_unique_ids()


class _Malformed(QuietHandler):
    """Answers every request with a status line no HTTP parser accepts."""

    def do_GET(self) -> None:
        self.close_connection = True
        self.wfile.write(b"GARBAGE\r\n\r\n")


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_malformed_answer_leaves_no_key_in_the_chained_library_error(kind: str) -> None:
    # aiohttp's ClientResponseError holds the request's headers (the key) in its request_info.
    with LocalServer(_Malformed) as server, pytest.raises(MemoriesConnectionError) as info:
        await _list_unique_ids(kind, server.url)
    assert info.value.__cause__ is not None  # the library's error is still there to debug with
    assert chain_leaks(info.value, CANARY) == []


class _EchoingStatusLine(QuietHandler):
    """Answers with a status line no HTTP parser accepts, quoting the request's key (a careless
    proxy's debugging answer): both libraries quote that line in their errors."""

    def do_GET(self) -> None:
        self.close_connection = True
        self.wfile.write(f"GARBAGE Authorization: {self.headers.get('Authorization')}\r\n\r\n".encode())


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_status_line_echoing_the_key_is_redacted_in_the_whole_chain(kind: str) -> None:
    with LocalServer(_EchoingStatusLine) as server, pytest.raises(MemoriesConnectionError) as info:
        await _list_unique_ids(kind, server.url)
    assert "GARBAGE Authorization: ***" in str(info.value)
    # What a traceback prints: every chained error's text (http.client's BadStatusLine, aiohttp's
    # parser error, as raised).
    assert leaks("".join(traceback.format_exception(info.value)), CANARY) == []
    assert chain_leaks(info.value, CANARY) == []


class _EchoingHeaderLine(QuietHandler):
    """Answers 200 with a header line that is not one (``Authorization sk-...``, no colon): urllib3
    logs a warning quoting the lines it could not parse."""

    def do_GET(self) -> None:
        self.close_connection = True
        echo = f"Authorization {self.headers.get('Authorization')}"
        body = b'{"code": "0000", "msg": "success", "data": ["default"]}'
        head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{echo}\r\nContent-Length: {len(body)}"
        self.wfile.write(head.encode() + b"\r\n\r\n" + body)


def test_urllib3s_warning_about_a_header_line_echoing_the_key_is_redacted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    with LocalServer(_EchoingHeaderLine) as server:
        settings = {"base_url": f"{server.url}/serve/api/v1", "v2_base_url": f"{server.url}/serve/api/v2"}
        with MemoriesClient(CANARY, timeout=10, retry=NO_RETRY, **settings) as client:
            assert client.list_unique_ids() == ["default"]
    assert "Failed to parse headers" in caplog.text  # urllib3 still says so
    assert leaks(caplog.text, CANARY) == []


def _redirecting(location: str) -> type[QuietHandler]:
    """A handler redirecting (302) to ``location`` with ``{key}`` replaced by the request's key;
    it records every path it is asked for."""

    class Redirect(QuietHandler):
        paths: list[str] = []

        def do_GET(self) -> None:
            self.paths.append(self.path)
            target = location.format(key=self.headers.get("Authorization", ""))
            self.send_body(302, {"Location": target}, b"")

    return Redirect


LOCATIONS = {
    "same origin, raw": "/serve/api/v1/login?echo={key}",
    "same origin, in the path": "/{key}/list_unique_ids",
    "another origin": "http://127.0.0.1:9/x?token={key}",
    # Every byte percent-encoded, in lower-case hex: what no list of encoded forms foresees.
    "URL-encoded": "/serve/api/v1/x?echo=" + "".join(f"%{b:02x}" for b in CANARY.encode()),
}


@pytest.fixture(params=list(LOCATIONS))
def redirect(request: pytest.FixtureRequest) -> Iterator[tuple[LocalServer, type[QuietHandler]]]:
    handler = _redirecting(LOCATIONS[request.param])
    with LocalServer(handler) as server:
        yield server, handler


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_redirect_to_a_location_quoting_the_key_is_not_followed(
    redirect: tuple[LocalServer, Any], kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # urllib3 logs every request line it sends
    server, handler = redirect
    with pytest.raises(MemoriesResponseError, match="HTTP 302") as info:
        await _list_unique_ids(kind, server.url)
    assert handler.paths == ["/serve/api/v1/list_unique_ids"]  # the key never went into a URL
    assert chain_leaks(info.value, CANARY) == []
    assert leaks(caplog.text, CANARY) == []


class _MovedOnce(QuietHandler):
    """Redirects ``list_unique_ids`` to another path (no key in it), which answers."""

    def do_GET(self) -> None:
        if self.path == "/serve/api/v1/list_unique_ids":
            self.send_body(302, {"Location": "/serve/api/v1/moved/list_unique_ids"}, b"")
        else:
            body = b'{"code": "0000", "msg": "success", "data": ["default"]}'
            self.send_body(200, {"Content-Type": "application/json"}, body)


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_redirect_that_quotes_no_key_is_still_followed(kind: str) -> None:
    with LocalServer(_MovedOnce) as server:
        assert await _list_unique_ids(kind, server.url) == ["default"]


class _BrokenLocation(QuietHandler):
    """Redirects to a location that is not a URL."""

    def do_GET(self) -> None:
        self.send_body(302, {"Location": "http://[::1/x"}, b"")


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_redirect_to_a_location_that_is_no_url_is_the_clients_error(kind: str) -> None:
    # The sync client let urllib's bare "ValueError: Invalid IPv6 URL" out of list_unique_ids: not a
    # MemoriesError, and a ValueError, which the operators read as the caller's bad argument.
    with LocalServer(_BrokenLocation) as server, pytest.raises(MemoriesError, match=r"HTTP 302|redirect"):
        await _list_unique_ids(kind, server.url)


def test_the_urllib3_log_filter_survives_a_client_made_in_another_thread_meanwhile() -> None:
    # The filter looks at every live client's redactor (a WeakSet). Another thread making a client
    # while urllib3 logs in this one changes that set under the look: "RuntimeError: Set changed
    # size during iteration" came out of urllib3's logging call, i.e. out of the HTTP request it
    # was making. The interleaving is forced, not hoped for: a tracer in this thread lets the
    # other thread make its client at the first step of the look, and waits for it.
    import _weakrefset
    import linecache
    import sys
    import threading

    from memories_provider.client import sync

    look = _weakrefset.WeakSet.__iter__.__code__
    made: list[MemoriesClient] = []
    fired: list[bool] = []

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        if frame.f_code is not look:
            return None
        if (
            event == "line"
            and not fired
            and "itemref()" in linecache.getline(look.co_filename, frame.f_lineno)
        ):
            fired.append(True)
            other = threading.Thread(target=lambda: made.append(MemoriesClient("sk-other-" + "b" * 24)))
            other.start()
            other.join()
        return tracer

    record = logging.LogRecord(
        "urllib3.connectionpool", logging.WARNING, __file__, 1, "pool is full", None, None
    )
    with MemoriesClient(CANARY, retry=NO_RETRY):  # at least one live client
        previous = sys.gettrace()
        sys.settrace(tracer)
        try:
            kept = sync._URLLIB3_REDACTION.filter(record)
        finally:
            sys.settrace(previous)
    for client in made:
        client.close()
    assert fired and made  # the other thread did make its client in the middle of the look
    assert kept is True and record.getMessage() == "pool is full"


def test_http_clients_wire_dump_never_prints_the_key(
    memories_emulator: Any, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    # http.client's own wire dump, switched on as the requests docs' recipe does it, prints each
    # request and answer to stdout (no logger, so no masker): the key sent in Authorization, and
    # echoed back in a 500's body. The sync client's connections keep the dump off; the library's
    # other connections still print theirs.
    import http.client

    import requests

    emu = memories_emulator
    emu.control.configure(api_keys=[CANARY], echo_requests=True)
    emu.control.inject_fault("list_videos", "http_500")
    monkeypatch.setattr(http.client.HTTPConnection, "debuglevel", 1)
    with MemoriesClient(
        CANARY, base_url=emu.v1_url, v2_base_url=emu.v2_url, timeout=10, retry=NO_RETRY
    ) as client:
        with pytest.raises(MemoriesError):
            client.list_videos()
        assert client.list_unique_ids() == []
    requests.get(f"{emu.url}/_emulator/health", headers={"X-Probe": "wire-dump-on"}, timeout=10)
    out, err = capfd.readouterr()
    assert "wire-dump-on" in out  # the dump itself is on: the probe's own request was printed
    assert leaks(out + err, CANARY) == []


SIGNATURE = "fe3c0a7d9b1e4f2a8c6d5b4a3f2e1d0c9b8a7f6e5d4c3b2a1f0e9d8c7b6a5f4e"


class _PresignedStorage(QuietHandler):
    """A storage server answering any GET with a small video."""

    def do_GET(self) -> None:
        self.send_body(200, {"Content-Type": "video/mp4"}, b"\x00\x00\x00\x18ftypmp42" + bytes(64))


def test_a_download_redirected_to_a_presigned_url_logs_no_signature(caplog: pytest.LogCaptureFixture) -> None:
    # The service may answer a download with a redirect to its storage, signed in the query: a
    # bearer credential for the video while it lasts. urllib3 logs each request line at DEBUG.
    caplog.set_level(logging.DEBUG, logger="urllib3")
    with LocalServer(_PresignedStorage) as storage:
        target = f"{storage.url}/v.mp4?X-Amz-Expires=300&X-Amz-Signature={SIGNATURE}&sig={SIGNATURE[::-1]}"
        with LocalServer(_redirecting(target)) as api:
            settings = {"base_url": f"{api.url}/serve/api/v1", "v2_base_url": f"{api.url}/serve/api/v2"}
            with (
                MemoriesClient(CANARY, timeout=10, retry=NO_RETRY, **settings) as client,
                client.download_asset("re_1") as response,
            ):
                assert b"".join(response.iter_chunks()).startswith(b"\x00\x00\x00\x18ftyp")
    assert '"GET /v.mp4?X-Amz-Expires=300&X-Amz-Signature=***&sig=*** HTTP/1.1" 200' in caplog.text
    assert leaks(caplog.text, SIGNATURE, SIGNATURE[::-1]) == []
