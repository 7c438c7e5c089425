"""``gs://`` sources and destinations, for real, against an in-memory GCS emulator.

Credentials come from the library's default chain (``STORAGE_EMULATOR_HOST``), as they would from
the environment without ``source_conn_id``/``destination_conn_id``.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import pytest

from memories_provider.client import MemoriesIncompleteBodyError
from memories_provider.operators.download import MemoriesDownloadOperator
from memories_provider.operators.upload import MemoriesUploadOperator
from memories_provider.storage.destinations import DestinationTaken, atomic_writer, destination_exists

VIDEO = b"\x00\x00\x00\x18ftypmp42" + os.urandom(2 * 1024 * 1024 + 3)
BIG = os.urandom(3 * 1024 * 1024 + 5)  # several 256 KiB resumable chunks: a drop happens mid-upload
PART = {"min_part_size": 256 * 1024}


class _TaskInstance:
    dag_id, task_id, run_id, map_index, try_number = "dag", "upload", "run-1", -1, 1

    def __init__(self) -> None:
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value


def download(**kwargs: Any) -> dict[str, Any]:
    return MemoriesDownloadOperator(task_id="download", **kwargs).execute(context={})


def test_gcs_source_is_streamed_into_an_upload(emu: Any, gcs_server: Any, gcs_bucket: str) -> None:
    gcs_server.client().bucket(gcs_bucket).blob("in/clip.mp4").upload_from_string(VIDEO)
    # Not idempotent: outside a task run there is nowhere (state store, Variable) to record the send.
    video_no = MemoriesUploadOperator(
        task_id="upload", source=f"gs://{gcs_bucket}/in/clip.mp4", idempotent=False
    ).execute({"ti": _TaskInstance()})
    [stored] = emu.control.videos()
    assert stored["video_no"] == video_no
    assert stored["filename"] == "clip.mp4"
    assert stored["sha256"] == hashlib.sha256(VIDEO).hexdigest()


def test_empty_gcs_source_is_refused_from_its_metadata(emu: Any, gcs_server: Any, gcs_bucket: str) -> None:
    gcs_server.client().bucket(gcs_bucket).blob("in/empty.mp4").upload_from_string(b"")
    with pytest.raises(ValueError, match="source"):
        MemoriesUploadOperator(task_id="upload", source=f"gs://{gcs_bucket}/in/empty.mp4").execute(
            {"ti": _TaskInstance()}
        )
    assert emu.control.request_log() == []


def test_missing_gcs_source_fails_before_any_request(emu: Any, gcs_server: Any, gcs_bucket: str) -> None:
    with pytest.raises((ValueError, FileNotFoundError)):
        MemoriesUploadOperator(task_id="upload", source=f"gs://{gcs_bucket}/in/nope.mp4").execute(
            {"ti": _TaskInstance()}
        )
    assert emu.control.request_log() == []


def test_download_to_gcs_folder_then_skip_if_exists(
    emu: Any, upload_video: Any, gcs_server: Any, gcs_bucket: str
) -> None:
    video_no = upload_video(VIDEO)
    folder = f"gs://{gcs_bucket}/out/"
    result = download(video_no=video_no, destination=folder, transport_params=PART)
    # <video_no>.mp4: a download by video_no comes without Content-Disposition (the spec allows it;
    # the emulator leaves it out), so the name's extension is its Content-Type's.
    assert result["uri"] == f"{folder}{video_no}.mp4"
    blob = gcs_server.client().bucket(gcs_bucket).get_blob(f"out/{video_no}.mp4")
    assert blob is not None and blob.download_as_bytes() == VIDEO
    assert blob.metadata["memories-source"] == f"video/{video_no}"
    assert result["sha256"] == hashlib.sha256(VIDEO).hexdigest()

    downloads = emu.control.count("download")
    again = download(video_no=video_no, destination=result["uri"])
    assert again["skipped"] is True
    assert emu.control.count("download") == downloads  # sized from get_metadata: nothing billed


def test_dropped_body_leaves_no_gcs_object(emu: Any, gcs_server: Any, gcs_bucket: str) -> None:
    asset = emu.control.add_asset(BIG, "big.mp4", "video/mp4")
    emu.control.inject_fault("v2_download", "drop_mid_body", count=10)
    with pytest.raises(MemoriesIncompleteBodyError):
        download(asset_id=asset["asset_id"], destination=f"gs://{gcs_bucket}/big.mp4", transport_params=PART)
    assert list(gcs_server.client().bucket(gcs_bucket).list_blobs()) == []


def test_gcs_writer_never_clobbers_when_asked_not_to(
    gcs_preconditions: Any, gcs_server: Any, gcs_bucket: str
) -> None:
    # The upload was unconditional: an object that appeared while ours was written was replaced
    # (the last writer won), and both writers reported success.
    uri = f"gs://{gcs_bucket}/taken.bin"
    blob = gcs_server.client().bucket(gcs_bucket).blob("taken.bin")
    with pytest.raises(DestinationTaken), atomic_writer(uri, transport_params=PART, replace=False) as out:
        out.write(BIG)  # several chunks already sent
        blob.upload_from_string(b"theirs")
    assert blob.download_as_bytes() == b"theirs"
    # Sent from the upload's first request (GCS checks it when the object is created, at the last).
    [(method, first), *rest] = gcs_preconditions.uploads
    assert method == "POST" and first["ifGenerationMatch"] == ["0"]
    assert rest and all(query["ifGenerationMatch"] == ["0"] for _, query in rest)

    with atomic_writer(f"gs://{gcs_bucket}/free.bin", transport_params=PART, replace=False) as out:
        out.write(BIG)  # a free name is still written
    assert destination_exists(f"gs://{gcs_bucket}/free.bin") == len(BIG)
    gcs_preconditions.uploads.clear()
    with atomic_writer(uri, transport_params=PART) as out:  # replace=True: no condition
        out.write(b"ours")
    assert blob.download_as_bytes() == b"ours"
    assert gcs_preconditions.uploads and all(
        "ifGenerationMatch" not in q for _, q in gcs_preconditions.uploads
    )


# A password holding '/', '?' or '#' ends urlsplit's host inside it: smart-open reads the bucket
# 'user:pw' and the key 's3cret@<bucket>/in/clip.mp4', and no '@' was seen in the host.
@pytest.mark.parametrize(
    "userinfo", ["user:pw-s3cret@", "tok-s3cret@", "user:pw/s3cret@", "user:pw?s3cret@", "user:pw#s3cret@"]
)
def test_gcs_uri_carrying_credentials_is_refused_by_name(
    emu: Any, gcs_server: Any, gcs_bucket: str, userinfo: str
) -> None:
    # smart-open's GCS parse_uri takes 'user:pw@bucket' for the bucket: an object that exists was
    # said not to ('`source` ... does not exist') and the credentials went to the store in the
    # request's path. Only S3 URIs can carry credentials.
    gcs_server.client().bucket(gcs_bucket).blob("in/clip.mp4").upload_from_string(VIDEO)
    with pytest.raises(ValueError, match=r"`source` 'gs://\*\*\*@.*' carries credentials .*`source_conn_id`"):
        MemoriesUploadOperator(task_id="upload", source=f"gs://{userinfo}{gcs_bucket}/in/clip.mp4").execute(
            {"ti": _TaskInstance()}
        )
    with pytest.raises(ValueError, match=r"`destination` 'gs://\*\*\*@.*' carries credentials"):
        download(asset_id="re_1", destination=f"gs://{userinfo}{gcs_bucket}/out/v.mp4")
    assert emu.control.request_log() == []
