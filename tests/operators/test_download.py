"""MemoriesDownloadOperator against the emulator (real sockets) with local destinations."""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from memories_provider.client import (
    MemoriesError,
    MemoriesIncompleteBodyError,
    MemoriesInsufficientCreditsError,
    MemoriesInvalidRequestError,
)
from memories_provider.operators.download import MemoriesDownloadOperator

VIDEO = os.urandom(3 * 1024 * 1024 + 17)  # > 1 chunk, odd size


@pytest.fixture
def upload(upload_video: Any) -> Any:
    """``upload() -> video_no`` of VIDEO."""
    return lambda data=VIDEO, name="clip.mp4": upload_video(data, name)


def run(**kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("task_id", "download")
    op = MemoriesDownloadOperator(**kwargs)
    return op.execute(context={})


def files_in(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# ---------------------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    "ids",
    [
        {},
        {"video_no": "VI1", "asset_id": "re_1"},
        {"video_no": "VI1", "bucket": "b", "blob": "x"},
        {"bucket": "b"},
        {"blob": "x"},
        {"asset_id": "re_1", "blob": "x"},
    ],
)
def test_exactly_one_id_kind_is_required(ids: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"exactly one|together"):
        MemoriesDownloadOperator(task_id="t", destination=str(tmp_path / "x"), **ids)


def test_rendered_empty_ids_fail_before_any_request(emu: Any, tmp_path: Path) -> None:
    op = MemoriesDownloadOperator(task_id="t", destination=str(tmp_path / "x"), video_no="{{ nothing }}")
    op.video_no = ""  # what the template renders to
    with pytest.raises(ValueError, match="exactly one"):
        op.execute(context={})
    assert emu.control.request_log() == []


def test_bad_checksum_and_destination_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="checksum"):
        MemoriesDownloadOperator(task_id="t", destination=str(tmp_path / "x"), video_no="VI1", checksum="md5")
    with pytest.raises(ValueError, match="destination"):
        MemoriesDownloadOperator(task_id="t", destination="", video_no="VI1")


def test_template_fields() -> None:
    assert set(MemoriesDownloadOperator.template_fields) == {
        "destination",
        "video_no",
        "asset_id",
        "bucket",
        "blob",
        "unique_id",
    }


def test_importing_the_operator_loads_no_storage_sdk() -> None:
    # A fresh interpreter: DAG files import the operator at parse time, which must stay cheap.
    heavy = ("smart_open", "boto3", "botocore", "paramiko", "azure.storage.blob", "google.cloud.storage")
    code = (
        "import sys, json; import memories_provider.operators.download; "
        f"print(json.dumps([m for m in {heavy!r} if m in sys.modules]))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"


# ---------------------------------------------------------------------------- each id kind


def test_video_no_to_local_file(emu: Any, upload: Any, tmp_path: Path) -> None:
    video_no = upload()
    target = tmp_path / "out" / "v.mp4"
    result = run(video_no=video_no, destination=str(target))
    assert target.read_bytes() == VIDEO
    assert result == {
        "uri": str(target),
        "bytes": len(VIDEO),
        "sha256": hashlib.sha256(VIDEO).hexdigest(),
        "content_type": result["content_type"],
        "filename": "v.mp4",
        "skipped": False,
    }
    assert result["content_type"].startswith("video/")
    assert files_in(tmp_path / "out") == ["v.mp4"]  # no temp file left


def test_asset_id_to_folder_uses_content_disposition(emu: Any, tmp_path: Path) -> None:
    asset = emu.control.add_asset(VIDEO, "holiday clip.mp4", "video/mp4")
    result = run(asset_id=asset["asset_id"], destination=f"file://{tmp_path}/")
    assert (tmp_path / "holiday clip.mp4").read_bytes() == VIDEO
    assert result["filename"] == "holiday clip.mp4"
    assert result["uri"] == f"file://{tmp_path}/holiday clip.mp4"
    assert files_in(tmp_path) == ["holiday clip.mp4"]


@pytest.mark.parametrize("api", ["v2", "v1"])
def test_bucket_blob_to_local_file(
    api: str, memories_emulator: Any, set_memories_conn: Any, tmp_path: Path
) -> None:
    set_memories_conn(blob_download_api=api, max_retries=1)
    asset = memories_emulator.control.add_asset(VIDEO, "b.mp4", "video/mp4")
    result = run(bucket=asset["bucket"], blob=asset["blob"], destination=str(tmp_path / "b.mp4"))
    assert (tmp_path / "b.mp4").read_bytes() == VIDEO
    assert result["sha256"] == hashlib.sha256(VIDEO).hexdigest()
    endpoint = "v2_download" if api == "v2" else "download"
    assert memories_emulator.control.count(endpoint) == 1


def test_checksum_none_skips_hashing(emu: Any, tmp_path: Path) -> None:
    asset = emu.control.add_asset(b"abc", "a.mp4", "video/mp4")
    result = run(asset_id=asset["asset_id"], destination=str(tmp_path / "a.mp4"), checksum=None)
    assert result["sha256"] is None
    assert result["bytes"] == 3


# ---------------------------------------------------------------------------- hostile names


@pytest.mark.parametrize(
    ("served", "expected"),
    [
        ("../../x.mp4", "x.mp4"),
        ("/etc/evil.mp4", "evil.mp4"),
        ("..", None),
        ("/", None),  # sanitises to empty (the emulator turns a truly empty name into "asset.mp4")
        ("...", None),
        (" \t ", None),
        ("sub/../../../up.mp4", "up.mp4"),
        ("bad\nname\x00.mp4", "badname.mp4"),
    ],
)
def test_hostile_content_disposition_stays_inside_the_folder(
    emu: Any, tmp_path: Path, served: str, expected: str | None
) -> None:
    try:
        asset = emu.control.add_asset(VIDEO, served, "video/mp4")
    except Exception as err:  # the emulator may refuse some names outright
        pytest.skip(f"emulator refuses filename {served!r}: {err}")
    folder = tmp_path / "inbox"
    folder.mkdir()
    result = run(asset_id=asset["asset_id"], destination=str(folder) + "/")
    written = files_in(folder)
    assert len(written) == 1
    name = written[0]
    if expected is not None:
        assert name == expected
    else:  # no usable name: <asset id><ext from Content-Type>
        assert name == f"{asset['asset_id']}.mp4"
    assert (folder / name).read_bytes() == VIDEO
    assert result["filename"] == name
    assert files_in(tmp_path) == ["inbox", f"inbox/{name}"]  # nothing outside the folder


# ---------------------------------------------------------------------------- failures


def test_drop_mid_body_is_retried_from_the_start(emu: Any, upload: Any, tmp_path: Path) -> None:
    video_no = upload()
    emu.control.inject_fault("download", "drop_mid_body", count=1)
    target = tmp_path / "v.mp4"
    result = run(video_no=video_no, destination=str(target))
    assert target.read_bytes() == VIDEO
    assert result["bytes"] == len(VIDEO)
    assert emu.control.count("download") == 2
    assert files_in(tmp_path) == ["v.mp4"]


def test_drop_mid_body_every_time_leaves_nothing(
    memories_emulator: Any, set_memories_conn: Any, tmp_path: Path
) -> None:
    set_memories_conn(max_retries=1)
    asset = memories_emulator.control.add_asset(VIDEO, "a.mp4", "video/mp4")
    memories_emulator.control.inject_fault("v2_download", "drop_mid_body", count=10)
    with pytest.raises(MemoriesIncompleteBodyError):
        run(asset_id=asset["asset_id"], destination=str(tmp_path / "a.mp4"))
    assert memories_emulator.control.count("v2_download") == 2  # first try + one retry
    assert files_in(tmp_path) == []


def test_drop_mid_body_keeps_the_previous_file(emu: Any, tmp_path: Path) -> None:
    asset = emu.control.add_asset(VIDEO, "a.mp4", "video/mp4")
    target = tmp_path / "a.mp4"
    target.write_bytes(b"previous")
    emu.control.inject_fault("v2_download", "drop_mid_body", count=10)
    with pytest.raises(MemoriesIncompleteBodyError):
        run(asset_id=asset["asset_id"], destination=str(target), overwrite=True)
    assert target.read_bytes() == b"previous"
    assert files_in(tmp_path) == ["a.mp4"]


@pytest.mark.parametrize(
    ("code", "msg", "error"),
    [
        ("0001", "video not found", MemoriesInvalidRequestError),
        ("0402", "Insufficient balance to download the resource", MemoriesInsufficientCreditsError),
    ],
)
def test_json_error_with_http_200_is_a_typed_error(
    emu: Any, upload: Any, tmp_path: Path, code: str, msg: str, error: type[MemoriesError]
) -> None:
    video_no = upload()
    emu.control.inject_fault("download", "json_error", code=code, msg=msg)
    with pytest.raises(error) as info:
        run(video_no=video_no, destination=str(tmp_path / "v.mp4"))
    assert info.value.code == code
    assert files_in(tmp_path) == []


def test_unknown_video_is_a_typed_error(emu: Any, tmp_path: Path) -> None:
    with pytest.raises(MemoriesInvalidRequestError):
        run(video_no="VI000000000000000000", destination=str(tmp_path / "v.mp4"))
    assert files_in(tmp_path) == []


def test_chunked_body_without_content_length(emu: Any, tmp_path: Path) -> None:
    emu.control.configure(chunked_downloads=True)
    asset = emu.control.add_asset(VIDEO, "c.mp4", "video/mp4")
    result = run(bucket=asset["bucket"], blob=asset["blob"], destination=str(tmp_path / "c.mp4"))
    assert (tmp_path / "c.mp4").read_bytes() == VIDEO
    assert result["bytes"] == len(VIDEO)
    assert result["sha256"] == hashlib.sha256(VIDEO).hexdigest()


class _ShortResponse:
    """A response whose body is shorter than its Content-Length (defence in depth: the client
    normally raises MemoriesIncompleteBodyError itself)."""

    content_type = "video/mp4"
    content_length = 10
    filename = "s.mp4"
    headers: dict[str, str] = {}

    def iter_chunks(self, chunk_size: int = 1024 * 1024) -> Any:
        yield b"12345"


def test_content_length_mismatch_fails_and_leaves_nothing(tmp_path: Path) -> None:
    from airflow.providers.common.compat.sdk import AirflowException

    from memories_provider.operators.download import select_source

    op = MemoriesDownloadOperator(task_id="t", destination=str(tmp_path / "s.mp4"), asset_id="re_1")
    source = select_source(video_no=None, asset_id="re_1", bucket=None, blob=None)
    with pytest.raises(AirflowException, match="received 5 bytes but Content-Length was 10"):
        op._stream(_ShortResponse(), source, str(tmp_path / "s.mp4"), 10)  # type: ignore[arg-type]
    assert files_in(tmp_path) == []
    # verify_size=False accepts it (the caller knows better).
    op.verify_size = False
    result = op._stream(_ShortResponse(), source, str(tmp_path / "s.mp4"), 10)  # type: ignore[arg-type]
    assert result["bytes"] == 5


# ---------------------------------------------------------------------------- idempotence


def test_existing_video_of_expected_size_is_skipped_without_downloading(
    emu: Any, upload: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    video_no = upload()
    target = tmp_path / "v.mp4"
    run(video_no=video_no, destination=str(target))
    assert emu.control.count("download") == 1
    mtime = target.stat().st_mtime_ns
    with caplog.at_level(logging.INFO):
        result = run(video_no=video_no, destination=str(target))
    assert result["skipped"] is True
    assert result["bytes"] == len(VIDEO)
    assert emu.control.count("download") == 1  # get_metadata told us the size: no billed request
    assert target.stat().st_mtime_ns == mtime
    # Airflow 3 logs through structlog (to the process's stdout), Airflow 2 through logging.
    captured = capfd.readouterr()
    assert "Skipping" in caplog.text + captured.out + captured.err


def test_existing_asset_in_folder_is_skipped_after_headers_only(emu: Any, tmp_path: Path) -> None:
    asset = emu.control.add_asset(VIDEO, "a.mp4", "video/mp4")
    run(asset_id=asset["asset_id"], destination=str(tmp_path) + "/")
    inode = (tmp_path / "a.mp4").stat().st_ino
    result = run(asset_id=asset["asset_id"], destination=str(tmp_path) + "/")
    assert result["skipped"] is True
    assert result["uri"].endswith("/a.mp4")
    assert (tmp_path / "a.mp4").stat().st_ino == inode  # not rewritten
    assert files_in(tmp_path) == ["a.mp4"]


def test_existing_file_of_another_size_fails_without_overwrite(emu: Any, upload: Any, tmp_path: Path) -> None:
    from airflow.providers.common.compat.sdk import AirflowFailException

    video_no = upload()
    target = tmp_path / "v.mp4"
    target.write_bytes(b"something else")
    with pytest.raises(AirflowFailException, match="overwrite=True"):
        run(video_no=video_no, destination=str(target))
    assert target.read_bytes() == b"something else"
    assert emu.control.count("download") == 0


def test_overwrite_replaces_atomically(emu: Any, upload: Any, tmp_path: Path) -> None:
    video_no = upload()
    target = tmp_path / "v.mp4"
    target.write_bytes(b"something else")
    result = run(video_no=video_no, destination=str(target), overwrite=True)
    assert target.read_bytes() == VIDEO
    assert result["skipped"] is False
    assert files_in(tmp_path) == ["v.mp4"]


# ---------------------------------------------------------------------------- lineage


def test_openlineage_input_and_output(emu: Any, upload: Any, tmp_path: Path) -> None:
    pytest.importorskip("airflow.providers.openlineage")
    video_no = upload()
    op = MemoriesDownloadOperator(task_id="t", video_no=video_no, destination=str(tmp_path / "v.mp4"))
    op.execute(context={})
    lineage = op.get_openlineage_facets_on_complete(None)
    assert [(d.namespace, d.name) for d in lineage.inputs] == [
        (f"memories://{emu.url.split('://', 1)[1]}", f"video/default/{video_no}")
    ]
    assert [(d.namespace, d.name) for d in lineage.outputs] == [("file", str(tmp_path / "v.mp4"))]
