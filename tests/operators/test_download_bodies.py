"""A download body that is not the video is an error whatever its headers say, and nothing is written.

Each body comes from the emulator (real sockets) with HTTP 200: an API envelope under every
Content-Type (``msg`` or ``message``), an HTML login page, an empty body, a body cut after 300
bytes with neither Content-Length nor chunking. The task fails, the final name stays empty and
no temporary file is left, for a file and a folder destination.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from connections import point_memories_default_at
from downloads import run_download as run
from local_http import LocalServer, echo_handler

from memories_provider.client import (
    MemoriesError,
    MemoriesIncompleteBodyError,
    MemoriesInvalidRequestError,
    MemoriesResponseError,
)

VIDEO = b"\x00\x00\x00\x18ftypmp42" + os.urandom(1000 - 12)  # 1000 bytes


def everything_in(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture
def emu(memories_emulator: Any, set_memories_conn: Any) -> Any:
    set_memories_conn(max_retries=0)  # one request per test: each fault is seen exactly once
    return memories_emulator


@pytest.fixture(params=["video_no", "asset_id"])
def source(request: pytest.FixtureRequest, emu: Any, upload_video: Any) -> tuple[dict[str, str], str]:
    """(operator ids, endpoint) of a 1000-byte video or asset."""
    if request.param == "video_no":
        return {"video_no": upload_video(VIDEO, "clip.mp4")}, "download"
    asset = emu.control.add_asset(VIDEO, "clip.mp4", "video/mp4")
    return {"asset_id": asset["asset_id"]}, "v2_download"


@pytest.fixture(params=["file", "folder"])
def destination(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return str(tmp_path / "out" / "v.mp4") if request.param == "file" else str(tmp_path / "out") + "/"


def _fails_leaving_nothing(
    emu: Any,
    ids: dict[str, str],
    endpoint: str,
    destination: str,
    tmp_path: Path,
    error: type[MemoriesError],
    match: str,
) -> MemoriesError:
    with pytest.raises(error, match=match) as info:
        run(destination=destination, **ids)
    assert emu.control.count(endpoint) == 1
    # The folder is created when the destination is checked (before any request); nothing in it.
    assert everything_in(tmp_path) == ["out"]
    return info.value


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", "application/octet-stream", ""])
@pytest.mark.parametrize("msg_key", ["msg", "message"])
def test_envelope_with_http_200_under_any_content_type(
    emu: Any,
    source: tuple[dict[str, str], str],
    destination: str,
    tmp_path: Path,
    content_type: str,
    msg_key: str,
) -> None:
    ids, endpoint = source
    code = "0001" if endpoint == "download" else 400
    emu.control.inject_fault(
        endpoint,
        "json_error",
        code=code,
        msg="Resource does not exist",
        content_type=content_type,
        msg_key=msg_key,
    )
    error = _fails_leaving_nothing(
        emu, ids, endpoint, destination, tmp_path, MemoriesInvalidRequestError, "Resource does not exist"
    )
    assert error.code == str(code) and error.http_status == 200


@pytest.mark.parametrize(
    "content_type", ["text/html; charset=utf-8", "application/octet-stream", "video/mp4"]
)
def test_html_login_page(
    emu: Any, source: tuple[dict[str, str], str], destination: str, tmp_path: Path, content_type: str
) -> None:
    ids, endpoint = source
    emu.control.inject_fault(endpoint, "html_page", content_type=content_type)
    _fails_leaving_nothing(emu, ids, endpoint, destination, tmp_path, MemoriesResponseError, "HTML/XML page")


def test_empty_body(emu: Any, source: tuple[dict[str, str], str], destination: str, tmp_path: Path) -> None:
    ids, endpoint = source
    emu.control.inject_fault(endpoint, "empty_body")
    _fails_leaving_nothing(emu, ids, endpoint, destination, tmp_path, MemoriesResponseError, "body is empty")


def test_body_cut_without_length_or_chunking(
    emu: Any, source: tuple[dict[str, str], str], destination: str, tmp_path: Path
) -> None:
    ids, endpoint = source
    emu.control.inject_fault(endpoint, "cut_unframed", after=300)
    if "video_no" in ids:
        # get_metadata said 1000 bytes: the cut shows, with the bytes really received.
        error: type[MemoriesError] = MemoriesIncompleteBodyError
        match = "ended after 300 of 1000 bytes"
    else:
        # No size from anywhere: a cut could not be told from the end, so no such body is accepted.
        error, match = MemoriesResponseError, "neither Content-Length nor chunked"
    _fails_leaving_nothing(emu, ids, endpoint, destination, tmp_path, error, match)


def test_whole_body_without_length_or_chunking_is_accepted_for_a_video(
    emu: Any, upload_video: Any, tmp_path: Path
) -> None:
    # The same framing, complete: checked against get_metadata's size, so it is known whole.
    video_no = upload_video(VIDEO, "clip.mp4")
    emu.control.inject_fault("download", "cut_unframed", after=len(VIDEO))
    result = run(video_no=video_no, destination=str(tmp_path / "v.mp4"))
    assert (tmp_path / "v.mp4").read_bytes() == VIDEO and result["bytes"] == len(VIDEO)


# The second is read mostly socket -> buffer, past the sniffed prefix, over several buffers.
@pytest.mark.parametrize("size", [1000, 2_400_002])
def test_body_dropped_mid_way_counts_the_bytes_received(emu: Any, tmp_path: Path, size: int) -> None:
    data = VIDEO[:12] + os.urandom(size - 12)  # judged on its first read: the drop reaches the writer
    asset = emu.control.add_asset(data, "a.mp4", "video/mp4")
    emu.control.inject_fault("v2_download", "drop_mid_body")  # Content-Length given, then closed
    sent = min(size // 2, 1024 * 1024)  # the emulator stops at half the file or its first 1 MiB
    with pytest.raises(MemoriesIncompleteBodyError, match=f"after {sent} of {size} bytes"):
        run(asset_id=asset["asset_id"], destination=str(tmp_path / "a.mp4"))
    assert everything_in(tmp_path) == []


def test_an_earlier_file_survives_a_bad_body(emu: Any, upload_video: Any, tmp_path: Path) -> None:
    video_no = upload_video(VIDEO, "clip.mp4")
    target = tmp_path / "v.mp4"
    target.write_bytes(b"previous")
    emu.control.inject_fault("download", "html_page")
    with pytest.raises(MemoriesResponseError):
        run(video_no=video_no, destination=str(target), overwrite=True)
    assert target.read_bytes() == b"previous"
    assert everything_in(tmp_path) == ["v.mp4"]


def test_a_drop_right_after_the_headers_is_retried_not_taken_for_an_empty_body(
    memories_emulator: Any, set_memories_conn: Any, tmp_path: Path
) -> None:
    set_memories_conn(max_retries=1)
    asset = memories_emulator.control.add_asset(b"x", "a.mp4", "video/mp4")
    memories_emulator.control.inject_fault("v2_download", "drop_mid_body")  # Content-Length 1, 0 sent
    result = run(asset_id=asset["asset_id"], destination=str(tmp_path / "a.mp4"))
    assert (tmp_path / "a.mp4").read_bytes() == b"x" and result["bytes"] == 1
    assert memories_emulator.control.count("v2_download") == 2


def test_an_unframed_empty_body_is_an_error(emu: Any, upload_video: Any, tmp_path: Path) -> None:
    video_no = upload_video(VIDEO, "clip.mp4")
    emu.control.inject_fault("download", "cut_unframed", after=0)
    with pytest.raises(MemoriesResponseError, match="body is empty"):
        run(video_no=video_no, destination=str(tmp_path / "v.mp4"))
    assert everything_in(tmp_path) == []


def test_a_server_echoing_the_request_is_not_saved_as_the_video(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    key = "sk-mavi-echo-test-key"
    with LocalServer(echo_handler()) as echo:
        point_memories_default_at(monkeypatch, echo.url, key=key)
        with pytest.raises(MemoriesResponseError, match="echoed the request") as info:
            run(asset_id="re_1", destination=str(tmp_path / "a.mp4"))
    assert key not in str(info.value)
    assert everything_in(tmp_path) == []  # the key was never written anywhere
