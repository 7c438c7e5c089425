"""MemoriesUploadOperator against the emulator over real sockets: sources, validation, retries, deferral."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import socket
from datetime import datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pendulum
import pytest
from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowFailException,
    AirflowTaskTimeout,
    TaskDeferred,
)
from connections import use_emulator_conn
from local_http import LocalServer, folder_handler
from status_waits import after_first_status_check

from memories_provider.client import (
    MemoriesConnectionError,
    MemoriesRateLimitError,
    MemoriesRouteNotFoundError,
    Video,
)
from memories_provider.hooks.memories import MemoriesHook
from memories_provider.operators.upload import MAX_TAG_CONFIRMATIONS, MemoriesUploadOperator, tagged_video

VIDEO = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40


class _TaskInstance:
    """The slice of Airflow's runtime task instance the operator touches (for direct execute())."""

    def __init__(self, try_number: int = 1) -> None:
        self.dag_id, self.task_id, self.run_id, self.map_index = "dag", "upload", "run-1", -1
        self.try_number = try_number
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value


def run(context: dict | None = None, **kwargs: Any) -> tuple[str, _TaskInstance]:
    ti = _TaskInstance()
    ctx = context or {"ti": ti, "task_state_store": Store()}
    return MemoriesUploadOperator(task_id="upload", **kwargs).execute(ctx), ctx["ti"]


@pytest.fixture
def video(tmp_path: Path) -> Path:
    path = tmp_path / "clip.mp4"
    path.write_bytes(VIDEO)
    return path


def stored(emu: Any) -> list[dict]:
    return emu.control.videos()


class Store(dict):
    """A task state store (Airflow >= 3.3) in memory."""

    def set(self, key: str, value: Any) -> None:
        self[key] = value

    def delete(self, key: str) -> None:
        self.pop(key, None)


#: The keys of XCom ``upload_result``, whether the video was uploaded or reused.
RESULT_KEYS = {"video_no", "video_name", "status", "upload_time", "source", "reused"}


# ---------------------------------------------------------------------------- sources


def test_local_path_upload_returns_video_no_and_pushes_result(emu: Any, video: Path) -> None:
    video_no, ti = run(source=str(video), tags=["cam-1"], camera_model="GoPro", unique_id="team")
    [v] = stored(emu)
    assert v["video_no"] == video_no
    assert v["size"] == len(VIDEO) and v["filename"] == "clip.mp4"
    assert "cam-1" in v["tags"] and any(t.startswith("airflow-") for t in v["tags"])
    result = ti.xcom["upload_result"]
    assert result["video_no"] == video_no and result["reused"] is False and result["source"] == str(video)
    assert set(result) == RESULT_KEYS and result["upload_time"] == v["create_time"]


def test_tags_a_template_rendered_as_text_are_read_back_as_the_list(emu: Any, video: Path) -> None:
    # tags="{{ dag_run.conf['tags'] }}" without render_template_as_native_obj renders "['cam-1', 'night']";
    # it was sent as one tag of that text. "[draft]" is no list: it stays one tag.
    run(source=str(video), tags="['cam-1', 'night']")
    [v] = stored(emu)
    assert {"cam-1", "night"} <= set(v["tags"]) and "['cam-1', 'night']" not in v["tags"]
    from memories_provider.operators._upload_args import rendered_tags

    assert rendered_tags("[draft]") == "[draft]" and rendered_tags(["a"]) == ["a"]


def test_file_uri_and_compressed_looking_name(emu: Any, tmp_path: Path) -> None:
    path = tmp_path / "a b.MOV"
    path.write_bytes(VIDEO)
    video_no, _ = run(source=path.as_uri())
    [v] = stored(emu)
    assert (v["video_no"], v["size"], v["filename"]) == (video_no, len(VIDEO), "a b.MOV")


def test_s3_source(emu: Any, moto_s3_server: Any, s3_bucket: str) -> None:
    moto_s3_server.client().put_object(Bucket=s3_bucket, Key="in/clip.mp4", Body=VIDEO)
    run(source=f"s3://{s3_bucket}/in/clip.mp4", source_conn_id=moto_s3_server.conn_id)
    [v] = stored(emu)
    assert v["size"] == len(VIDEO)


@pytest.mark.parametrize("with_conn", [True, False], ids=["source_conn_id", "client_kwargs"])
def test_an_s3_source_is_looked_up_and_read_with_one_client(
    emu: Any, moto_s3_server: Any, s3_bucket: str, monkeypatch: pytest.MonkeyPatch, with_conn: bool
) -> None:
    """The pre-flight's size probe and the read share the client (two once: each built its own)."""
    from memories_provider.storage import credentials

    built: list[Any] = []
    for name in ("_s3_client", "_s3_default_client"):
        original = getattr(credentials, name)
        monkeypatch.setattr(credentials, name, lambda *a, _f=original: built.append(_f(*a)) or built[-1])
    moto_s3_server.client().put_object(Bucket=s3_bucket, Key="in/clip.mp4", Body=VIDEO)
    settings = {
        "endpoint_url": moto_s3_server.endpoint_url,
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
        "region_name": "us-east-1",
    }
    source = {"source": f"s3://{s3_bucket}/in/clip.mp4"}
    if with_conn:
        run(**source, source_conn_id=moto_s3_server.conn_id)
    else:
        run(**source, transport_params={"client_kwargs": {"S3.Client": settings}})
    [v] = stored(emu)
    assert v["size"] == len(VIDEO) and v["sha256"] == hashlib.sha256(VIDEO).hexdigest()
    assert len(built) == 1


def test_sftp_source(emu: Any, sshd: Any) -> None:
    path = sshd.root / "clip.mkv"
    path.write_bytes(VIDEO)
    run(source=sshd.uri(str(path)), source_conn_id=sshd.conn_id)
    [v] = stored(emu)
    assert (v["size"], v["filename"]) == (len(VIDEO), "clip.mkv")


def test_azure_source(emu: Any, azurite: Any, azure_container: str) -> None:
    from azure.storage.blob import BlobServiceClient

    BlobServiceClient.from_connection_string(azurite.connection_string).get_blob_client(
        azure_container, "clip.avi"
    ).upload_blob(VIDEO)
    run(source=f"azure://{azure_container}/clip.avi", source_conn_id=azurite.conn_id)
    [v] = stored(emu)
    assert (v["size"], v["filename"]) == (len(VIDEO), "clip.avi")


@pytest.fixture
def http_base(video: Path):
    with LocalServer(folder_handler(video.parent)) as server:
        yield server.url


def test_http_source_uses_upload_url(emu: Any, http_base: str) -> None:
    run(source=f"{http_base}/clip.mp4")
    assert emu.control.count("upload_url") == 1 and emu.control.count("upload") == 0
    [v] = stored(emu)
    assert v["size"] == len(VIDEO)


def test_http_source_streamed_through_on_request(emu: Any, http_base: str) -> None:
    run(source=f"{http_base}/clip.mp4", stream_http=True)
    assert emu.control.count("upload") == 1 and emu.control.count("upload_url") == 0
    assert stored(emu)[0]["size"] == len(VIDEO)


class _PresignedHandler(BaseHTTPRequestHandler):
    """Serves VIDEO like a presigned S3/GCS GET URL: HEAD is refused (403), a Range GET answered."""

    def log_message(self, *args: Any) -> None:
        pass

    def do_HEAD(self) -> None:
        self.send_response(403)
        self.end_headers()

    def do_GET(self) -> None:
        ranged = self.headers.get("Range") == "bytes=0-0"
        body = VIDEO[:1] if ranged else VIDEO
        self.send_response(206 if ranged else 200)
        if ranged:
            self.send_header("Content-Range", f"bytes 0-0/{len(VIDEO)}")
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def presigned_base():
    with LocalServer(_PresignedHandler) as server:
        yield f"127.0.0.1:{server.port}"


@pytest.mark.parametrize("stream_http", [False, True])
def test_presigned_http_source_is_uploaded_with_its_secrets_kept_out_of_xcom_logs_and_lineage(
    emu: Any, presigned_base: str, stream_http: bool, capsys: pytest.CaptureFixture, caplog: Any
) -> None:
    source = f"http://user:pa55word@{presigned_base}/in/clip.mp4?X-Amz-Signature=t0ken"
    op = MemoriesUploadOperator(task_id="upload", source=source, stream_http=stream_http)
    ti = _TaskInstance()
    video_no = op.execute({"ti": ti, "task_state_store": Store()})
    [v] = stored(emu)
    assert v["size"] == len(VIDEO)
    if not stream_http:
        assert v["source_url"] == source  # the service itself needs the token
    assert ti.xcom["upload_result"]["source"] == f"http://***@{presigned_base}/in/clip.mp4?***"
    captured = capsys.readouterr()
    logs = captured.out + captured.err + caplog.text
    assert video_no in logs and "pa55word" not in logs and "t0ken" not in logs
    if importlib.util.find_spec("airflow.providers.openlineage") is None:
        return

    class LineageTI:
        task_id = "upload"

        def xcom_pull(self, task_ids: str, key: str) -> Any:
            return video_no

    [dataset] = op.get_openlineage_facets_on_complete(LineageTI()).inputs
    assert (dataset.namespace, dataset.name) == (f"http://{presigned_base}", "/in/clip.mp4")


@pytest.mark.parametrize("stream_http", [False, True])
def test_an_unreachable_presigned_source_fails_without_its_signature_and_is_retried(
    emu: Any, stream_http: bool
) -> None:
    # requests quotes the URL it could not reach ("Max retries exceeded with url: /clip.mp4?
    # X-Amz-Signature=..."), and Airflow logs the traceback, causes included.
    import socket
    import traceback

    from leaks import leaks

    from memories_provider.storage.errors import StoreUnavailableError

    signature = "5f2b8c9e0d4a7f1b3c6e9a2d5f8b1c4e7a0d3f6b"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there: the connection is refused
    source = f"http://127.0.0.1:{port}/clip.mp4?X-Amz-Expires=600&X-Amz-Signature={signature}"
    with pytest.raises(StoreUnavailableError, match="cannot be reached") as info:
        run(source=source, stream_http=stream_http)
    assert not isinstance(info.value, AirflowFailException)  # the source's host may come back
    assert leaks("".join(traceback.format_exception(info.value)), signature) == []
    assert emu.control.request_log() == []


# ---------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"source": "{tmp}/clip.txt"}, "`source`"),
        ({"source": "{tmp}/missing.mp4"}, "`source`"),
        ({"source": "{tmp}/empty.mp4"}, "`source`"),
        ({"source": "{tmp}"}, "`source`"),
        # Named: before, the scheme's error did not say which parameter held it.
        ({"source": "ftp://host/clip.mp4"}, "`source`: unsupported URI scheme 'ftp'"),
        # smart-open (>= 9) has no s3u transport: the look-up failed with a bare AssertionError.
        ({"source": "s3u://b/clip.mp4"}, "`source`: unsupported URI scheme 's3u'"),
        # No bucket: 'gs:///clip.mp4' failed with an IndexError from the GCS library (retried).
        ({"source": "gs:///clip.mp4"}, "`source` 'gs:///clip.mp4' names no bucket"),
        ({"source": "s3:///clip.mp4"}, "`source` 's3:///clip.mp4' names no bucket"),
        # Not "does not exist": on a POSIX worker a Windows path is a file name in the working folder.
        ({"source": "C:\\videos\\clip.mp4"}, "is a Windows path"),
        ({"source": "D:/videos/clip.mp4"}, "`source` 'D:/videos/clip.mp4' is a Windows path"),
        ({"source": "\\\\nas\\share\\clip.mp4"}, "is a Windows path"),
        # 'file://videos/clip.mp4' (meant videos/clip.mp4) names the host 'videos': /clip.mp4 was read.
        ({"source": "file://videos/clip.mp4"}, "`source` 'file://videos/clip.mp4' names the host 'videos'"),
        ({"tags": [f"t{i}" for i in range(20)]}, "`tags`"),
        ({"tags": [""]}, "`tags`"),
        ({"callback": "https://example.com/" + "x" * 300}, "`callback`"),
        ({"callback": "not-a-url"}, "`callback`"),
        ({"camera_model": "x" * 201}, "`camera_model`"),
        ({"datetime_taken": "2024-05-01T13:45:00"}, "`datetime_taken`"),
        ({"datetime_taken": 1714571100}, "`datetime_taken`"),
        ({"latitude": 91.0, "longitude": 0.0}, "`latitude`"),
        ({"latitude": 0.0, "longitude": -181.0}, "`longitude`"),
        ({"latitude": "north", "longitude": 1.0}, "`latitude`"),
        ({"latitude": 1.0}, "`latitude` and `longitude`"),
        ({"unique_id": "  "}, "`unique_id`"),
        ({"transport_params": {"client": object()}}, "`transport_params`"),
        ({"tags": 5}, "`tags`"),
        ({"retain_original_video": "yes"}, "`retain_original_video`"),
        ({"video_transcription_prompt": 3}, "`video_transcription_prompt`"),
        ({"source": "http://127.0.0.1:9/clip.mp4", "source_conn_id": "aws_default"}, "`source_conn_id`"),
        # Not the environment's default credentials (S3Hook's fallback): the user named a connection.
        ({"source": "s3://b/clip.mp4", "source_conn_id": "no_such_conn"}, "`source_conn_id`='no_such_conn'"),
        ({"source": "sftp://127.0.0.1/clip.mp4", "source_conn_id": "no_such_conn"}, "`source_conn_id`"),
    ],
)
def test_bad_input_is_refused_before_any_request(emu: Any, video: Path, kwargs: dict, param: str) -> None:
    (video.parent / "empty.mp4").write_bytes(b"")
    (video.parent / "clip.txt").write_bytes(VIDEO)
    args = {"source": str(video), **kwargs}
    args["source"] = args["source"].format(tmp=video.parent)
    with pytest.raises(ValueError) as info:
        run(**args)
    assert param in str(info.value)
    assert emu.control.request_log() == []


def test_oversized_source_is_refused_from_its_size_alone(emu: Any, tmp_path: Path) -> None:
    big = tmp_path / "big.mp4"
    with open(big, "wb") as fh:
        fh.truncate(3 * 10**9 + 1)  # sparse: nothing is read to find this out (3 GB, read strictly)
    with pytest.raises(ValueError, match="at most 3000000000 bytes"):
        run(source=str(big))
    assert emu.control.request_log() == []


def test_twenty_tags_allowed_without_idempotency_and_datetimes_formatted(emu: Any, video: Path) -> None:
    run(
        source=str(video),
        tags=[f"t{i}" for i in range(20)],
        idempotent=False,
        datetime_taken=pendulum.datetime(2024, 5, 1, 13, 45, 0),
        latitude=48.85,
        longitude=2.35,
    )
    [v] = stored(emu)
    assert len([t for t in v["tags"] if t.startswith("t")]) == 20
    run(source=str(video), datetime_taken=datetime(2024, 5, 1, 13, 45), idempotent=False)
    run(source=str(video), datetime_taken="2024-05-01 13:45:00", idempotent=False)
    assert len(stored(emu)) == 3


def test_empty_source_fails_at_construction() -> None:
    with pytest.raises(ValueError, match="`source`"):
        MemoriesUploadOperator(task_id="t", source="")


# ---------------------------------------------------------------------------- retries & idempotency


def test_retry_after_an_accepted_but_unanswered_upload_reuses_the_video(emu: Any, video: Path) -> None:
    # Parse delay 0: the earlier video is PARSE when the retry lists it, so its tags are shown.
    # (While it is UNPARSE, see test_upload_lost_answer.py.)
    emu.control.inject_fault("upload", "accept_then_drop")
    ti = _TaskInstance()
    store = Store()
    with pytest.raises(MemoriesConnectionError):
        MemoriesUploadOperator(task_id="upload", source=str(video)).execute(
            {"ti": ti, "task_state_store": store}
        )
    [v] = stored(emu)  # the service kept (and billed) it
    [tag] = [t for t in v["tags"] if t.startswith("airflow-")]
    # Recorded before sending, with no answer: the retry knows what to look for, and from when.
    record = store["memories_video_no"]
    assert set(record) == {"tag", "size", "source_version", "started_ms"} and record["tag"] == tag
    inode = f"inode@{socket.gethostname()}"  # what tells this file from another
    assert set(record["source_version"]) == {"mtime_ns", inode}
    assert record["size"] == len(VIDEO) and record["started_ms"] <= v["create_time"]
    retry = _TaskInstance(try_number=2)
    video_no = MemoriesUploadOperator(task_id="upload", source=str(video)).execute(
        {"ti": retry, "task_state_store": store}
    )
    assert [v["video_no"] for v in stored(emu)] == [video_no]
    assert emu.control.count("upload") == 1
    # The same shape as a fresh upload's result, and remembered for the next retry.
    assert retry.xcom["upload_result"] == {
        "video_no": video_no,
        "video_name": v["video_name"],
        "status": v["status"],
        "upload_time": v["create_time"],
        "source": str(video),
        "reused": True,
    }
    assert store["memories_video_no"] == {
        "tag": tag,
        "size": len(VIDEO),
        "source_version": record["source_version"],
        "video_no": video_no,
    }


def test_tag_lookup_reuses_only_a_video_that_carries_the_tag(
    emu: Any, upload_video: Any, video: Path
) -> None:
    # A service that ignored the `tag` filter and omitted `tags` must not make a first attempt
    # "reuse" an unrelated video: listed videos are checked, and untagged ones confirmed.
    ours, _ = run(source=str(video))
    [tag] = [t for t in stored(emu)[0]["tags"] if t.startswith("airflow-")]
    other = upload_video(VIDEO, "other.mp4")
    hook = MemoriesHook()
    log = logging.getLogger("test")

    def listed(video_no: str, **fields: Any) -> Video:  # a list_videos item, as the service may send it
        return Video.from_api({"video_no": video_no, "status": "UNPARSE", **fields})

    def confirm(video_no: str) -> Video:
        return hook.get_video(video_no)

    assert tagged_video([listed(other)], tag, confirm, log) is None
    assert tagged_video([listed(other), listed(ours)], tag, confirm, log).video_no == ours
    assert emu.control.count("get_metadata") == 3
    assert tagged_video([listed(other, tags=["api"])], tag, confirm, log) is None  # tagged: no need to ask
    assert tagged_video([listed(ours, tags=[tag, "api"])], tag, confirm, log).video_no == ours
    assert emu.control.count("get_metadata") == 3
    assert tagged_video([listed("VI" + "4" * 18)], tag, confirm, log) is None  # gone since it was listed


def test_tag_lookup_never_reuses_on_doubt(caplog: pytest.LogCaptureFixture) -> None:
    asked: list[str] = []

    def tagless_metadata(video_no: str) -> Video:
        asked.append(video_no)
        return Video.from_api({"video_no": video_no})

    many = [Video.from_api({"video_no": f"VI{i}"}) for i in range(MAX_TAG_CONFIRMATIONS + 3)]
    assert tagged_video(many, "airflow-x", tagless_metadata, logging.getLogger("test")) is None
    assert asked == [v.video_no for v in many[:MAX_TAG_CONFIRMATIONS]]
    assert "tags are unknown; not reusing" in caplog.text


def test_an_infrastructure_404_is_not_taken_for_a_gone_video(emu: Any, video: Path) -> None:
    # Spec section 1: infrastructure errors (404/503/5xx) come with Spring-style bodies; not-found of
    # a video is undocumented (the emulator answers 0001). A 404 without a business code says the
    # route is missing, not that the recorded video is gone: uploading again would bill it twice.
    store = Store()
    first, _ = run({"ti": _TaskInstance(), "task_state_store": store}, source=str(video))
    emu.control.inject_fault("get_metadata", "http_404")
    with pytest.raises(AirflowException, match="not uploading it again"):
        run({"ti": _TaskInstance(try_number=2), "task_state_store": store}, source=str(video))
    assert emu.control.count("upload") == 1
    again, _ = run({"ti": _TaskInstance(try_number=3), "task_state_store": store}, source=str(video))
    assert again == first and emu.control.count("upload") == 1
    # Confirming an untagged candidate: the same 404 is raised, never read as "deleted since listed".
    hook = MemoriesHook()
    [tag] = [t for t in stored(emu)[0]["tags"] if t.startswith("airflow-")]
    emu.control.inject_fault("get_metadata", "http_404")
    with pytest.raises(MemoriesRouteNotFoundError):
        tagged_video([Video.from_api({"video_no": first})], tag, hook.get_video, logging.getLogger("t"))


def test_other_runs_and_sources_are_not_mistaken_for_a_retry(emu: Any, video: Path, tmp_path: Path) -> None:
    run(source=str(video))
    other = _TaskInstance()
    other.run_id = "run-2"
    MemoriesUploadOperator(task_id="upload", source=str(video)).execute(
        {"ti": other, "task_state_store": Store()}
    )
    second = tmp_path / "second.mp4"
    second.write_bytes(VIDEO)
    run(source=str(second))
    assert len(stored(emu)) == 3


def test_state_store_short_cuts_the_tag_lookup(emu: Any, video: Path) -> None:
    store = Store()
    first, _ = run({"ti": _TaskInstance(), "task_state_store": store}, source=str(video))
    [tag] = [t for t in stored(emu)[0]["tags"] if t.startswith("airflow-")]
    assert store["memories_video_no"]["video_no"] == first and store["memories_video_no"]["tag"] == tag
    again, _ = run({"ti": _TaskInstance(), "task_state_store": store}, source=str(video))
    assert again == first
    assert emu.control.count("list_videos") == 1  # only the first attempt looked the tag up
    assert emu.control.count("upload") == 1


def test_a_clear_after_the_source_was_replaced_uploads_the_new_file(emu: Any, video: Path) -> None:
    # The record says which video this task instance uploaded. When the file at the same URI has
    # another size now, that video does not hold it: reusing it would report success for other bytes.
    store = Store()
    first, _ = run({"ti": _TaskInstance(), "task_state_store": store}, source=str(video))
    same, _ = run({"ti": _TaskInstance(), "task_state_store": store}, source=str(video))
    assert same == first and emu.control.count("upload") == 1  # unchanged: reused, not paid again
    video.write_bytes(VIDEO + b"\x00" * 5)
    second, _ = run({"ti": _TaskInstance(), "task_state_store": store}, source=str(video))
    assert second != first
    assert {v["video_no"]: v["size"] for v in stored(emu)} == {first: len(VIDEO), second: len(VIDEO) + 5}
    assert store["memories_video_no"]["video_no"] == second
    third, _ = run({"ti": _TaskInstance(), "task_state_store": store}, source=str(video))
    assert third == second and emu.control.count("upload") == 2


def test_without_a_record_the_tag_lookup_passes_over_an_earlier_version_of_the_file(
    emu: Any, video: Path
) -> None:
    # No record (Airflow < 3.3 deletes it on success): a clear finds its video by tag, and a
    # tagged video of another size holds an earlier version of the file at this URI.
    first, _ = run(source=str(video))
    video.write_bytes(VIDEO + b"\x00" * 5)
    second, _ = run(source=str(video))
    again, _ = run(source=str(video))
    assert second != first and again == second
    assert {v["video_no"]: v["size"] for v in stored(emu)} == {first: len(VIDEO), second: len(VIDEO) + 5}


def test_a_record_from_an_older_version_is_still_honoured(emu: Any, upload_video: Any, video: Path) -> None:
    # Before the send record, the store held only {"video_no", "tag"} of an answered upload.
    from memories_provider.operators._upload_args import idempotency_tag

    earlier = upload_video(VIDEO)
    tag = idempotency_tag(dag_id="dag", task_id="upload", run_id="run-1", map_index=-1, source=str(video))
    store = Store(memories_video_no={"video_no": earlier, "tag": tag})
    again, ti = run({"ti": _TaskInstance(), "task_state_store": store}, source=str(video))
    assert again == earlier and ti.xcom["upload_result"]["reused"] is True
    assert emu.control.count("upload") == 1


def test_state_store_entry_of_another_source_is_not_reused(emu: Any, video: Path, tmp_path: Path) -> None:
    # The store outlives success: a task cleared after its source was fixed must upload the new file.
    store = Store()
    first, _ = run({"ti": _TaskInstance(), "task_state_store": store}, source=str(video))
    fixed = tmp_path / "fixed.mp4"
    fixed.write_bytes(VIDEO + b"fixed")
    second, ti = run({"ti": _TaskInstance(), "task_state_store": store}, source=str(fixed))
    assert second != first and ti.xcom["upload_result"]["reused"] is False
    assert {v["video_no"]: v["size"] for v in stored(emu)} == {first: len(VIDEO), second: len(VIDEO) + 5}
    assert store["memories_video_no"]["video_no"] == second


def test_rate_limited_upload_backs_off_and_retries(emu: Any, video: Path) -> None:
    emu.control.inject_fault("upload", "code_0429", count=2, retry_after=0.05)
    video_no, _ = run(source=str(video))
    assert [v["video_no"] for v in stored(emu)] == [video_no]
    assert [r["code"] for r in emu.control.request_log("upload")] == ["0429", "0429", "0000"]


def test_deferrable_waits_out_a_rate_limit_on_a_time_trigger(emu: Any, video: Path) -> None:
    from memories_provider.triggers.pause import MemoriesPauseTrigger

    emu.control.inject_fault("upload", "code_0429", count=1, retry_after=7)
    op = MemoriesUploadOperator(task_id="upload", source=str(video), deferrable=True)
    context = {"ti": _TaskInstance(), "task_state_store": Store()}
    with pytest.raises(TaskDeferred) as info:
        op.execute(context)
    deferred = info.value
    assert isinstance(deferred.trigger, MemoriesPauseTrigger)
    assert deferred.trigger.payload == {"rate_limited": 1} and not deferred.kwargs
    assert deferred.method_name == "execute_after_rate_limit"
    assert emu.control.count("upload") == 1  # rejected once, no sleeping retry in the worker
    assert context["task_state_store"] == {}  # refused, so certainly not billed: nothing to look for
    video_no = getattr(op, deferred.method_name)(context, deferred.trigger.payload)
    assert [v["video_no"] for v in stored(emu)] == [video_no]
    assert emu.control.count("list_videos") == 2  # a tag lookup each time, no candidate search


def test_a_deferred_rate_limit_wait_ends_within_the_execution_timeout(emu: Any, video: Path) -> None:
    # Airflow 3 neither counts a deferral against execution_timeout nor keeps what is left of it
    # for the resumed run: the pause itself must end within it, with a deferral timeout to match.
    from datetime import timedelta

    emu.control.inject_fault("upload", "code_0429", count=1, retry_after=7)
    op = MemoriesUploadOperator(
        task_id="upload", source=str(video), deferrable=True, execution_timeout=timedelta(seconds=600)
    )
    context = {"ti": _TaskInstance(), "task_state_store": Store()}
    with pytest.raises(TaskDeferred) as info:
        op.execute(context)
    deferred = info.value
    started = deferred.trigger.payload["started_at"]
    assert deferred.timeout is not None and deferred.timeout <= timedelta(seconds=600)
    assert deferred.trigger.fire_at < started + 600
    # The trigger fired after the execution_timeout (a busy triggerer): nothing more is sent.
    late = {**deferred.trigger.payload, "started_at": started - 601}
    with pytest.raises(AirflowTaskTimeout, match="execution_timeout"):
        op.execute_after_rate_limit(context, late)
    assert emu.control.count("upload") == 1


def test_a_rate_limit_wait_past_the_execution_timeout_is_not_made(emu: Any, video: Path) -> None:
    from datetime import timedelta

    # Retry-After 7 s, 5 s of execution_timeout left at most: deferring would end past it.
    emu.control.inject_fault("upload", "code_0429", count=1, retry_after=7)
    op = MemoriesUploadOperator(
        task_id="upload", source=str(video), deferrable=True, execution_timeout=timedelta(seconds=5)
    )
    with pytest.raises(MemoriesRateLimitError):
        op.execute({"ti": _TaskInstance(), "task_state_store": Store()})
    assert emu.control.count("upload") == 1 and stored(emu) == []


def test_a_rate_limit_wait_that_fits_the_execution_timeout_is_made_despite_the_spread(
    emu: Any, video: Path
) -> None:
    from datetime import timedelta

    # Retry-After 400 s, 410 s of execution_timeout: the wait fits. Spread above it (by up to a
    # quarter, 100 s) it mostly would not, and the task gave up the wait and failed with the 0429
    # ~90% of the time: the spread must stay within the time the Retry-After leaves.
    for _ in range(3):
        emu.control.inject_fault("upload", "code_0429", count=1, retry_after=400)
        op = MemoriesUploadOperator(
            task_id="upload", source=str(video), deferrable=True, execution_timeout=timedelta(seconds=410)
        )
        with pytest.raises(TaskDeferred) as info:
            op.execute({"ti": _TaskInstance(), "task_state_store": Store()})
        trigger = info.value.trigger
        assert trigger.payload["started_at"] + 400 <= trigger.fire_at < trigger.payload["started_at"] + 410
    assert stored(emu) == []


def test_rate_limits_exhausted_fail_with_the_typed_error(emu: Any, video: Path, monkeypatch) -> None:
    use_emulator_conn(monkeypatch, emu, max_retries=1)
    emu.control.inject_fault("upload", "code_0429", count=5, retry_after=0.01)
    with pytest.raises(MemoriesRateLimitError):
        run(source=str(video))
    assert stored(emu) == []


# ---------------------------------------------------------------------------- waiting for PARSE


def test_wait_for_parse_returns_when_parsed_and_fails_on_failed(emu: Any, video: Path) -> None:
    video_no, _ = run(source=str(video), wait_for_parse=True, poll_interval=0.05)
    assert stored(emu)[0]["status"] == "PARSE" and video_no
    emu.control.configure(fail_pattern="broken")
    broken = video.parent / "broken.mp4"
    broken.write_bytes(VIDEO)
    before = emu.control.count("list_videos")
    with pytest.raises(AirflowFailException, match=r"could not index VI\d+ is FAILED: .*fail_pattern"):
        run(source=str(broken), wait_for_parse=True, poll_interval=0.05, timeout=600, idempotent=False)
    assert emu.control.count("list_videos") == before + 1  # at once: no polling on until the timeout


def test_wait_for_parse_polls_through_a_transient_error(
    emu: Any, set_memories_conn: Any, video: Path
) -> None:
    set_memories_conn(max_retries=0)  # the client gives up at once: the wait itself must carry on
    emu.control.configure(parse_delay=0.2)
    emu.control.inject_fault("list_videos", "http_503")
    video_no, _ = run(source=str(video), wait_for_parse=True, poll_interval=0.05, idempotent=False)
    assert stored(emu)[0]["status"] == "PARSE" and video_no
    statuses = [r["http_status"] for r in emu.control.request_log("list_videos")]
    assert statuses[0] == 503 and len(statuses) >= 2


def test_a_key_rotated_during_the_wait_for_parse_is_read_again_not_failed(
    emu: Any, set_memories_conn: Any, video: Path
) -> None:
    # The video is paid for; the wait on the worker meets a rotated key (the connection holds the
    # new one, the old one revoked): it goes on with the connection as it is now, rather than
    # failing the task at once, unretried, for a key the connection no longer holds.
    emu.control.configure(parse_delay=3600)

    def rotate() -> None:
        set_memories_conn(max_retries=3, password="sk-rotated-key")
        emu.control.configure(api_keys=["sk-rotated-key"])
        emu.control.set_statuses([v["video_no"] for v in stored(emu)], "PARSE")

    with after_first_status_check(emu, rotate):
        video_no, _ = run(source=str(video), wait_for_parse=True, poll_interval=0.05, idempotent=False)
    assert [v["video_no"] for v in stored(emu)] == [video_no]
    assert emu.control.count("upload") == 1
    codes = [r["code"] for r in emu.control.request_log("list_videos")]
    assert codes.count("0401") == 1 and codes[-1] == "0000", codes


def test_a_connection_edited_during_the_wait_for_parse_keeps_the_scope_uploaded_to(
    emu: Any, set_memories_conn: Any, video: Path
) -> None:
    # The key rotated and the connection's default unique_id changed during the wait: the video
    # was uploaded to the old default, and is waited for there (as a deferred wait keeps the scope
    # the worker checked), not looked for in the new default until the timeout.
    emu.control.configure(parse_delay=3600)

    def rotate() -> None:
        set_memories_conn(max_retries=3, password="sk-rotated-key", unique_id="elsewhere")
        emu.control.configure(api_keys=["sk-rotated-key"])
        emu.control.set_statuses([v["video_no"] for v in stored(emu)], "PARSE")

    with after_first_status_check(emu, rotate):
        video_no, _ = run(
            source=str(video), wait_for_parse=True, poll_interval=0.05, idempotent=False, timeout=10
        )
    assert [v["video_no"] for v in stored(emu)] == [video_no]
    assert emu.control.count("upload") == 1
    codes = [r["code"] for r in emu.control.request_log("list_videos")]
    assert codes.count("0401") == 1 and codes[-1] == "0000", codes


def test_a_video_not_listed_yet_is_waited_for_until_the_timeout(emu: Any) -> None:
    # Just after our upload the service may not list the video yet: "not yet", not "unknown".
    hook = MemoriesHook()
    op = MemoriesUploadOperator(
        task_id="upload", source="x.mp4", poll_interval=0.05, timeout=0.3, deferrable=False
    )
    with pytest.raises(AirflowException, match=r"timed out after 0.3s.*not listed: VI4+") as info:
        op._wait_for_parse(hook, "VI" + "4" * 18, None)
    assert not isinstance(info.value, AirflowFailException)
    assert emu.control.count("list_videos") >= 2
    # Deferrable: handed to the trigger, told to keep waiting for a video not listed yet (see
    # test_a_video_not_listed_yet_keeps_a_missing_is_pending_wait_going), not failing it as unknown.
    op = MemoriesUploadOperator(
        task_id="upload", source="x.mp4", poll_interval=0.05, timeout=0.3, deferrable=True
    )
    with pytest.raises(TaskDeferred) as deferred:
        op._wait_for_parse(hook, "VI" + "4" * 18, None)
    assert deferred.value.trigger.missing_is_pending is True


def test_deferrable_wait_for_parse_defers_on_the_status_trigger(emu: Any, video: Path) -> None:
    from memories_provider.triggers.video_status import MemoriesVideoStatusTrigger

    emu.control.configure(parse_delay=3600)
    op = MemoriesUploadOperator(task_id="upload", source=str(video), wait_for_parse=True, deferrable=True)
    context = {"ti": _TaskInstance(), "task_state_store": Store()}
    with pytest.raises(TaskDeferred) as info:
        op.execute(context)
    trigger = info.value.trigger
    assert isinstance(trigger, MemoriesVideoStatusTrigger)
    [v] = stored(emu)
    assert trigger.video_nos == [v["video_no"]]
    assert emu.conn_json.split('"password": ')[1].split('"')[1] not in json.dumps(trigger.serialize()[1])
    event = {"status": "success", "message": "ok", "videos": [v]}
    assert op.execute_complete(context, event, **info.value.kwargs) == v["video_no"]
    assert context["task_state_store"]["memories_video_no"]["video_no"] == v["video_no"]


# ---------------------------------------------------------------------------- lineage


def test_openlineage_names_the_source_and_the_video(emu: Any, moto_s3_server: Any, s3_bucket: str) -> None:
    pytest.importorskip("airflow.providers.openlineage")
    moto_s3_server.client().put_object(Bucket=s3_bucket, Key="in/clip.mp4", Body=VIDEO)
    op = MemoriesUploadOperator(
        task_id="upload", source=f"s3://{s3_bucket}/in/clip.mp4", source_conn_id=moto_s3_server.conn_id
    )
    ti = _TaskInstance()
    video_no = op.execute({"ti": ti, "task_state_store": Store()})

    class LineageTI:
        task_id = "upload"

        def xcom_pull(self, task_ids: str, key: str) -> Any:
            return video_no if key == "return_value" else None

    lineage = op.get_openlineage_facets_on_complete(LineageTI())
    [source] = lineage.inputs
    assert (source.namespace, source.name) == (f"s3://{s3_bucket}", "in/clip.mp4")
    [output] = lineage.outputs
    assert output.name == f"video/default/{video_no}" and output.namespace.startswith("memories")


def test_openlineage_of_a_mapped_upload_names_its_own_video(emu: Any, tmp_path: Path) -> None:
    # Mapped (.expand(source=...)), ti.xcom_pull(task_ids=<own task_id>) returns every instance's
    # video on Airflow 3 (a list: XCom.get_all) and the first instance's on Airflow 2: not this one's.
    pytest.importorskip("airflow.providers.openlineage")
    videos = []
    for i in range(2):
        source = tmp_path / f"clip{i}.mp4"
        source.write_bytes(VIDEO + bytes([i]))
        op = MemoriesUploadOperator(task_id="upload", source=str(source))
        videos.append(op.execute({"ti": _TaskInstance(), "task_state_store": Store()}))
    assert videos[0] != videos[1]

    class MappedTI:
        task_id, map_index = "upload", 1

        def xcom_pull(self, task_ids: str, key: str = "return_value", **kwargs: Any) -> Any:
            return list(videos)

    [output] = op.get_openlineage_facets_on_complete(MappedTI()).outputs
    assert output.name == f"video/default/{videos[1]}"


def test_upload_reports_progress_up_to_the_full_size(emu: Any, tmp_path: Path, monkeypatch) -> None:
    from memories_provider.operators import upload

    calls: list[tuple[int, bool]] = []

    class Recording(upload.TransferProgress):
        def update(self, done: int, *, final: bool = False) -> None:
            calls.append((done, final))
            super().update(done, final=final)

    monkeypatch.setattr(upload, "TransferProgress", Recording)
    path = tmp_path / "three-mib.mp4"
    path.write_bytes(b"v" * (3 * 1024 * 1024 + 7))
    run(source=str(path))
    sent = [done for done, _ in calls]
    assert sent == sorted(sent) and len(sent) >= 3  # streamed in blocks, reported as they go
    assert calls[-1] == (3 * 1024 * 1024 + 7, True)


def test_a_refused_upload_of_a_rewritten_source_keeps_the_record_of_the_earlier_video(
    emu: Any, video: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A clear after the file was rewritten (same size) uploads again, its record over the earlier
    # one. A sure refusal (0429, out of retries) dropped that record, and with it what the earlier
    # video holds: the next clear found that video by its tag (sizes alone compared) and reused
    # it, reporting success for the first version's bytes. The earlier record is now put back.
    use_emulator_conn(monkeypatch, emu, max_retries=1)
    store = Store()
    first, _ = run({"ti": _TaskInstance(), "task_state_store": store}, source=str(video))
    newer = VIDEO[::-1]
    fresh = video.with_name("fresh.part")
    fresh.write_bytes(newer)
    os.replace(fresh, video)  # same size, another inode
    emu.control.inject_fault("upload", "code_0429", count=2, retry_after=0.01)
    with pytest.raises(MemoriesRateLimitError):
        run({"ti": _TaskInstance(), "task_state_store": store}, source=str(video))
    assert store["memories_video_no"]["video_no"] == first
    again, ti = run({"ti": _TaskInstance(), "task_state_store": store}, source=str(video))
    assert again != first and ti.xcom["upload_result"]["reused"] is False
    assert {v["video_no"]: v["size"] for v in stored(emu)} == {first: len(VIDEO), again: len(VIDEO)}
