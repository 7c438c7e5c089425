"""Each remote destination kind, for real: moto S3, a local sshd (SFTP) and Azurite (Azure)."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from downloads import files_in
from downloads import run_download as run

from memories_provider.client import MemoriesIncompleteBodyError
from memories_provider.storage.destinations import (
    UNLOCKED_TEMP_GRACE,
    DestinationTaken,
    atomic_writer,
    destination_exists,
)

BIG = os.urandom(12 * 1024 * 1024 + 5)  # > two 5 MiB parts: a failure happens after parts were sent
PART = {"min_part_size": 5 * 1024 * 1024}
VIDEO = os.urandom(2 * 1024 * 1024 + 3)


@pytest.fixture
def upload(upload_video: Any) -> Any:
    return lambda: upload_video(VIDEO)


# ---------------------------------------------------------------------------- S3


def test_s3_file(emu: Any, upload: Any, moto_s3_server: Any, s3_bucket: str) -> None:
    video_no = upload()
    uri = f"s3://{s3_bucket}/videos/v.mp4.gz"  # .gz: proves compression is disabled
    result = run(video_no=video_no, destination=uri, destination_conn_id=moto_s3_server.conn_id)
    body = moto_s3_server.client().get_object(Bucket=s3_bucket, Key="videos/v.mp4.gz")["Body"].read()
    assert body == VIDEO
    assert result["uri"] == uri
    assert result["sha256"] == hashlib.sha256(VIDEO).hexdigest()


def test_s3_folder_and_skip_if_exists(emu: Any, moto_s3_server: Any, s3_bucket: str) -> None:
    asset = emu.control.add_asset(VIDEO, "../../clip.mp4", "video/mp4")
    folder = f"s3://{s3_bucket}/in/"
    result = run(asset_id=asset["asset_id"], destination=folder, destination_conn_id=moto_s3_server.conn_id)
    name = f"{asset['asset_id']}.clip.mp4"
    assert result["uri"] == f"{folder}{name}"
    client = moto_s3_server.client()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert keys == [f"in/{name}"]
    head = client.head_object(Bucket=s3_bucket, Key=f"in/{name}")
    assert head["Metadata"] == {
        "memories-source": f"asset/{asset['asset_id']}",
        "memories-evidence": "",
        "memories-size": str(len(VIDEO)),
    }
    assert destination_exists(result["uri"], conn_id=moto_s3_server.conn_id) == len(VIDEO)
    downloads = emu.control.count("v2_download")
    again = run(asset_id=asset["asset_id"], destination=folder, destination_conn_id=moto_s3_server.conn_id)
    assert again["skipped"] is True and again["uri"] == result["uri"]
    assert emu.control.count("v2_download") == downloads


@pytest.mark.parametrize("query", ["?versionId=3HL4kqtJlcpXroDTDmJ", "?x=1&versionId=3HL4kqtJlcpXroDTDmJ"])
def test_s3_destination_naming_a_version_is_refused_before_any_request(
    emu: Any, moto_s3_server: Any, s3_bucket: str, query: str
) -> None:
    # smart-open reads ?versionId= as a version and refuses to write one: the download sent its
    # (billed) request, then failed with a bare 'version_id must be None when writing', on every try.
    asset = emu.control.add_asset(VIDEO, "z.mp4", "video/mp4")
    with pytest.raises(ValueError, match=r"`destination` .* names an object version \(versionId=\)"):
        run(
            asset_id=asset["asset_id"],
            destination=f"s3://{s3_bucket}/out.mp4{query}",
            destination_conn_id=moto_s3_server.conn_id,
        )
    assert emu.control.request_log() == []
    assert moto_s3_server.client().list_objects_v2(Bucket=s3_bucket).get("Contents", []) == []


def test_s3_credentials_are_resolved_once_per_task(
    emu: Any, moto_s3_server: Any, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    clients: list[Any] = []
    real_get_conn = S3Hook.get_conn

    def counting_get_conn(self: Any) -> Any:
        clients.append(real_get_conn(self))
        return clients[-1]

    monkeypatch.setattr(S3Hook, "get_conn", counting_get_conn)
    asset = emu.control.add_asset(VIDEO, "once.mp4", "video/mp4")
    folder = f"s3://{s3_bucket}/once/"
    # Into a folder: an existence check once the name is known, then the writer; one client for both.
    result = run(asset_id=asset["asset_id"], destination=folder, destination_conn_id=moto_s3_server.conn_id)
    assert result["skipped"] is False
    assert len(clients) == 1


def _no_trace_in_s3(client: Any, bucket: str) -> None:
    assert client.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_s3_drop_mid_body_leaves_no_object_and_retry_succeeds(
    emu: Any, moto_s3_server: Any, s3_bucket: str
) -> None:
    asset = emu.control.add_asset(BIG, "big.mp4", "video/mp4")
    uri = f"s3://{s3_bucket}/big.mp4"
    client = moto_s3_server.client()
    emu.control.inject_fault("v2_download", "drop_mid_body", count=10)
    with pytest.raises(MemoriesIncompleteBodyError):
        run(
            asset_id=asset["asset_id"],
            destination=uri,
            destination_conn_id=moto_s3_server.conn_id,
            transport_params=PART,
        )
    _no_trace_in_s3(client, s3_bucket)


def test_s3_single_drop_is_retried(emu: Any, moto_s3_server: Any, s3_bucket: str) -> None:
    asset = emu.control.add_asset(BIG, "big.mp4", "video/mp4")
    emu.control.inject_fault("v2_download", "drop_mid_body", count=1)
    uri = f"s3://{s3_bucket}/big.mp4"
    result = run(
        asset_id=asset["asset_id"],
        destination=uri,
        destination_conn_id=moto_s3_server.conn_id,
        transport_params=PART,
    )
    client = moto_s3_server.client()
    assert client.get_object(Bucket=s3_bucket, Key="big.mp4")["Body"].read() == BIG
    assert result["bytes"] == len(BIG)
    assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []


def test_s3_atomic_writer_aborts_multipart_upload(moto_s3_server: Any, s3_bucket: str) -> None:
    uri = f"s3://{s3_bucket}/partial.bin"
    with (
        pytest.raises(RuntimeError, match="boom"),
        atomic_writer(uri, conn_id=moto_s3_server.conn_id, transport_params=PART) as out,
    ):
        out.write(BIG)  # two parts already uploaded
        raise RuntimeError("boom")
    _no_trace_in_s3(moto_s3_server.client(), s3_bucket)
    assert destination_exists(uri, conn_id=moto_s3_server.conn_id) is None


def test_s3_writer_never_clobbers_when_asked_not_to(moto_s3_server: Any, s3_bucket: str) -> None:
    from memories_provider.storage.destinations import DestinationTaken

    uri = f"s3://{s3_bucket}/taken.bin"
    client = moto_s3_server.client()
    client.put_object(Bucket=s3_bucket, Key="taken.bin", Body=b"first")
    with (
        pytest.raises(DestinationTaken),
        atomic_writer(uri, conn_id=moto_s3_server.conn_id, transport_params=PART, replace=False) as out,
    ):
        out.write(BIG)  # parts uploaded; the completion is refused
    assert client.get_object(Bucket=s3_bucket, Key="taken.bin")["Body"].read() == b"first"
    assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
    with atomic_writer(f"s3://{s3_bucket}/free.bin", conn_id=moto_s3_server.conn_id, replace=False) as out:
        out.write(b"new")
    assert client.get_object(Bucket=s3_bucket, Key="free.bin")["Body"].read() == b"new"


def test_s3_store_without_conditional_writes_still_gets_the_object(
    moto_s3_server: Any, s3_bucket: str
) -> None:
    """Some S3-compatible stores answer NotImplemented to If-None-Match: the plain completion follows.
    (moto implements it, so such a store is played by a botocore hook: it cannot be run here.)"""
    from types import SimpleNamespace

    client = moto_s3_server.client()
    refused: list[str] = []

    def no_conditionals(params: dict, **_: Any) -> Any:
        if "If-None-Match" in params["headers"]:
            refused.append("complete")
            error = {
                "Error": {"Code": "NotImplemented", "Message": "no"},
                "ResponseMetadata": {"HTTPStatusCode": 501},
            }
            return SimpleNamespace(status_code=501, headers={}), error
        return None

    client.meta.events.register("before-call.s3.CompleteMultipartUpload", no_conditionals)
    uri = f"s3://{s3_bucket}/plain.bin"
    with atomic_writer(uri, transport_params={"client": client}, replace=False) as out:
        out.write(b"data")
    assert refused == ["complete"]
    assert client.get_object(Bucket=s3_bucket, Key="plain.bin")["Body"].read() == b"data"
    assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []


# ---------------------------------------------------------------------------- SFTP


def test_sftp_file_and_folder(emu: Any, upload: Any, sshd: Any) -> None:
    video_no = upload()
    target = sshd.root / "v.mp4"
    result = run(video_no=video_no, destination=sshd.uri(str(target)), destination_conn_id=sshd.conn_id)
    assert target.read_bytes() == VIDEO
    assert result["bytes"] == len(VIDEO)

    asset = emu.control.add_asset(b"asset bytes", "/etc/a.mp4", "video/mp4")
    folder = sshd.root / "in"
    folder.mkdir()
    result = run(
        asset_id=asset["asset_id"], destination=sshd.uri(str(folder)) + "/", destination_conn_id=sshd.conn_id
    )
    name = f"{asset['asset_id']}.a.mp4"
    assert (folder / name).read_bytes() == b"asset bytes"
    assert files_in(folder) == [name]
    record = json.loads((folder / f".{name}.memories.json").read_text())
    assert record["memories-source"] == f"asset/{asset['asset_id']}"
    assert record["memories-sha256"] == hashlib.sha256(b"asset bytes").hexdigest()
    assert destination_exists(result["uri"], conn_id=sshd.conn_id) == len(b"asset bytes")
    assert destination_exists(sshd.uri(str(folder / "none")), conn_id=sshd.conn_id) is None
    downloads = emu.control.count("v2_download")
    again = run(
        asset_id=asset["asset_id"], destination=sshd.uri(str(folder)) + "/", destination_conn_id=sshd.conn_id
    )
    assert again["skipped"] is True and again["sha256"] == record["memories-sha256"]
    assert emu.control.count("v2_download") == downloads


def test_sftp_drop_mid_body_leaves_nothing(emu: Any, sshd: Any) -> None:
    asset = emu.control.add_asset(BIG, "big.mp4", "video/mp4")
    emu.control.inject_fault("v2_download", "drop_mid_body", count=10)
    folder = sshd.root / "drop"
    folder.mkdir()
    with pytest.raises(MemoriesIncompleteBodyError):
        run(
            asset_id=asset["asset_id"],
            destination=sshd.uri(str(folder / "big.mp4")),
            destination_conn_id=sshd.conn_id,
        )
    assert files_in(folder) == []


def _aged(path: Path, seconds: float) -> None:
    path.write_bytes(b"left over")
    past = time.time() - seconds
    os.utime(path, (past, past))


def test_sftp_writer_removes_temp_files_idle_for_long(emu: Any, sshd: Any) -> None:
    asset = emu.control.add_asset(VIDEO, "s.mp4", "video/mp4")
    folder = sshd.root / "stale"
    folder.mkdir()
    _aged(folder / ".s.mp4.0123456789ab.part", 2 * UNLOCKED_TEMP_GRACE)  # a killed writer's
    _aged(folder / ".s.mp4.fedcba987654.part", UNLOCKED_TEMP_GRACE / 2)  # maybe a live (paused) writer's
    _aged(folder / ".t.mp4.0123456789ab.part", 2 * UNLOCKED_TEMP_GRACE)  # another target's
    run(
        asset_id=asset["asset_id"],
        destination=sshd.uri(str(folder / "s.mp4")),
        destination_conn_id=sshd.conn_id,
    )
    assert (folder / "s.mp4").read_bytes() == VIDEO
    assert files_in(folder) == [".s.mp4.fedcba987654.part", ".t.mp4.0123456789ab.part", "s.mp4"]
    assert (folder / ".s.mp4.memories.json").exists()


def test_sftp_overwrite_replaces(emu: Any, sshd: Any) -> None:
    asset = emu.control.add_asset(VIDEO, "x.mp4", "video/mp4")
    target = sshd.root / "replace.mp4"
    target.write_bytes(b"old")
    run(
        asset_id=asset["asset_id"],
        destination=sshd.uri(str(target)),
        destination_conn_id=sshd.conn_id,
        overwrite=True,
    )
    assert target.read_bytes() == VIDEO
    assert [p.name for p in sshd.root.iterdir() if p.name.startswith(".replace")] == [
        ".replace.mp4.memories.json"
    ]


# ---------------------------------------------------------------------------- Azure


def test_azure_file_and_failure(emu: Any, azurite: Any, azure_container: str) -> None:
    asset = emu.control.add_asset(VIDEO, "z.mp4", "video/mp4")
    uri = f"azure://{azure_container}/dir/z.mp4"
    result = run(asset_id=asset["asset_id"], destination=uri, destination_conn_id=azurite.conn_id)
    service = azurite.service()
    assert service.get_blob_client(azure_container, "dir/z.mp4").download_blob().readall() == VIDEO
    assert result["sha256"] == hashlib.sha256(VIDEO).hexdigest()
    assert destination_exists(uri, conn_id=azurite.conn_id) == len(VIDEO)

    emu.control.inject_fault("v2_download", "drop_mid_body", count=10)
    with pytest.raises(MemoriesIncompleteBodyError):
        run(
            asset_id=asset["asset_id"],
            destination=f"azure://{azure_container}/dir/broken.mp4",
            destination_conn_id=azurite.conn_id,
        )
    names = [b.name for b in service.get_container_client(azure_container).list_blobs()]
    assert names == ["dir/z.mp4"]


def test_azure_container_top_level_as_folder(emu: Any, azurite: Any, azure_container: str) -> None:
    # azure://<container>/ was surveyed as smart-open reads a *file* URI: the blob '<container>' of
    # the root container, so the download failed before its request with "the container '$root'
    # does not exist" (and, with a $root, would have listed the wrong container).
    asset = emu.control.add_asset(VIDEO, "clip.mp4", "video/mp4")
    folder = f"azure://{azure_container}/"
    result = run(asset_id=asset["asset_id"], destination=folder, destination_conn_id=azurite.conn_id)
    name = f"{asset['asset_id']}.clip.mp4"
    assert result["uri"] == f"{folder}{name}" and result["filename"] == name
    container = azurite.service().get_container_client(azure_container)
    assert [b.name for b in container.list_blobs()] == [name]
    downloads = emu.control.count("v2_download")
    again = run(asset_id=asset["asset_id"], destination=folder, destination_conn_id=azurite.conn_id)
    assert again["skipped"] is True and again["uri"] == result["uri"]
    assert emu.control.count("v2_download") == downloads


def test_azure_root_container_blob_is_reported_by_its_name(emu: Any, azurite: Any) -> None:
    # azure://v.mp4 is the blob 'v.mp4' of the root container ($root), as smart-open writes it; the
    # result named the file '' (basename_of read the URI's path, which is empty).
    service = azurite.service()
    root = service.get_container_client("$root")
    if not root.exists():
        root.create_container()
    asset = emu.control.add_asset(VIDEO, "z.mp4", "video/mp4")
    try:
        result = run(
            asset_id=asset["asset_id"], destination="azure://v.mp4", destination_conn_id=azurite.conn_id
        )
        assert root.get_blob_client("v.mp4").download_blob().readall() == VIDEO
        assert result["uri"] == "azure://v.mp4" and result["filename"] == "v.mp4"
    finally:
        root.delete_container()


def test_azure_writer_never_clobbers_when_asked_not_to(azurite: Any, azure_container: str) -> None:
    # The block list was committed over a blob that appeared meanwhile (the last writer won).
    uri = f"azure://{azure_container}/taken.bin"
    blob = azurite.service().get_blob_client(azure_container, "taken.bin")
    with pytest.raises(DestinationTaken), atomic_writer(uri, conn_id=azurite.conn_id, replace=False) as out:
        out.write(BIG)
        blob.upload_blob(b"theirs")
    assert blob.download_blob().readall() == b"theirs"
    with atomic_writer(f"azure://{azure_container}/free.bin", conn_id=azurite.conn_id, replace=False) as out:
        out.write(b"mine")  # a free name is still written
    assert destination_exists(f"azure://{azure_container}/free.bin", conn_id=azurite.conn_id) == 4


def test_azure_atomic_writer_commits_nothing_on_error(azurite: Any, azure_container: str) -> None:
    uri = f"azure://{azure_container}/partial.bin"
    with pytest.raises(RuntimeError), atomic_writer(uri, conn_id=azurite.conn_id) as out:
        out.write(BIG)
        raise RuntimeError("boom")
    assert destination_exists(uri, conn_id=azurite.conn_id) is None


@pytest.mark.parametrize(("encoded", "name"), [("what%3F.mp4", "what?.mp4"), ("100%2541.mp4", "100%41.mp4")])
def test_sftp_percent_encoded_names(emu: Any, sshd: Any, encoded: str, name: str) -> None:
    # The temporary file's URI was built from the decoded name: 'what?.mp4' cut it to '.what' (left
    # behind for good, the download failing with 'No such file' after it was billed, on every retry),
    # '%41' became 'A'. The probe of a folder was built from its decoded path the same way.
    asset = emu.control.add_asset(VIDEO, "x.mp4", "video/mp4")
    folder = sshd.root / f"per%41cent-{len(name)}"  # its URI says %2541 for '%41'
    folder.mkdir()
    uri = sshd.uri(f"{sshd.root}/per%2541cent-{len(name)}/{encoded}")
    result = run(asset_id=asset["asset_id"], destination=uri, destination_conn_id=sshd.conn_id)
    assert (folder / name).read_bytes() == VIDEO
    assert files_in(folder) == [name]
    again = run(asset_id=asset["asset_id"], destination=uri, destination_conn_id=sshd.conn_id)
    assert again["skipped"] is True and again["sha256"] == result["sha256"]
    assert emu.control.count("v2_download") == 1


@pytest.mark.parametrize("key", ["in/take#2.mp4", "in/what?.mp4"])
def test_s3_key_with_a_hash_or_question_mark_is_reported_as_written(
    emu: Any, moto_s3_server: Any, s3_bucket: str, key: str
) -> None:
    # smart-open writes the key as given, '#' and '?' included; the result's uri and filename were
    # read as a URL's (s3://…/in/take, take; s3://…/in/what?***, what): a later task reading the
    # XCom went to another object.
    asset = emu.control.add_asset(VIDEO, "x.mp4", "video/mp4")
    uri = f"s3://{s3_bucket}/{key}"
    result = run(asset_id=asset["asset_id"], destination=uri, destination_conn_id=moto_s3_server.conn_id)
    assert [o["Key"] for o in moto_s3_server.client().list_objects_v2(Bucket=s3_bucket)["Contents"]] == [key]
    assert result["uri"] == uri
    assert result["filename"] == key.rsplit("/", 1)[1]


def test_s3_single_put_writer_never_clobbers_and_says_so(moto_s3_server: Any, s3_bucket: str) -> None:
    # multipart_upload=False: smart-open commits with one PutObject (If-None-Match: *) and wraps
    # its ClientError in ValueError("the bucket ... does not exist, or is forbidden for access"):
    # a lost race was told as a missing bucket, never as DestinationTaken (the download's
    # same-bytes check after a race never ran).
    from memories_provider.storage.destinations import DestinationTaken

    uri = f"s3://{s3_bucket}/taken-once.bin"
    client = moto_s3_server.client()
    client.put_object(Bucket=s3_bucket, Key="taken-once.bin", Body=b"first")
    single = {"multipart_upload": False}
    with (
        pytest.raises(DestinationTaken),
        atomic_writer(uri, conn_id=moto_s3_server.conn_id, transport_params=single, replace=False) as out,
    ):
        out.write(b"second")
    assert client.get_object(Bucket=s3_bucket, Key="taken-once.bin")["Body"].read() == b"first"
