"""Download faults whose body is not the file: what the emulator puts on the wire, byte for byte.

Read with a raw socket, so that nothing (requests, urllib3) adds or hides a header.
"""

from __future__ import annotations

import json
import socket
from typing import Any
from urllib.parse import urlsplit

import pytest

DATA = bytes(range(256)) * 40  # 10 240 bytes


def _raw_download(emu: Any, path: str) -> tuple[str, dict[str, str], bytes]:
    """GET ``path`` over a plain socket; read until the server closes. (status line, headers, body)."""
    host = urlsplit(emu.url)
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host.netloc}\r\nAuthorization: {emu.api_key}\r\n"
        "Accept-Encoding: identity\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection((host.hostname, host.port), timeout=30) as sock:
        sock.sendall(request.encode())
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


@pytest.fixture
def asset(memories_emulator: Any) -> dict[str, Any]:
    return memories_emulator.control.add_asset(DATA, "f.mp4", content_type="video/mp4")


def _path(asset: dict[str, Any]) -> str:
    return f"/serve/api/v2/{asset['asset_id']}/download"


@pytest.mark.parametrize("content_type", ["text/plain", "application/octet-stream", ""])
@pytest.mark.parametrize("msg_key", ["msg", "message"])
def test_json_error_under_any_content_type(
    memories_emulator: Any, asset: dict[str, Any], content_type: str, msg_key: str
) -> None:
    memories_emulator.control.inject_fault(
        "v2_download",
        "json_error",
        code=400,
        msg="Asset not found",
        content_type=content_type,
        msg_key=msg_key,
    )
    status, headers, body = _raw_download(memories_emulator, _path(asset))
    assert status == "HTTP/1.1 200 OK"
    assert headers.get("content-type") == (content_type or None)
    assert int(headers["content-length"]) == len(body)
    assert json.loads(body) == {
        "code": 400,
        msg_key: "Asset not found",
        "data": None,
        "success": False,
        "failed": True,
    }
    (entry,) = memories_emulator.control.request_log("v2_download")
    assert (entry["http_status"], entry["code"], entry["fault"]) == (200, 400, "json_error")


def test_html_page(memories_emulator: Any, asset: dict[str, Any]) -> None:
    memories_emulator.control.inject_fault("v2_download", "html_page")
    memories_emulator.control.inject_fault(
        "v2_download", "html_page", content_type="application/octet-stream"
    )
    status, headers, body = _raw_download(memories_emulator, _path(asset))
    assert status == "HTTP/1.1 200 OK" and headers["content-type"].startswith("text/html")
    assert body.startswith(b"<!DOCTYPE html>") and b"password" in body
    _, headers, again = _raw_download(memories_emulator, _path(asset))
    assert headers["content-type"] == "application/octet-stream" and again == body
    _, _, whole = _raw_download(memories_emulator, _path(asset))
    assert whole == DATA  # consumed: the next call is the file again


def test_empty_body_keeps_the_file_headers(memories_emulator: Any, asset: dict[str, Any]) -> None:
    memories_emulator.control.inject_fault("v2_download", "empty_body")
    status, headers, body = _raw_download(memories_emulator, _path(asset))
    assert status == "HTTP/1.1 200 OK"
    assert headers["content-type"] == "video/mp4" and 'filename="f.mp4"' in headers["content-disposition"]
    assert headers["content-length"] == "0" and body == b""


@pytest.mark.parametrize(("after", "expected"), [({"after": 300}, 300), ({}, len(DATA) // 2)])
def test_cut_unframed_has_no_length_and_no_chunking(
    memories_emulator: Any, asset: dict[str, Any], after: dict[str, int], expected: int
) -> None:
    memories_emulator.control.inject_fault("v2_download", "cut_unframed", **after)
    status, headers, body = _raw_download(memories_emulator, _path(asset))
    assert status == "HTTP/1.1 200 OK" and headers["content-type"] == "video/mp4"
    assert "content-length" not in headers and "transfer-encoding" not in headers
    assert headers["connection"] == "close"
    assert body == DATA[:expected]


def test_download_body_faults_only_on_downloads(memories_emulator: Any) -> None:
    with pytest.raises(ValueError, match="download"):
        memories_emulator.control.inject_fault("list_videos", "html_page")
    with pytest.raises(ValueError, match="msg_key"):
        memories_emulator.control.inject_fault("download", "json_error", msg_key="error")


def test_cut_of_a_failed_request_sends_its_error(memories_emulator: Any) -> None:
    memories_emulator.control.inject_fault("v2_download", "cut_unframed")
    status, _, body = _raw_download(memories_emulator, "/serve/api/v2/re_404/download")
    assert status.startswith("HTTP/1.1 400") and json.loads(body)["msg"] == "Asset not found"
