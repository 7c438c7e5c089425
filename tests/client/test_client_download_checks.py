"""Download responses are judged by their body, in one place (``protocol``) for both clients.

Pure checks first (the sniffer, the size rules, id validation), then the sync and the async
client against the emulator's bad-body faults over real sockets.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from memories_provider.client import (
    MemoriesClient,
    MemoriesConnectionError,
    MemoriesIncompleteBodyError,
    MemoriesInsufficientCreditsError,
    MemoriesInvalidRequestError,
    MemoriesNotFoundError,
    MemoriesResponseError,
    MemoriesServerError,
    RetryPolicy,
    protocol,
)
from memories_provider.redaction import Redactor

MP4 = b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000)
# Not a blank, "{", "<" or a BOM first: the sniffer judges it on its first bytes, whatever the rest.
FILE_1000 = b"\x00" + os.urandom(999)


def judge(body: bytes, content_type: str | None = "application/octet-stream", *, piece: int = 0) -> Any:
    """Feed ``body`` (in ``piece``-byte pieces, or whole) to a sniffer as a client would."""
    sniffer = protocol.BodySniffer()
    pieces = [body[i : i + piece] for i in range(0, len(body), piece)] if piece else [body]
    fed = 0
    for part in pieces:
        if not sniffer.needs_more:
            break
        sniffer.feed(part)
        fed += len(part)
    if sniffer.needs_more:
        sniffer.feed(b"")  # the body ended
    headers = {"Content-Type": content_type} if content_type else {}
    return sniffer.error(200, headers, endpoint="download"), sniffer.prefix, fed


def envelope(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


@pytest.mark.parametrize("piece", [0, 1, 7])
@pytest.mark.parametrize(
    ("body", "error"),
    [
        (envelope(code="0001", msg="video not found", data=None), MemoriesNotFoundError),
        (envelope(code="0001", message="Resource does not exist"), MemoriesNotFoundError),
        (envelope(code=400, msg="Asset not found", data=None), MemoriesNotFoundError),
        (
            b"\xef\xbb\xbf \n" + envelope(code="0402", msg="Insufficient balance"),
            MemoriesInsufficientCreditsError,
        ),
        (envelope(timestamp=1, path="/x", status=500, error="Internal Server Error"), MemoriesResponseError),
        (envelope(code="0000", msg="success", data={"url": "x"}), MemoriesResponseError),
        (b"<!DOCTYPE html><html><body>Sign in</body></html>", MemoriesResponseError),
        (b"\n  <html lang=en><head><title>Login</title>", MemoriesResponseError),
        (b'<?xml version="1.0"?><Error><Code>AccessDenied</Code></Error>', MemoriesResponseError),
        (b"<!-- proxy --><body>blocked</body>", MemoriesResponseError),
        (b"", MemoriesResponseError),
    ],
)
def test_error_documents_are_errors_whatever_the_content_type(body: bytes, error: type, piece: int) -> None:
    found, prefix, _ = judge(body, "application/octet-stream", piece=piece)
    assert isinstance(found, error), found
    assert prefix == body


@pytest.mark.parametrize(
    "body",
    [
        MP4,
        b"RIFF\x24\x00\x00\x00AVI LIST" + os.urandom(100),
        b'{"frames": [1, 2, 3], "note": "a JSON file, not an envelope"}',
        b"{" + os.urandom(100),  # starts like JSON, is not
        b"plain text file",
    ],
)
def test_files_pass(body: bytes) -> None:
    found, prefix, _ = judge(body, "application/octet-stream", piece=3)
    assert found is None
    assert body.startswith(prefix)


def test_html_content_type_alone_is_an_error() -> None:
    found, _, _ = judge(b"Forbidden", "text/html; charset=utf-8")
    assert isinstance(found, MemoriesResponseError) and "HTML" in str(found)


def test_a_video_is_judged_on_its_first_bytes() -> None:
    _, prefix, fed = judge(MP4, piece=16)
    assert fed == 16 and prefix == MP4[:16]  # nothing more is held back from the writer


def test_memory_stays_bounded_for_a_huge_json_looking_body() -> None:
    body = b"[" * 0 + b'{"data": "' + b"x" * (10 * protocol.MAX_ERROR_BYTES)
    found, prefix, fed = judge(body, piece=64 * 1024)
    assert found is None  # never parsed as an envelope: it is a file
    assert fed <= protocol.MAX_ERROR_BYTES + 64 * 1024 and len(prefix) == fed


def test_expected_body_size() -> None:
    chunked = {"Transfer-Encoding": "chunked"}
    assert protocol.expected_body_size({}, 10, None, status=200, endpoint="d") == 10
    assert protocol.expected_body_size({}, None, 10, status=200, endpoint="d") == 10
    assert protocol.expected_body_size(chunked, None, None, status=200, endpoint="d") is None
    with pytest.raises(MemoriesResponseError, match=r"Content-Length 10 disagrees .* \(11 bytes\)"):
        protocol.expected_body_size({}, 10, 11, status=200, endpoint="d")
    with pytest.raises(MemoriesResponseError, match="neither Content-Length nor chunked"):
        protocol.expected_body_size({}, None, None, status=200, endpoint="d")


def test_body_size_errors_count_exactly() -> None:
    short = protocol.body_size_error(500, 1000, status=200, endpoint="d")
    assert isinstance(short, MemoriesIncompleteBodyError) and "after 500 of 1000 bytes" in str(short)
    assert isinstance(protocol.body_size_error(1001, 1000, status=200, endpoint="d"), MemoriesResponseError)
    assert protocol.body_size_error(1000, 1000, status=200, endpoint="d") is None
    assert protocol.body_size_error(7, None, status=200, endpoint="d") is None
    broken = protocol.broken_body_error(300, None, ConnectionResetError(), status=200, endpoint="d")
    assert "broke off after 300 of unknown bytes: ConnectionResetError" in str(broken)


@pytest.mark.parametrize(
    ("name", "value", "match"),
    [
        ("asset_id", ".", "relative path segment"),
        ("asset_id", "..", "relative path segment"),
        ("asset_id", "", "empty"),
        ("asset_id", "  ", "empty"),
        ("video_no", "VI1/../VI2", "'/'"),
        ("video_no", "VI1\\x", "'/'"),
        ("bucket", "a/b", "'/'"),
        ("video_no", "VI1\n", "control"),
    ],
)
def test_ids_must_be_one_safe_path_segment(name: str, value: str, match: str) -> None:
    with pytest.raises(ValueError, match=f"`{name}`.*{match}"):
        protocol.check_id(name, value)


@pytest.mark.parametrize("blob", ["", "/a.mp4", "a/", "a//b", "a/./b", "a/../b", "..", "a\\b"])
def test_blob_segments_are_checked(blob: str) -> None:
    with pytest.raises(ValueError, match="`blob`"):
        protocol.check_blob(blob)
    with pytest.raises(ValueError, match="`blob`"):
        protocol.download_blob_request("http://h/v1", "http://h/v2", "b", blob)


def test_builders_refuse_bad_ids_before_any_request() -> None:
    with pytest.raises(ValueError, match="`asset_id`"):
        protocol.download_asset_request("http://h/v2", "..")
    with pytest.raises(ValueError, match="`video_no`"):
        protocol.download_video_request("http://h/v1", ".", None)
    with pytest.raises(ValueError, match="`bucket`"):
        protocol.download_blob_request("http://h/v1", "http://h/v2", "..", "x.mp4")
    assert protocol.check_blob("videos/re_1/clip.mp4") == "videos/re_1/clip.mp4"


# ---------------------------------------------------------------------------- both clients, real sockets

FAULTS = [
    (
        "json_error",
        {"code": 400, "msg": "Asset not found", "content_type": "text/plain"},
        MemoriesNotFoundError,
    ),
    ("json_error", {"code": 400, "msg": "Asset not found", "content_type": ""}, MemoriesNotFoundError),
    ("json_error", {"code": 400, "msg": "Asset not found", "msg_key": "message"}, MemoriesNotFoundError),
    ("html_page", {"content_type": "application/octet-stream"}, MemoriesResponseError),
    ("empty_body", {}, MemoriesResponseError),
]


@pytest.fixture
def asset(memories_emulator: Any) -> dict[str, Any]:
    return memories_emulator.control.add_asset(MP4, "a.mp4", content_type="video/mp4")


@pytest.mark.parametrize(("kind", "params", "error"), FAULTS)
def test_sync_client_refuses_bad_bodies(
    client: Any, memories_emulator: Any, asset: dict[str, Any], kind: str, params: dict, error: type
) -> None:
    memories_emulator.control.inject_fault("v2_download", kind, **params)
    with pytest.raises(error):
        client.download_asset(asset["asset_id"])
    assert memories_emulator.control.count("v2_download") == 1  # not retried: the same answer again


@pytest.mark.parametrize(("kind", "params", "error"), FAULTS)
async def test_async_client_refuses_bad_bodies(
    aclient: Any, memories_emulator: Any, asset: dict[str, Any], kind: str, params: dict, error: type
) -> None:
    memories_emulator.control.inject_fault("v2_download", kind, **params)
    with pytest.raises(error):
        async with aclient.download_asset(asset["asset_id"]):
            pass
    assert memories_emulator.control.count("v2_download") == 1


def test_sync_counts_received_bytes_on_a_drop(client: Any, memories_emulator: Any) -> None:
    data = FILE_1000  # judged on its first read: the drop comes while the caller streams
    asset = memories_emulator.control.add_asset(data, "a.mp4", content_type="video/mp4")
    memories_emulator.control.inject_fault("v2_download", "drop_mid_body")
    with client.download_asset(asset["asset_id"]) as resp, pytest.raises(MemoriesIncompleteBodyError) as info:
        b"".join(resp.iter_chunks(1024 * 1024))
    assert "after 500 of 1000 bytes" in str(info.value)


async def test_async_counts_received_bytes_on_a_drop(aclient: Any, memories_emulator: Any) -> None:
    data = FILE_1000
    asset = memories_emulator.control.add_asset(data, "a.mp4", content_type="video/mp4")
    memories_emulator.control.inject_fault("v2_download", "drop_mid_body")
    with pytest.raises(MemoriesIncompleteBodyError, match="after 500 of 1000 bytes"):
        async with aclient.download_asset(asset["asset_id"]) as resp:
            [chunk async for chunk in resp.iter_chunks(1024 * 1024)]


# Bodies the sniffer must read on to judge: a drop at byte 500 comes before the caller has any of it.
SNIFFED_ON = [
    b"{" + FILE_1000[1:],
    b"<" + FILE_1000[1:],
    b" \r\n{" + FILE_1000[4:],
    b"\xef\xbb\xbf<" + FILE_1000[4:],
]


@pytest.mark.parametrize("data", SNIFFED_ON, ids=["brace", "angle", "blanks-brace", "bom-angle"])
def test_sync_drop_while_the_first_bytes_are_judged_is_retried(
    client: Any, memories_emulator: Any, data: bytes
) -> None:
    asset = memories_emulator.control.add_asset(data, "a.mp4", content_type="video/mp4")
    memories_emulator.control.inject_fault("v2_download", "drop_mid_body", count=1)
    with client.download_asset(asset["asset_id"]) as resp:
        assert b"".join(resp.iter_chunks(1024 * 1024)) == data
    assert memories_emulator.control.count("v2_download") == 2


@pytest.mark.parametrize("data", SNIFFED_ON, ids=["brace", "angle", "blanks-brace", "bom-angle"])
async def test_async_drop_while_the_first_bytes_are_judged_is_retried(
    aclient: Any, memories_emulator: Any, data: bytes
) -> None:
    asset = memories_emulator.control.add_asset(data, "a.mp4", content_type="video/mp4")
    memories_emulator.control.inject_fault("v2_download", "drop_mid_body", count=1)
    async with aclient.download_asset(asset["asset_id"]) as resp:
        assert b"".join([chunk async for chunk in resp.iter_chunks(1024 * 1024)]) == data
    assert memories_emulator.control.count("v2_download") == 2


def test_a_drop_while_the_first_bytes_are_judged_counts_them_once_retries_are_spent(
    memories_emulator: Any,
) -> None:
    asset = memories_emulator.control.add_asset(SNIFFED_ON[0], "a.mp4", content_type="video/mp4")
    memories_emulator.control.inject_fault("v2_download", "drop_mid_body")
    with (
        MemoriesClient(
            memories_emulator.api_key,
            base_url=memories_emulator.v1_url,
            v2_base_url=memories_emulator.v2_url,
            retry=RetryPolicy(max_retries=0),
        ) as client,
        pytest.raises(MemoriesConnectionError) as info,
    ):
        client.download_asset(asset["asset_id"])
    assert not isinstance(info.value, MemoriesIncompleteBodyError)  # nothing reached the caller
    assert "after 500 of 1000 bytes, while its first bytes were checked" in str(info.value)
    assert info.value.http_status == 200


def test_sync_unframed_body_is_measured_against_the_known_size(client: Any, memories_emulator: Any) -> None:
    data = FILE_1000
    asset = memories_emulator.control.add_asset(data, "a.mp4", content_type="video/mp4")
    memories_emulator.control.inject_fault("v2_download", "cut_unframed", after=300)
    with client.download_asset(asset["asset_id"]) as resp, pytest.raises(MemoriesIncompleteBodyError) as info:
        b"".join(resp.iter_chunks(expected_size=1000))
    assert "ended after 300 of 1000 bytes" in str(info.value)
    memories_emulator.control.inject_fault("v2_download", "cut_unframed", after=1000)
    with client.download_asset(asset["asset_id"]) as resp:
        assert b"".join(resp.iter_chunks(expected_size=1000)) == data
        # Without a size there is nothing to measure a close-delimited body against.
    memories_emulator.control.inject_fault("v2_download", "cut_unframed", after=1000)
    with client.download_asset(asset["asset_id"]) as resp, pytest.raises(MemoriesResponseError):
        b"".join(resp.iter_chunks())


async def test_async_unframed_body_is_measured_against_the_known_size(
    aclient: Any, memories_emulator: Any
) -> None:
    data = FILE_1000
    asset = memories_emulator.control.add_asset(data, "a.mp4", content_type="video/mp4")
    memories_emulator.control.inject_fault("v2_download", "cut_unframed", after=300)
    with pytest.raises(MemoriesIncompleteBodyError, match="ended after 300 of 1000 bytes"):
        async with aclient.download_asset(asset["asset_id"]) as resp:
            [chunk async for chunk in resp.iter_chunks(expected_size=1000)]


def test_a_known_size_that_disagrees_with_content_length_fails_before_any_byte(
    client: Any, memories_emulator: Any, asset: dict[str, Any]
) -> None:
    with (
        client.download_asset(asset["asset_id"]) as resp,
        pytest.raises(MemoriesResponseError, match="disagrees"),
    ):
        next(iter(resp.iter_chunks(expected_size=len(MP4) + 1)))


def test_chunked_and_small_bodies_still_stream_whole(client: Any, memories_emulator: Any) -> None:
    memories_emulator.control.configure(chunked_downloads=True)
    for data in (b"x", MP4, os.urandom(3 * 1024 * 1024 + 1)):
        asset = memories_emulator.control.add_asset(data, "a.mp4", content_type="video/mp4")
        with client.download_asset(asset["asset_id"]) as resp:
            chunks = list(resp.iter_chunks(1024 * 1024))
        assert b"".join(chunks) == data
        assert all(len(chunk) <= 1024 * 1024 for chunk in chunks)


def test_server_errors_are_still_retried(client: Any, memories_emulator: Any, asset: dict[str, Any]) -> None:
    memories_emulator.control.inject_fault("v2_download", "http_503")
    with client.download_asset(asset["asset_id"]) as resp:
        assert b"".join(resp.iter_chunks()) == MP4
    assert memories_emulator.control.count("v2_download") == 2
    assert issubclass(MemoriesResponseError, MemoriesServerError)


def test_a_blank_body_is_empty() -> None:
    found, _, _ = judge(b" \r\n\t ", "video/mp4")
    assert isinstance(found, MemoriesResponseError) and "empty or blank" in str(found)


def test_a_server_echoing_the_request_is_never_the_file() -> None:
    echoed = b"POST /serve/api/v1/download HTTP/1.1\r\nAuthorization: sk-mavi-secret-key\r\n\r\n"
    sniffer = protocol.BodySniffer()
    sniffer.feed(echoed)
    error = sniffer.error(
        200, {"Content-Type": "text/plain"}, endpoint="download", redactor=Redactor(["sk-mavi-secret-key"])
    )
    assert isinstance(error, MemoriesResponseError) and "echoed the request" in str(error)
    assert "sk-mavi" not in str(error)
    assert sniffer.error(200, {}, endpoint="download", redactor=Redactor(["another-key"])) is None


def test_a_dripping_json_looking_body_is_parsed_only_when_it_may_be_complete(monkeypatch: Any) -> None:
    parses = []
    real = protocol._load_json
    monkeypatch.setattr(protocol, "_load_json", lambda body: parses.append(len(body)) or real(body))
    body = envelope(code="0001", msg="x" * 5000)
    found, _, fed = judge(body, piece=1)
    assert isinstance(found, MemoriesInvalidRequestError) and found.code == "0001"
    assert fed == len(body)
    assert len(parses) < 10  # not one parse per byte
