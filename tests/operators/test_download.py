"""MemoriesDownloadOperator against the emulator (real sockets) with local destinations."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from connections import point_memories_default_at
from downloads import files_in
from downloads import run_download as run
from local_http import LocalServer, QuietHandler

from memories_provider.client import (
    MemoriesError,
    MemoriesIncompleteBodyError,
    MemoriesInsufficientCreditsError,
    MemoriesInvalidRequestError,
)
from memories_provider.operators.download import MemoriesDownloadOperator
from memories_provider.storage import write_behind
from memories_provider.storage.destinations import ResolvedTransport, atomic_writer

VIDEO = os.urandom(3 * 1024 * 1024 + 17)  # > 1 chunk, odd size


@pytest.fixture
def upload(upload_video: Any) -> Any:
    """``upload() -> video_no`` of VIDEO."""
    return lambda data=VIDEO, name="clip.mp4": upload_video(data, name)


def records_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob(".*.memories.json"))


def under(folder: Path, where: str) -> str:
    """``folder / where`` as a destination, keeping a trailing ``/`` (a folder destination)."""
    return str(folder / where) + ("/" if where.endswith("/") else "")


# ---------------------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    "ids",
    [
        {},
        {"video_no": "VI000000000000000001", "asset_id": "re_1"},
        {"video_no": "VI000000000000000001", "bucket": "b", "blob": "x"},
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


@pytest.fixture
def source_of(emu: Any, upload: Any) -> Any:
    """``source_of(kind) -> operator id kwargs`` of an existing video / asset / blob (downloadable)."""

    def _ids(kind: str) -> dict[str, str]:
        if kind == "video_no":
            return {"video_no": upload()}
        asset = emu.control.add_asset(VIDEO, "a.mp4", "video/mp4")
        if kind == "asset_id":
            return {"asset_id": asset["asset_id"]}
        return {"bucket": asset["bucket"], "blob": asset["blob"]}

    return _ids


# (destination under tmp_path or a URI, operator kwargs, the error it must raise)
BAD_DESTINATION_SETTINGS = {
    "local-bad-key": ("v.mp4", {"transport_params": {"bogus": 1}}, r"`transport_params` key 'bogus'"),
    "local-folder-bad-key": ("in/", {"transport_params": {"bogus": 1}}, r"`transport_params` key 'bogus'"),
    "s3-bad-key": ("s3://b/v.mp4", {"transport_params": {"bogus": 1}}, r"`transport_params` key 'bogus'"),
    "s3-unknown-conn": (
        "s3://b/in/",
        {"destination_conn_id": "no_such_conn"},
        r"`destination_conn_id`='no_such_conn' is not a defined Airflow connection",
    ),
    "sftp-unknown-conn": (
        "sftp://127.0.0.1/v.mp4",
        {"destination_conn_id": "no_such_conn"},
        r"`destination_conn_id`='no_such_conn' is not a defined Airflow connection",
    ),
    "azure-no-credentials": ("azure://c/v.mp4", {}, r"azure:// URIs need credentials"),
    # smart-open (>= 9) has no s3u transport: a bare AssertionError from its parse_uri, unnamed.
    "s3u-scheme": ("s3u://b/v.mp4", {}, r"`destination` scheme 's3u' is not supported"),
    # A bucket and no key: 'not enough values to unpack (expected 2, got 1)' from smart-open's S3
    # parse_uri, 'Cannot determine path without a blob name.' from GCS, neither naming the parameter.
    "s3-bucket-only": ("s3://b", {}, r"`destination` 's3://b' names a bucket and no object"),
    "gs-bucket-only": ("gs://b", {}, r"`destination` 'gs://b' names a bucket and no object"),
    # smart-open takes 'user:pw@c' for the container: the credentials went out in the request's path.
    # No bucket, or no URI: the store library's own words, naming no parameter ('gs:///v.mp4' an
    # IndexError, 's3://' "the bucket '' does not exist", 's3://[b/v.mp4' 'Invalid IPv6 URL').
    "s3-no-bucket": ("s3:///v.mp4", {}, r"`destination` 's3:///v.mp4' names no bucket"),
    "s3-nothing": ("s3://", {}, r"`destination` 's3://' names no bucket"),
    "gs-no-bucket": ("gs:///v.mp4", {}, r"`destination` 'gs:///v.mp4' names no bucket"),
    "azure-no-container": ("azure:///v.mp4", {}, r"`destination` 'azure:///v.mp4' names no container"),
    "s3-unsplittable": ("s3://[b/v.mp4", {}, r"`destination` 's3://\*\*\*' cannot be read as a s3:// URI"),
    "azure-userinfo": (
        "azure://user:pw@c/v.mp4",
        {},
        r"`destination` 'azure://\*\*\*@c/v.mp4' carries credentials",
    ),
    # A '/' in the password ends urlsplit's host there: smart-open writes the blob 'x@c/v.mp4' of
    # a container 'user:pw', the password split between them in the request's path.
    "azure-userinfo-slash": (
        "azure://user:pw/x@c/v.mp4",
        {},
        r"`destination` 'azure://\*\*\*@c/v.mp4' carries credentials",
    ),
}


@pytest.mark.parametrize("kind", ["video_no", "asset_id", "bucket+blob"])
@pytest.mark.parametrize("case", sorted(BAD_DESTINATION_SETTINGS))
def test_bad_destination_settings_fail_before_any_request(
    emu: Any, source_of: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, case: str
) -> None:
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    where, settings, error = BAD_DESTINATION_SETTINGS[case]
    destination = where if "://" in where else under(tmp_path, where)
    ids = source_of(kind)
    if "video_no" in ids and "://" not in where and not where.endswith("/"):
        (tmp_path / where).write_bytes(b"x")  # an existing file: the size check would call get_metadata
    before = emu.control.request_log()
    with pytest.raises(ValueError, match=error):
        run(destination=destination, **ids, **settings)
    assert emu.control.request_log() == before  # no download, no get_metadata: nothing billed


def test_missing_storage_provider_fails_before_any_request(
    emu: Any, upload: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    try:
        import airflow.providers.google  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("the Google provider is installed here")
    monkeypatch.setenv("AIRFLOW_CONN_GCP_X", json.dumps({"conn_type": "google_cloud_platform"}))
    video_no = upload()
    before = emu.control.request_log()
    with pytest.raises(ValueError, match=r"`destination_conn_id`='gcp_x' needs .*providers-google"):
        run(video_no=video_no, destination="gs://b/v.mp4", destination_conn_id="gcp_x")
    assert emu.control.request_log() == before


def test_bad_checksum_and_destination_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="checksum"):
        MemoriesDownloadOperator(
            task_id="t", destination=str(tmp_path / "x"), video_no="VI000000000000000001", checksum="md5"
        )
    with pytest.raises(ValueError, match="destination"):
        MemoriesDownloadOperator(task_id="t", destination="", video_no="VI000000000000000001")


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
    assert records_in(tmp_path / "out") == [".v.mp4.memories.json"]


def test_a_local_file_takes_every_whole_chunk_with_o_direct(
    emu: Any, upload: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On ext4/XFS the body goes from the receive buffers to the disk, past the page cache, up to
    its last partial chunk (1 MiB chunks: 3 MiB direct, then 17 bytes the usual way)."""
    probe = os.open(tmp_path, os.O_RDONLY)
    try:
        if write_behind.filesystem_type(probe) not in write_behind.DIRECT_FILESYSTEMS:
            pytest.skip("the temporary folder is not on ext4 or XFS")
    finally:
        os.close(probe)
    stopped_at: list[int] = []
    original = write_behind.WriteBehindFile._stop_direct

    def recording(self: write_behind.WriteBehindFile) -> None:
        stopped_at.append(self._written)
        original(self)

    monkeypatch.setattr(write_behind.WriteBehindFile, "_stop_direct", recording)
    target = tmp_path / "v.mp4"
    result = run(video_no=upload(), destination=str(target))
    assert target.read_bytes() == VIDEO and result["sha256"] == hashlib.sha256(VIDEO).hexdigest()
    assert stopped_at == [3 * 1024 * 1024]


def _filesystem_of(monkeypatch: pytest.MonkeyPatch, folder: Path, capacity: int) -> None:
    """``statvfs`` of ``folder`` tells of a filesystem of ``capacity`` bytes holding just the files
    in ``folder``: a full disk cannot be made here without mounting one. Other paths are real."""
    real = os.statvfs

    def statvfs(path: Any) -> os.statvfs_result:
        if Path(path).resolve() != folder.resolve():
            return real(path)
        used = sum(p.stat().st_size for p in folder.iterdir()) if folder.is_dir() else 0
        free = max(capacity - used, 0)
        # bsize, frsize, blocks, bfree, bavail, files, ffree, favail, flag, namemax
        return os.statvfs_result((4096, 1, capacity, free, free, 1000, 1000, 1000, 0, 255))

    monkeypatch.setattr(os, "statvfs", statvfs)


@pytest.mark.parametrize("where", ["out/v.mp4", "out/"])
def test_a_download_its_disk_cannot_hold_fails_before_writing(
    emu: Any, upload: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    import errno

    video_no = upload()
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "keep.mp4").write_bytes(b"earlier")
    _filesystem_of(monkeypatch, folder, len(b"earlier") + len(VIDEO) - 1)
    with pytest.raises(OSError) as info:
        run(video_no=video_no, destination=under(tmp_path, where))
    assert info.value.errno == errno.ENOSPC  # as the write itself would fail; a retry may find room
    assert f": {len(VIDEO)} bytes to write, but its filesystem has {len(VIDEO) - 1} bytes free" in str(
        info.value
    )
    assert "nothing was written" in str(info.value)
    assert files_in(folder) == ["keep.mp4"] and records_in(folder) == []
    assert emu.control.count("download") == 0  # known from get_metadata: refused before the billed request
    # Just enough: the download goes ahead.
    _filesystem_of(monkeypatch, folder, len(b"earlier") + len(VIDEO))
    result = run(video_no=video_no, destination=under(tmp_path, where))
    assert Path(result["uri"]).read_bytes() == VIDEO


def test_the_room_of_a_new_folder_is_checked_too(
    emu: Any, upload: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    folder = tmp_path / "2025" / "01" / "01"  # created by the download
    _filesystem_of(monkeypatch, folder, len(VIDEO) - 1)
    with pytest.raises(OSError) as info:
        run(video_no=upload(), destination=str(folder / "v.mp4"))
    assert info.value.errno == errno.ENOSPC
    assert files_in(folder) == []
    assert emu.control.count("download") == 0


def test_an_abandoned_temp_file_is_cleared_before_the_room_is_measured(
    emu: Any, upload: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker killed mid-download left its temporary file: its room is the retry's to reuse."""
    from memories_provider.storage.destinations import _temp_name

    folder = tmp_path / "out"
    folder.mkdir()
    abandoned = folder / _temp_name("v.mp4")
    abandoned.write_bytes(VIDEO[:-100])
    hours_ago = time.time() - 7200
    os.utime(abandoned, (hours_ago, hours_ago))
    # Room for one copy and most of a second: not while the abandoned one is there.
    _filesystem_of(monkeypatch, folder, 2 * len(VIDEO) - 200)
    result = run(video_no=upload(), destination=str(folder / "v.mp4"))
    assert Path(result["uri"]).read_bytes() == VIDEO
    assert files_in(folder) == ["v.mp4"]


def test_a_content_length_at_odds_with_the_metadata_is_named_not_the_disk(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A server announcing 10**15 bytes for a video the service says is 1 MiB: the disagreement
    is the error (before anything is written), not the disk's size."""
    with _LyingServer(announced=10**15, body=VIDEO[: 1024 * 1024], metadata_size=1024 * 1024) as server:
        point_memories_default_at(monkeypatch, server.url, max_retries=0)
        with pytest.raises(
            MemoriesError, match=r"Content-Length 1000000000000000 disagrees .*\(1048576 bytes\)"
        ):
            run(video_no="VI000000000000000001", destination=str(tmp_path / "out" / "v.mp4"))
    assert files_in(tmp_path / "out") == []


def test_free_space_is_what_statvfs_grants(tmp_path: Path) -> None:
    from memories_provider.storage.probes import free_space

    stats = os.statvfs(tmp_path)
    blocks = stats.f_bfree if os.geteuid() == 0 else stats.f_bavail
    free = free_space(str(tmp_path))
    assert free is not None and abs(free - blocks * stats.f_frsize) < 64 * 1024 * 1024
    assert free_space(str(tmp_path / "missing")) is None  # no folder: not known
    assert free_space("/proc") is None  # a filesystem that reports no size


def test_connection_for_a_local_destination_is_ignored(emu: Any, upload: Any, tmp_path: Path) -> None:
    # One DAG param may name a local or a remote destination; the connection serves the remote ones.
    target = tmp_path / "v.mp4"
    run(video_no=upload(), destination=str(target), destination_conn_id="aws_not_defined_here")
    assert target.read_bytes() == VIDEO


def test_asset_id_to_folder_uses_content_disposition_after_the_id(emu: Any, tmp_path: Path) -> None:
    asset = emu.control.add_asset(VIDEO, "holiday clip.mp4", "video/mp4")
    result = run(asset_id=asset["asset_id"], destination=f"file://{tmp_path}/")
    name = f"{asset['asset_id']}.holiday clip.mp4"
    assert (tmp_path / name).read_bytes() == VIDEO
    assert result["filename"] == name
    assert result["uri"] == f"file://{tmp_path}/{name}"
    assert files_in(tmp_path) == [name]


def test_video_no_to_folder_without_content_disposition_is_named_by_id_and_type(
    emu: Any, upload: Any, tmp_path: Path
) -> None:
    # Spec: Content-Disposition "may be absent on A" (the emulator, strict, leaves it out): the
    # file is then <video_no>.<extension of the Content-Type>, and a second run finds it by id.
    video_no = upload()
    result = run(video_no=video_no, destination=f"{tmp_path}/")
    name = f"{video_no}.mp4"
    assert result["filename"] == name and result["uri"] == f"{tmp_path}/{name}"
    assert (tmp_path / name).read_bytes() == VIDEO
    assert run(video_no=video_no, destination=f"{tmp_path}/")["skipped"] is True
    assert files_in(tmp_path) == [name]
    assert emu.control.count("download") == 1


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
    asset = emu.control.add_asset(VIDEO, served, "video/mp4")  # the emulator serves any name as given
    folder = tmp_path / "inbox"
    folder.mkdir()
    result = run(asset_id=asset["asset_id"], destination=str(folder) + "/")
    written = files_in(folder)
    assert len(written) == 1
    name = written[0]
    if expected is not None:
        assert name == f"{asset['asset_id']}.{expected}"
    else:  # no usable name: <asset id>.<ext from Content-Type>
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


class _LyingServer(LocalServer):
    """A memories.ai stand-in on 127.0.0.1 that announces ``announced`` bytes, sends ``body`` and
    closes the connection, whatever the request; ``get_metadata`` reports ``metadata_size``
    (default: ``announced``)."""

    def __init__(
        self,
        announced: int,
        body: bytes,
        metadata_size: int | None = None,
        status: int = 200,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.requests = 0
        server = self
        size = announced if metadata_size is None else metadata_size

        class Handler(QuietHandler):
            def _answer(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if "/get_metadata" in self.path:  # honest about the size (unless told): only the body lies
                    data = {
                        "video_no": "VI000000000000000001",
                        "size": size,
                        "status": "PARSE",
                        "create_time": 1,
                    }
                    envelope = json.dumps({"code": "0000", "msg": "success", "data": data}).encode()
                    self.send_body(200, {"Content-Type": "application/json"}, envelope)
                    return
                server.requests += 1
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "video/mp4")
                self.send_header("Content-Disposition", 'attachment; filename="s.mp4"')
                self.send_header("Content-Length", str(announced))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)
                self.wfile.flush()
                self.close_connection = True

            do_GET = do_POST = _answer

        super().__init__(Handler)


@pytest.fixture
def short_body_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[_LyingServer]:
    """``memories_default`` pointed at a server announcing 1 MiB + 5 bytes but sending 1 MiB (no retries)."""
    with _LyingServer(announced=1024 * 1024 + 5, body=VIDEO[: 1024 * 1024]) as server:
        point_memories_default_at(monkeypatch, server.url, max_retries=0)
        yield server


@pytest.mark.parametrize(
    "ids",
    [{"video_no": "VI000000000000000001"}, {"asset_id": "re_1"}, {"bucket": "b", "blob": "v.mp4"}],
    ids=str,
)
@pytest.mark.parametrize("where", ["out/s.mp4", "out/"])
def test_body_shorter_than_content_length_fails_and_leaves_nothing(
    short_body_server: _LyingServer, tmp_path: Path, ids: dict[str, str], where: str
) -> None:
    with pytest.raises(MemoriesIncompleteBodyError, match=f"after {1024 * 1024} of {1024 * 1024 + 5} bytes"):
        run(destination=under(tmp_path, where), **ids)
    assert short_body_server.requests == 1
    assert files_in(tmp_path) in ([], ["out"])  # no file, no temp file


@pytest.mark.parametrize("ids", [{"asset_id": "re_1"}, {"bucket": "b", "blob": "v.mp4"}], ids=str)
def test_a_partial_content_answer_is_not_taken_for_the_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ids: dict[str, str]
) -> None:
    # Nothing asked for a range, yet a cache answers 206 with the first MiB of a 3 MiB file: its
    # Content-Length is that of the part. For an asset or a blob nothing else tells the file's
    # size, so only the status says these bytes are not the file.
    part = VIDEO[: 1024 * 1024]
    headers = {"Content-Range": f"bytes 0-{len(part) - 1}/{len(VIDEO)}"}
    with _LyingServer(announced=len(part), body=part, status=206, headers=headers) as server:
        point_memories_default_at(monkeypatch, server.url, max_retries=0)
        with pytest.raises(MemoriesError, match="206"):
            run(destination=str(tmp_path / "out.mp4"), **ids)
    assert files_in(tmp_path) == []


class _ShortResponse:
    """A response whose body is shorter than its Content-Length: the client raises on a real socket
    (above), so only a fake reaches the operator's own check (defence in depth)."""

    content_type = "video/mp4"
    content_length = 10
    filename = "s.mp4"
    headers: dict[str, str] = {}

    def expected_size(self, known_size: int | None) -> int | None:
        return self.content_length

    def iter_into(self, take: Any, give_back: Any = None, *, expected_size: int | None = None) -> Any:
        view = take()
        view[:5] = b"12345"
        yield view[:5]


def test_operator_checks_content_length_itself(tmp_path: Path) -> None:
    from airflow.providers.common.compat.sdk import AirflowException

    from memories_provider.operators._download_source import ServiceFacts
    from memories_provider.operators.download import select_source

    op = MemoriesDownloadOperator(task_id="t", destination=str(tmp_path / "s.mp4"), asset_id="re_1")
    source = select_source(video_no=None, asset_id="re_1", bucket=None, blob=None)
    uri, local = str(tmp_path / "s.mp4"), ResolvedTransport()
    with pytest.raises(AirflowException, match="received 5 bytes but 10 were expected"):
        op._stream(_ShortResponse(), source, ServiceFacts(), uri, local)  # type: ignore[arg-type]
    assert files_in(tmp_path) == []
    # verify_size=False accepts it (the caller knows better).
    op.verify_size = False
    result = op._stream(_ShortResponse(), source, ServiceFacts(), uri, local)  # type: ignore[arg-type]
    assert result["bytes"] == 5


# ---------------------------------------------------------------------------- hard kills


_KILLED_WRITER = """
import os, signal, sys
from memories_provider.storage.destinations import atomic_writer
writer = atomic_writer(sys.argv[1])  # kept referenced: collecting it would run the cleanup
out = writer.__enter__()
out.write(b"partial")
out.flush()
os.kill(os.getpid(), signal.SIGKILL)  # like the OOM killer: no cleanup runs
"""


def _temps_of(folder: Path, name: str) -> set[str]:
    return {p.name for p in folder.glob(f".{name}.*.part")}


def _age(path: Path, seconds: float) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past))


def test_download_removes_a_killed_writers_temp_file_but_not_a_live_ones(emu: Any, tmp_path: Path) -> None:
    target = tmp_path / "a.mp4"
    proc = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(target)], timeout=120)
    assert proc.returncode == -signal.SIGKILL
    (killed,) = _temps_of(tmp_path, "a.mp4")
    asset = emu.control.add_asset(VIDEO, "a.mp4", "video/mp4")
    with pytest.raises(RuntimeError, match="live writer discards"), atomic_writer(str(target)) as live:
        live.write(b"still writing")
        (live_temp,) = _temps_of(tmp_path, "a.mp4") - {killed}
        for name in (killed, live_temp):  # both idle for long: only the lock tells them apart
            _age(tmp_path / name, 3 * 3600)
        result = run(asset_id=asset["asset_id"], destination=str(target))
        assert target.read_bytes() == VIDEO
        assert result["bytes"] == len(VIDEO)
        assert _temps_of(tmp_path, "a.mp4") == {live_temp}
        raise RuntimeError("live writer discards")
    assert files_in(tmp_path) == ["a.mp4"]


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


def test_existing_asset_in_folder_is_skipped_without_a_request(emu: Any, tmp_path: Path) -> None:
    asset = emu.control.add_asset(VIDEO, "a.mp4", "video/mp4")
    first = run(asset_id=asset["asset_id"], destination=str(tmp_path) + "/")
    name = f"{asset['asset_id']}.a.mp4"
    inode = (tmp_path / name).stat().st_ino
    before = emu.control.count("v2_download")
    result = run(asset_id=asset["asset_id"], destination=str(tmp_path) + "/")
    assert result == {**first, "skipped": True, "content_type": None}
    assert emu.control.count("v2_download") == before  # found by its name key, proven by its record
    assert (tmp_path / name).stat().st_ino == inode  # not rewritten
    assert files_in(tmp_path) == [name]


def test_existing_file_of_another_size_fails_without_overwrite(emu: Any, upload: Any, tmp_path: Path) -> None:
    from airflow.providers.common.compat.sdk import AirflowFailException

    video_no = upload()
    target = tmp_path / "v.mp4"
    target.write_bytes(b"something else")
    with pytest.raises(AirflowFailException, match=r"no record of what it holds.*overwrite=True"):
        run(video_no=video_no, destination=str(target))
    assert target.read_bytes() == b"something else"
    assert emu.control.count("download") == 0


def test_existing_file_of_the_same_size_without_a_record_is_not_taken_for_the_video(
    emu: Any, upload: Any, tmp_path: Path
) -> None:
    from airflow.providers.common.compat.sdk import AirflowFailException

    video_no = upload()
    target = tmp_path / "v.mp4"
    target.write_bytes(os.urandom(len(VIDEO)))  # same size, other bytes: a size proves nothing
    with pytest.raises(AirflowFailException, match=f"cannot be shown to be video {video_no}"):
        run(video_no=video_no, destination=str(target))
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


def test_openlineage_names_the_video_in_the_connections_scope_as_the_upload_operator_does(
    memories_emulator: Any, set_memories_conn: Any, tmp_path: Path
) -> None:
    pytest.importorskip("airflow.providers.openlineage")
    from memories_provider.operators.upload import MemoriesUploadOperator

    set_memories_conn(unique_id="team-a", max_retries=1)
    resp = requests.post(
        f"{memories_emulator.v1_url}/upload",
        headers={"Authorization": memories_emulator.api_key},
        files={"file": ("clip.mp4", VIDEO, "video/mp4")},
        data={"unique_id": "team-a"},
        timeout=60,
    )
    video_no = resp.json()["data"]["videoNo"]
    download = MemoriesDownloadOperator(task_id="t", video_no=video_no, destination=str(tmp_path / "v.mp4"))
    download.execute(context={})
    (downloaded,) = download.get_openlineage_facets_on_complete(None).inputs
    assert downloaded.name == f"video/team-a/{video_no}"

    class _UploadTaskInstance:  # what the upload operator's execute needs of its task instance
        task_id = "up"

        def xcom_push(self, key: str, value: Any) -> None:
            pass

    ti = _UploadTaskInstance()
    upload = MemoriesUploadOperator(task_id="up", source=str(tmp_path / "v.mp4"), idempotent=False)
    uploaded_no = upload.execute({"ti": ti})
    (uploaded,) = upload.get_openlineage_facets_on_complete(ti).outputs
    # The same scope, named the same way: the download's input and the upload's output line up.
    assert (uploaded.namespace, uploaded.name) == (downloaded.namespace, f"video/team-a/{uploaded_no}")


class _Try:
    """The task instance Airflow hands a try: ``max_tries`` as a clear leaves it (the last try plus
    ``retries``), so ``max_tries - retries + 1`` is the first try since the clear."""

    def __init__(self, try_number: int, max_tries: int) -> None:
        self.dag_id, self.task_id, self.run_id, self.map_index = "dag", "download", "run-1", -1
        self.try_number, self.max_tries = try_number, max_tries


def test_overwrite_keeps_a_retrys_own_file_but_a_clear_downloads_again(
    emu: Any, upload: Any, tmp_path: Path
) -> None:
    # The documented way to force a fresh copy (bytes replaced service-side under the same facts)
    # is overwrite=True: a clear of the very task instance that wrote the file must still download.
    video_no = upload()
    target = str(tmp_path / "v.mp4")

    def execute(ti: _Try, overwrite: bool) -> dict[str, Any]:
        op = MemoriesDownloadOperator(
            task_id="download", video_no=video_no, destination=target, overwrite=overwrite, retries=1
        )
        return dict(op.execute({"ti": ti}))

    assert execute(_Try(1, max_tries=1), overwrite=False)["skipped"] is False  # written by try 1
    assert execute(_Try(2, max_tries=2), overwrite=True)["skipped"] is False  # cleared: try 2 is first
    assert execute(_Try(3, max_tries=2), overwrite=True)["skipped"] is True  # a retry of try 2: its file
    assert emu.control.count("download") == 2
