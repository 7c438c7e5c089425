"""Identity, not names: a download is "done" or "skipped" only for a file proven to hold its source.

Against the emulator (real sockets, real Airflow for the mapped run) and, where the service must
change a video under the same id or hold a body half-way, a small scripted service.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException
from connections import point_memories_default_at
from downloads import run_download as run
from local_http import LocalServer, QuietHandler

from memories_provider.operators.download import MemoriesDownloadOperator

SIZE = 48 * 1024


def visible(folder: Path) -> list[str]:
    """The files a user sees (no records, no temp files: those start with a dot)."""
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------- one folder, many sources


def test_same_name_same_size_different_videos_never_share_a_file(
    emu: Any, upload_video: Any, tmp_path: Path
) -> None:
    # Download A names the file ("may be absent on A": the strict emulator leaves it out by default).
    emu.control.configure(video_download_disposition=True)
    datas = [os.urandom(SIZE) for _ in range(3)]
    video_nos = [upload_video(data, "clip.mp4") for data in datas]
    folder = str(tmp_path / "out") + "/"
    for overwrite in (False, True):
        results = [run(video_no=v, destination=folder, overwrite=overwrite) for v in video_nos]
        assert [r["skipped"] for r in results] == [False, False, False]
        for video_no, data, result in zip(video_nos, datas, results, strict=True):
            assert result["uri"] == f"{folder}{video_no}.clip.mp4"
            assert Path(result["uri"]).read_bytes() == data  # each result points at its own bytes
            assert result["sha256"] == sha(data)
    assert visible(tmp_path / "out") == sorted(f"{v}.clip.mp4" for v in video_nos)
    downloads = emu.control.count("download")
    again = [run(video_no=v, destination=folder) for v in video_nos]
    assert all(r["skipped"] for r in again)
    assert [r["sha256"] for r in again] == [sha(d) for d in datas]  # from the records
    assert emu.control.count("download") == downloads


def test_file_destination_holding_another_video_names_both(
    emu: Any, upload_video: Any, tmp_path: Path
) -> None:
    first, second = upload_video(os.urandom(SIZE), "a.mp4"), upload_video(os.urandom(SIZE), "a.mp4")
    target = tmp_path / "a.mp4"
    run(video_no=first, destination=str(target))
    kept = target.read_bytes()
    with pytest.raises(AirflowFailException, match=f"holds video {first}, not video {second}"):
        run(video_no=second, destination=str(target))
    assert target.read_bytes() == kept
    assert emu.control.count("download") == 1


def test_a_replaced_video_is_not_skipped_as_the_old_one(emu: Any, upload_video: Any, tmp_path: Path) -> None:
    """The service's way to replace a video: delete it, upload the new file (same name, same size)."""
    # Download A names the file ("may be absent on A": the strict emulator leaves it out by default).
    emu.control.configure(video_download_disposition=True)
    old_data, new_data = os.urandom(SIZE), os.urandom(SIZE)
    old = upload_video(old_data, "clip.mp4")
    folder = str(tmp_path) + "/"
    run(video_no=old, destination=folder)
    requests.post(
        f"{emu.v1_url}/delete_videos",
        params={"unique_id": "default"},
        json=[old],
        headers={"Authorization": emu.api_key},
        timeout=30,
    ).raise_for_status()
    new = upload_video(new_data, "clip.mp4")
    result = run(video_no=new, destination=folder)
    assert result["skipped"] is False
    assert Path(result["uri"]).read_bytes() == new_data
    assert (tmp_path / f"{old}.clip.mp4").read_bytes() == old_data  # the old file is left alone


def test_a_file_changed_since_is_not_taken_for_the_video(emu: Any, upload_video: Any, tmp_path: Path) -> None:
    video_no = upload_video(os.urandom(SIZE), "clip.mp4")
    target = tmp_path / "v.mp4"
    run(video_no=video_no, destination=str(target))
    target.write_bytes(os.urandom(SIZE))  # same size, other bytes, same record beside it
    with pytest.raises(AirflowFailException, match="changed since"):
        run(video_no=video_no, destination=str(target))
    assert emu.control.count("download") == 1


def test_a_copied_folder_is_still_proven_by_its_bytes(emu: Any, upload_video: Any, tmp_path: Path) -> None:
    data = os.urandom(SIZE)
    video_no = upload_video(data, "clip.mp4")
    run(video_no=video_no, destination=str(tmp_path / "out") + "/")
    shutil.copytree(tmp_path / "out", tmp_path / "copy")  # new inodes and mtimes: the stat no longer matches
    result = run(video_no=video_no, destination=str(tmp_path / "copy") + "/")
    assert result["skipped"] is True and result["sha256"] == sha(data)
    assert emu.control.count("download") == 1


def test_overwrite_replaces_what_is_there(emu: Any, upload_video: Any, tmp_path: Path) -> None:
    first, second = os.urandom(SIZE), os.urandom(SIZE)
    a, b = upload_video(first, "a.mp4"), upload_video(second, "b.mp4")
    target = tmp_path / "v.mp4"
    run(video_no=a, destination=str(target))
    result = run(video_no=b, destination=str(target), overwrite=True)
    assert target.read_bytes() == second and result["sha256"] == sha(second)
    again = run(video_no=b, destination=str(target))  # the record was replaced with the file
    assert again["skipped"] is True
    assert visible(tmp_path) == ["v.mp4"] and hidden(tmp_path) == [".v.mp4.memories.json"]


@pytest.mark.parametrize(
    ("served", "name"),
    [
        ("CON", "_CON"),
        ("nul.mp4", "_nul.mp4"),
        ("com1.tar.gz", "_com1.tar.gz"),
        ("LPT9", "_LPT9"),
        ("a.mp4. ", "a.mp4"),
    ],
)
def test_windows_reserved_names_are_sanitised(emu: Any, tmp_path: Path, served: str, name: str) -> None:
    from memories_provider.storage.destinations import sanitize_filename

    assert sanitize_filename(served, "x") == name
    asset = emu.control.add_asset(b"data", served, "video/mp4")
    target = tmp_path / "in" / "file"
    result = run(asset_id=asset["asset_id"], destination=str(target.parent) + "/")
    assert result["filename"] == f"{asset['asset_id']}.{name}"


@pytest.mark.parametrize(
    ("ids", "match"),
    [
        ({"asset_id": "."}, "`asset_id`"),
        ({"asset_id": ".."}, "`asset_id`"),
        ({"asset_id": "re_1/../re_2"}, "`asset_id`"),
        ({"video_no": ".."}, "`video_no`"),
        ({"video_no": "VI000000000000000001/x"}, "`video_no`"),
        ({"bucket": "..", "blob": "a.mp4"}, "`bucket`"),
        ({"bucket": "b/c", "blob": "a.mp4"}, "`bucket`"),
        ({"bucket": "b", "blob": "a/../b.mp4"}, "`blob`"),
        ({"bucket": "b", "blob": "/a.mp4"}, "`blob`"),
        ({"bucket": "b", "blob": "a//b.mp4"}, "`blob`"),
    ],
)
def test_unsafe_ids_fail_before_any_request(
    emu: Any, tmp_path: Path, ids: dict[str, str], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        MemoriesDownloadOperator(task_id="t", destination=str(tmp_path / "x.mp4"), **ids)
    op = MemoriesDownloadOperator(task_id="t", destination=str(tmp_path / "x.mp4"), video_no="{{ x }}")
    op.video_no, op.asset_id, op.bucket, op.blob = (
        ids.get(k) for k in ("video_no", "asset_id", "bucket", "blob")
    )
    with pytest.raises(ValueError, match=match):  # as rendered from a template
        op.execute(context={})
    assert emu.control.request_log() == []


@pytest.mark.parametrize(
    ("ids", "match"),
    [
        # Spec: a video id is 'VI' + 18 digits, an asset id 're_' + digits. Before, only the sensor
        # checked: the download asked get_metadata (or the v2 download) for these, and the service
        # refused them after a call spent on its rate limit.
        ({"video_no": "VI1"}, r"`video_no` must be a video id \('VI' and 18 digits"),
        ({"video_no": "vi568102998803353600"}, r"`video_no` must be a video id"),
        ({"video_no": "VI5681029988033536001"}, r"`video_no` must be a video id"),
        ({"asset_id": "re_"}, r"`asset_id` must be an asset id \('re_' and digits"),
        ({"asset_id": "asset-7"}, r"`asset_id` must be an asset id"),
    ],
)
def test_malformed_ids_fail_before_any_request(
    emu: Any, tmp_path: Path, ids: dict[str, str], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        MemoriesDownloadOperator(task_id="t", destination=str(tmp_path / "x.mp4"), **ids)
    op = MemoriesDownloadOperator(task_id="t", destination=str(tmp_path / "x.mp4"), video_no="{{ x }}")
    op.video_no, op.asset_id = ids.get("video_no"), ids.get("asset_id")
    with pytest.raises(ValueError, match=match):  # as rendered from a template
        op.execute(context={})
    assert emu.control.request_log() == []


def test_a_rendered_id_is_taken_without_the_whitespace_around_it(
    emu: Any, upload_video: Any, tmp_path: Path
) -> None:
    # The sensor strips a rendered id ("{{ ... }}\n" in a multi-line template); the download did
    # not, and the service refused " VI..." as no video id.
    video_no = upload_video(b"x" * 10)
    result = run(video_no=f" {video_no}\n", destination=str(tmp_path / "v.mp4"))
    assert result["skipped"] is False and (tmp_path / "v.mp4").read_bytes() == b"x" * 10


@pytest.fixture(params=["s3", "gs"])
def remote_folder(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any], Any]:
    """(folder URI, operator kwargs, ``read(uri) -> bytes``) in moto S3 or the GCS emulator."""
    if request.param == "s3":
        moto = request.getfixturevalue("moto_s3_server")
        bucket = request.getfixturevalue("s3_bucket")
        client = moto.client()

        def read_s3(uri: str) -> bytes:
            return client.get_object(Bucket=bucket, Key=uri.split(f"{bucket}/", 1)[1])["Body"].read()

        return f"s3://{bucket}/out/", {"destination_conn_id": moto.conn_id}, read_s3
    gcs = request.getfixturevalue("gcs_server")
    bucket_name = request.getfixturevalue("gcs_bucket")
    gcs_bucket = gcs.client().bucket(bucket_name)

    def read_gs(uri: str) -> bytes:
        return gcs_bucket.blob(uri.split(f"{bucket_name}/", 1)[1]).download_as_bytes()

    return f"gs://{bucket_name}/out/", {}, read_gs


def test_remote_folder_keeps_sources_apart_and_skips_by_record(
    emu: Any, upload_video: Any, remote_folder: tuple[str, dict[str, Any], Any]
) -> None:
    folder, settings, read = remote_folder
    datas = [os.urandom(SIZE) for _ in range(4)]
    video_nos = [upload_video(data, "clip.mp4") for data in datas]  # one name, one size, four videos
    results = [run(video_no=v, destination=folder, **settings) for v in video_nos]
    assert len({r["uri"] for r in results}) == 4
    for data, result in zip(datas, results, strict=True):
        assert read(result["uri"]) == data and result["sha256"] == sha(data)
    again = [run(video_no=v, destination=folder, **settings) for v in video_nos]
    assert [r["skipped"] for r in again] == [True] * 4
    assert [r["uri"] for r in again] == [r["uri"] for r in results]
    assert emu.control.count("download") == 4
    # A file whose record names another video is never taken for this one.
    with pytest.raises(AirflowFailException, match=f"holds video {video_nos[0]}, not video {video_nos[1]}"):
        run(video_no=video_nos[1], destination=results[0]["uri"], **settings)
    assert emu.control.count("download") == 4


# ---------------------------------------------------------------------------- 50 videos, one mapped task


def _mapped_download_dag(dag_id: str, video_nos: list[str], folder: str) -> Any:
    from airflow.providers.common.compat.sdk import DAG, task

    with DAG(dag_id, schedule=None, start_date=datetime.datetime(2025, 1, 1), catchup=False) as dag:

        @task
        def pick() -> list[str]:
            return video_nos

        MemoriesDownloadOperator.partial(task_id="download", destination=folder).expand(video_no=pick())
    return dag


def _results(dagrun: Any) -> list[dict[str, Any]]:
    tis = sorted(
        (ti for ti in dagrun.get_task_instances() if ti.task_id == "download"), key=lambda t: t.map_index
    )
    return [ti.xcom_pull(task_ids="download", map_indexes=ti.map_index) for ti in tis]


def test_fifty_videos_ten_sharing_a_name_mapped_into_one_folder_twice(
    emu: Any, upload_video: Any, run_dag: Any, tmp_path: Path
) -> None:
    # Download A names the file ("may be absent on A": the strict emulator leaves it out by default).
    emu.control.configure(video_download_disposition=True)
    datas = [os.urandom(SIZE) for _ in range(50)]
    names = ["clip.mp4" if i < 10 else f"v{i:02d}.mp4" for i in range(50)]
    video_nos = [upload_video(data, name) for data, name in zip(datas, names, strict=True)]
    stored = {v["video_no"]: v["sha256"] for v in emu.control.videos()}
    folder = tmp_path / "out"
    dag_id = f"download_fifty_{os.getpid()}_{video_nos[0][-6:]}"

    first = run_dag(_mapped_download_dag(dag_id, video_nos, f"{folder}/"))
    assert str(first.state).endswith("success"), first.state
    files = visible(folder)
    assert len(files) == 50 == len(set(files))
    for video_no, data, name in zip(video_nos, datas, names, strict=True):
        on_disk = (folder / f"{video_no}.{name}").read_bytes()
        assert sha(on_disk) == sha(data) == stored[video_no]
    results = _results(first)
    assert [r["skipped"] for r in results] == [False] * 50
    assert [r["sha256"] for r in results] == [stored[v] for v in video_nos]
    assert emu.control.count("download") == 50

    second = run_dag(_mapped_download_dag(dag_id + "_again", video_nos, f"{folder}/"))
    assert str(second.state).endswith("success"), second.state
    assert [r["skipped"] for r in _results(second)] == [True] * 50
    assert [r["sha256"] for r in _results(second)] == [stored[v] for v in video_nos]
    assert emu.control.count("download") == 50  # the second run sent no download request
    assert visible(folder) == files


# ---------------------------------------------------------------------------- a scripted service


class ScriptedService(LocalServer):
    """A memories.ai stand-in on 127.0.0.1: ``get_metadata`` and ``POST download`` for the videos in
    :attr:`videos` (``{"data", "create_time", "blob"}``); for a video in :attr:`halfway`, half its
    body is sent, then the callback runs (in the server's thread), then the rest is sent."""

    def __init__(self) -> None:
        self.videos: dict[str, dict[str, Any]] = {}
        self.halfway: dict[str, Any] = {}
        self.downloads: list[str] = []
        service = self

        class Handler(QuietHandler):
            def _envelope(self, data: Any) -> None:
                body = json.dumps({"code": "0000", "msg": "success", "data": data}).encode()
                self.send_body(200, {"Content-Type": "application/json"}, body)

            def do_GET(self) -> None:
                video_no = parse_qs(urlsplit(self.path).query).get("video_no", [""])[0]
                video = service.videos[video_no]
                meta = {
                    "video_no": video_no,
                    "size": len(video["data"]),
                    "status": "PARSE",
                    "create_time": video["create_time"],
                    "bucket": "b",
                    "blob": video["blob"],
                }
                self._envelope(meta)

            def do_POST(self) -> None:
                request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                video_no = request["video_no"]
                service.downloads.append(video_no)
                data = service.videos[video_no]["data"]
                self.send_response(200)
                self.send_header("Content-Type", "video/mp4")
                self.send_header("Content-Disposition", 'attachment; filename="clip.mp4"')
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                callback = service.halfway.pop(video_no, None)
                if callback is None:
                    self.wfile.write(data)
                    return
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                callback()
                self.wfile.write(data[len(data) // 2 :])

        super().__init__(Handler)

    def add(self, video_no: str, data: bytes, create_time: int = 1, blob: str = "videos/x/clip.mp4") -> None:
        self.videos[video_no] = {"data": data, "create_time": create_time, "blob": blob}


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> Iterator[ScriptedService]:
    with ScriptedService() as service:
        point_memories_default_at(monkeypatch, service.url, max_retries=0)
        yield service


@pytest.mark.parametrize("change", [{"create_time": 2}, {"blob": "videos/y/clip.mp4"}])
def test_a_video_the_service_changed_is_downloaded_again(
    scripted: ScriptedService, tmp_path: Path, change: dict[str, Any]
) -> None:
    old, new = os.urandom(SIZE), os.urandom(SIZE)  # same size: only the service's facts can tell
    scripted.add("VI000000000000000001", old)
    folder = str(tmp_path) + "/"
    run(video_no="VI000000000000000001", destination=folder)
    scripted.add("VI000000000000000001", new, **{"create_time": 1, "blob": "videos/x/clip.mp4", **change})
    result = run(video_no="VI000000000000000001", destination=folder)
    assert result["skipped"] is False
    assert (tmp_path / "VI000000000000000001.clip.mp4").read_bytes() == new
    assert scripted.downloads == ["VI000000000000000001", "VI000000000000000001"]
    again = run(video_no="VI000000000000000001", destination=folder)  # and the new record holds
    assert again["skipped"] is True and scripted.downloads == ["VI000000000000000001", "VI000000000000000001"]


def test_the_documented_limit_same_facts_other_bytes_is_skipped(
    scripted: ScriptedService, tmp_path: Path
) -> None:
    """Bytes swapped service-side under the same id, size, create_time, bucket and blob: nothing short
    of a (billed) download can tell, so the skip holds. README: use overwrite=True to force."""
    scripted.add("VI000000000000000001", os.urandom(SIZE))
    run(video_no="VI000000000000000001", destination=str(tmp_path / "v.mp4"))
    scripted.add("VI000000000000000001", os.urandom(SIZE))
    assert run(video_no="VI000000000000000001", destination=str(tmp_path / "v.mp4"))["skipped"] is True
    assert (
        run(video_no="VI000000000000000001", destination=str(tmp_path / "v.mp4"), overwrite=True)["skipped"]
        is False
    )
    assert scripted.downloads == ["VI000000000000000001", "VI000000000000000001"]


_OTHER_WORKER = """
import json, sys
from memories_provider.operators.download import MemoriesDownloadOperator
try:
    result = MemoriesDownloadOperator(task_id="other", **json.loads(sys.argv[1])).execute(context={})
except Exception as err:
    result = {"error": f"{type(err).__name__}: {err}"}
print(json.dumps(result))
"""


def _other_worker(outcome: dict[str, Any], **kwargs: Any) -> Any:
    """A callback running a download in another process (another worker) to completion."""

    def run_it() -> None:
        proc = subprocess.run(
            [sys.executable, "-c", _OTHER_WORKER, json.dumps(kwargs)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        outcome.update(json.loads(proc.stdout.strip().splitlines()[-1]))

    return run_it


def test_two_videos_racing_for_one_file_name(scripted: ScriptedService, tmp_path: Path) -> None:
    first, second = os.urandom(SIZE), os.urandom(SIZE)
    scripted.add("VI000000000000000001", first)
    scripted.add("VI000000000000000002", second)
    target = tmp_path / "v.mp4"
    other: dict[str, Any] = {}
    # VI…01 finds the name free, and while half its body is out another worker writes VI…02 there.
    scripted.halfway["VI000000000000000001"] = _other_worker(
        other, video_no="VI000000000000000002", destination=str(target)
    )
    with pytest.raises(
        AirflowFailException, match="created meanwhile by another writer and holds video VI000000000000000002"
    ):
        run(video_no="VI000000000000000001", destination=str(target))
    assert other["skipped"] is False and other["sha256"] == sha(second)
    assert target.read_bytes() == second  # not clobbered
    assert visible(tmp_path) == ["v.mp4"] and hidden(tmp_path) == [".v.mp4.memories.json"]


def test_two_downloads_of_one_video_racing_both_succeed(scripted: ScriptedService, tmp_path: Path) -> None:
    data = os.urandom(SIZE)
    scripted.add("VI000000000000000001", data)
    target = tmp_path / "v.mp4"
    other: dict[str, Any] = {}
    scripted.halfway["VI000000000000000001"] = _other_worker(
        other, video_no="VI000000000000000001", destination=str(target)
    )
    result = run(video_no="VI000000000000000001", destination=str(target))
    assert "error" not in other, other
    assert result["sha256"] == other["sha256"] == sha(data)
    assert target.read_bytes() == data
    assert visible(tmp_path) == ["v.mp4"]
    assert scripted.downloads == ["VI000000000000000001", "VI000000000000000001"]


def test_two_videos_racing_for_one_s3_key(
    scripted: ScriptedService, moto_s3_server: Any, s3_bucket: str
) -> None:
    first, second = os.urandom(SIZE), os.urandom(SIZE)
    scripted.add("VI000000000000000001", first)
    scripted.add("VI000000000000000002", second)
    uri = f"s3://{s3_bucket}/v.mp4"
    settings = {"destination_conn_id": moto_s3_server.conn_id}
    other: dict[str, Any] = {}
    scripted.halfway["VI000000000000000001"] = _other_worker(
        other, video_no="VI000000000000000002", destination=uri, **settings
    )
    with pytest.raises(
        AirflowFailException, match="created meanwhile by another writer and holds video VI000000000000000002"
    ):
        run(video_no="VI000000000000000001", destination=uri, **settings)
    assert other["sha256"] == sha(second)
    client = moto_s3_server.client()
    assert client.get_object(Bucket=s3_bucket, Key="v.mp4")["Body"].read() == second
    assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []


@pytest.mark.parametrize(
    "sidecar",
    [
        b"[" * 50_000,  # nested past the JSON decoder's recursion limit
        b'{"version": 1, "memories-source": ' + b"[" * 50_000,
        b"\xff\xfe not utf-8",
        json.dumps({"version": 2, "memories-source": "video/X", "stat": {}}).encode(),
        json.dumps({"version": 1, "memories-source": ["video/X"], "stat": {}}).encode(),
    ],
)
def test_a_hostile_record_is_no_record(emu: Any, upload_video: Any, tmp_path: Path, sidecar: bytes) -> None:
    video_no = upload_video(os.urandom(SIZE), "clip.mp4")
    target = tmp_path / "v.mp4"
    run(video_no=video_no, destination=str(target))
    (tmp_path / ".v.mp4.memories.json").write_bytes(sidecar)
    with pytest.raises(AirflowFailException, match="with no record of what it holds"):
        run(video_no=video_no, destination=str(target))
    assert emu.control.count("download") == 1


def test_two_videos_racing_for_one_gcs_object(
    scripted: ScriptedService, gcs_preconditions: Any, gcs_server: Any, gcs_bucket: str
) -> None:
    # The GCS upload was unconditional: both downloads reported success and the slower replaced the
    # object the faster had written (and reported as its own). Now the upload carries
    # ifGenerationMatch=0 and the slower is refused by the store as on S3 and Azure (the emulator
    # ignores the precondition: gcs_preconditions answers at its HTTP layer as GCS does).
    first, second = os.urandom(SIZE), os.urandom(SIZE)
    scripted.add("VI000000000000000001", first)
    scripted.add("VI000000000000000002", second)
    uri = f"gs://{gcs_bucket}/v.mp4"
    other: dict[str, Any] = {}
    scripted.halfway["VI000000000000000001"] = _other_worker(
        other, video_no="VI000000000000000002", destination=uri
    )
    with pytest.raises(
        AirflowFailException, match="created meanwhile by another writer and holds video VI000000000000000002"
    ):
        run(video_no="VI000000000000000001", destination=uri)
    assert other["sha256"] == sha(second)
    assert gcs_server.client().bucket(gcs_bucket).blob("v.mp4").download_as_bytes() == second


def test_a_stale_gcs_object_replaced_meanwhile_by_another_writer_is_kept(
    scripted: ScriptedService, gcs_preconditions: Any, gcs_server: Any, gcs_bucket: str
) -> None:
    # overwrite=False may replace an earlier state of its own source (stale), but it looked at it
    # before the download and committed with a plain replace: a file put there meanwhile (a person,
    # another task) was overwritten. Now the upload carries the generation seen (ifGenerationMatch).
    old, new, theirs = os.urandom(SIZE), os.urandom(SIZE), os.urandom(SIZE)
    scripted.add("VI000000000000000001", old)
    uri = f"gs://{gcs_bucket}/v.mp4"
    run(video_no="VI000000000000000001", destination=uri)
    scripted.add("VI000000000000000001", new, create_time=2)  # the service's video changed
    blob = gcs_server.client().bucket(gcs_bucket).blob("v.mp4")
    scripted.halfway["VI000000000000000001"] = lambda: blob.upload_from_string(theirs)
    with pytest.raises(
        AirflowFailException, match="created meanwhile by another writer and holds other bytes"
    ):
        run(video_no="VI000000000000000001", destination=uri)
    assert blob.download_as_bytes() == theirs
    # Unraced, the stale object is still replaced (its generation is the one seen).
    run(video_no="VI000000000000000001", destination=uri, overwrite=True)
    scripted.add("VI000000000000000001", old, create_time=3)
    assert run(video_no="VI000000000000000001", destination=uri)["skipped"] is False
    assert blob.download_as_bytes() == old
    # The stale object removed meanwhile: nothing to keep, a retry writes it (no failure for good).
    scripted.add("VI000000000000000001", new, create_time=4)
    scripted.halfway["VI000000000000000001"] = blob.delete
    with pytest.raises(AirflowException, match="is gone now; nothing was written") as gone:
        run(video_no="VI000000000000000001", destination=uri)
    assert not isinstance(gone.value, AirflowFailException) and not blob.exists()
    assert run(video_no="VI000000000000000001", destination=uri)["skipped"] is False
    assert blob.download_as_bytes() == new


@pytest.mark.parametrize("store", ["gcs", "azure"])
def test_a_stale_object_in_a_folder_replaced_meanwhile_is_kept(
    scripted: ScriptedService, request: pytest.FixtureRequest, store: str
) -> None:
    # A folder's files are seen through the store's listing (GCS list_blobs, Azure list_blobs), whose
    # generation / ETag the conditional commit must carry as the single object's look does.
    old, new, theirs = os.urandom(SIZE), os.urandom(SIZE), os.urandom(SIZE)
    scripted.add("VI000000000000000001", old)
    settings: dict[str, Any] = {}
    if store == "gcs":
        request.getfixturevalue("gcs_preconditions")
        server, bucket = request.getfixturevalue("gcs_server"), request.getfixturevalue("gcs_bucket")
        folder = f"gs://{bucket}/out/"
        blob = server.client().bucket(bucket).blob("out/VI000000000000000001.clip.mp4")
        put, read = blob.upload_from_string, blob.download_as_bytes
    else:
        azurite, container = request.getfixturevalue("azurite"), request.getfixturevalue("azure_container")
        settings = {"destination_conn_id": azurite.conn_id}
        folder = f"azure://{container}/out/"
        client = azurite.service().get_blob_client(container, "out/VI000000000000000001.clip.mp4")
        put = lambda data: client.upload_blob(data, overwrite=True)  # noqa: E731
        read = lambda: client.download_blob().readall()  # noqa: E731
    assert run(video_no="VI000000000000000001", destination=folder, **settings)["skipped"] is False
    scripted.add("VI000000000000000001", new, create_time=2)  # the service's video changed
    scripted.halfway["VI000000000000000001"] = lambda: put(theirs)
    with pytest.raises(
        AirflowFailException, match="created meanwhile by another writer and holds other bytes"
    ):
        run(video_no="VI000000000000000001", destination=folder, **settings)
    assert read() == theirs


@pytest.mark.parametrize("multipart", [True, False])
def test_a_stale_s3_object_replaced_meanwhile_by_another_writer_is_kept(
    scripted: ScriptedService,
    moto_s3_server: Any,
    s3_bucket: str,
    s3_if_match_on_completion: list[str],
    multipart: bool,
) -> None:
    # As on GCS: the stale object was replaced by a plain completion, whatever sat there by then.
    # Now the commit carries the ETag seen (If-Match): on PutObject (multipart_upload=False) moto
    # checks it itself; on CompleteMultipartUpload, s3_if_match_on_completion does as S3 does.
    old, new, theirs = os.urandom(SIZE), os.urandom(SIZE), os.urandom(SIZE)
    scripted.add("VI000000000000000001", old)
    uri = f"s3://{s3_bucket}/v.mp4"
    settings = {
        "destination_conn_id": moto_s3_server.conn_id,
        "transport_params": {"multipart_upload": multipart},
    }
    run(video_no="VI000000000000000001", destination=uri, **settings)
    scripted.add("VI000000000000000001", new, create_time=2)  # the service's video changed
    client = moto_s3_server.client()
    scripted.halfway["VI000000000000000001"] = lambda: client.put_object(
        Bucket=s3_bucket, Key="v.mp4", Body=theirs
    )
    with pytest.raises(
        AirflowFailException, match="created meanwhile by another writer and holds other bytes"
    ):
        run(video_no="VI000000000000000001", destination=uri, **settings)
    assert client.get_object(Bucket=s3_bucket, Key="v.mp4")["Body"].read() == theirs
    assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
    # Unraced, the stale object is still replaced (its ETag is the one seen).
    run(video_no="VI000000000000000001", destination=uri, overwrite=True, **settings)
    scripted.add("VI000000000000000001", old, create_time=3)
    assert run(video_no="VI000000000000000001", destination=uri, **settings)["skipped"] is False
    assert client.get_object(Bucket=s3_bucket, Key="v.mp4")["Body"].read() == old
    assert len(s3_if_match_on_completion) == (2 if multipart else 0)


def test_two_downloads_of_one_video_racing_without_checksums_both_succeed(
    scripted: ScriptedService, tmp_path: Path
) -> None:
    """With checksum=None there is no digest to compare: the winner's record proves the same source
    (the loser failed for good, 'holds video VI…01, not what video VI…01 sent')."""
    data = os.urandom(SIZE)
    scripted.add("VI000000000000000001", data)
    scripted.add("VI000000000000000002", os.urandom(SIZE))
    target = tmp_path / "v.mp4"
    other: dict[str, Any] = {}
    scripted.halfway["VI000000000000000001"] = _other_worker(
        other, video_no="VI000000000000000001", destination=str(target), checksum=None
    )
    result = run(video_no="VI000000000000000001", destination=str(target), checksum=None)
    assert "error" not in other, other
    assert result["skipped"] is False and result["bytes"] == SIZE and result["sha256"] is None
    assert target.read_bytes() == data
    assert scripted.downloads == ["VI000000000000000001", "VI000000000000000001"]
    # Another video still fails the race, record or not.
    target.unlink()
    scripted.halfway["VI000000000000000002"] = _other_worker(
        other, video_no="VI000000000000000001", destination=str(target), checksum=None
    )
    with pytest.raises(
        AirflowFailException,
        match="holds video VI000000000000000001, not what video VI000000000000000002 sent",
    ):
        run(video_no="VI000000000000000002", destination=str(target), checksum=None)
    assert target.read_bytes() == data


_KILLED_AT_COMMIT = """
import json, os, signal, sys
from memories_provider.operators.download import MemoriesDownloadOperator
kwargs = json.loads(sys.argv[1])
real_replace, real_link = os.replace, os.link

def killed_after(real):
    def commit(src, dst, *args, **kw):
        real(src, dst, *args, **kw)
        if os.fspath(dst) == kwargs["destination"]:
            os.kill(os.getpid(), signal.SIGKILL)  # the file has its name, its record not yet
    return commit

os.replace, os.link = killed_after(real_replace), killed_after(real_link)
MemoriesDownloadOperator(task_id="killed", **kwargs).execute(context={})
"""


@pytest.mark.parametrize("earlier", [False, True])
def test_a_worker_killed_between_the_file_and_its_record_is_still_proven(
    scripted: ScriptedService, tmp_path: Path, earlier: bool
) -> None:
    """The file took its name, then the worker died (OOM) before the record took its own: the
    retry proves the file by the record staged before the commit, instead of failing for good."""
    old, new = os.urandom(SIZE), os.urandom(SIZE)
    target = tmp_path / "v.mp4"
    if earlier:  # an earlier state of the video is there, with its record: replaced, then killed
        scripted.add("VI000000000000000001", old)
        run(video_no="VI000000000000000001", destination=str(target))
    scripted.add("VI000000000000000001", new, create_time=2)
    kwargs = {"video_no": "VI000000000000000001", "destination": str(target)}
    proc = subprocess.run([sys.executable, "-c", _KILLED_AT_COMMIT, json.dumps(kwargs)], timeout=300)
    assert proc.returncode == -9
    assert target.read_bytes() == new
    downloads = list(scripted.downloads)
    result = run(**kwargs)
    assert result["skipped"] is True and result["sha256"] == sha(new)
    assert scripted.downloads == downloads  # not downloaded (billed) again
    # Another video's retry at that name is still refused: the staged record names VI000000000000000001.
    scripted.add("VI000000000000000002", os.urandom(SIZE))
    with pytest.raises(AirflowFailException, match="holds video VI000000000000000001"):
        run(video_no="VI000000000000000002", destination=str(target))


def test_a_staged_record_of_another_file_proves_nothing(scripted: ScriptedService, tmp_path: Path) -> None:
    """A record staged for a file that never took the name (or was replaced since) is not this file's."""
    scripted.add("VI000000000000000001", os.urandom(SIZE))
    target = tmp_path / "v.mp4"
    run(video_no="VI000000000000000001", destination=str(target))
    side = tmp_path / ".v.mp4.memories.json"
    staged = tmp_path / f".{side.name}.0123456789ab.part"
    os.rename(side, staged)
    target.write_bytes(os.urandom(SIZE))  # same size, new bytes; the inode is kept but mtime is not
    with pytest.raises(AirflowFailException, match="with no record of what it holds"):
        run(video_no="VI000000000000000001", destination=str(target))


_KILLED_AT_SFTP_COMMIT = """
import json, os, signal, sys
import paramiko
from memories_provider.operators.download import MemoriesDownloadOperator
kwargs, path = json.loads(sys.argv[1]), sys.argv[2]

def killed_after(real):
    def commit(self, src, dst):
        real(self, src, dst)
        if dst == path:
            os.kill(os.getpid(), signal.SIGKILL)  # the file has its name, its record not yet
    return commit

for name in ("rename", "posix_rename"):
    setattr(paramiko.SFTPClient, name, killed_after(getattr(paramiko.SFTPClient, name)))
MemoriesDownloadOperator(task_id="killed", **kwargs).execute(context={})
"""


@pytest.mark.parametrize("overwrite", [False, True])
def test_an_sftp_download_cut_between_the_file_and_its_record_is_still_proven(
    scripted: ScriptedService, sshd: Any, overwrite: bool
) -> None:
    data = os.urandom(SIZE)
    scripted.add("VI000000000000000001", data)
    target = sshd.root / f"cut-{overwrite}" / "v.mp4"
    target.parent.mkdir()
    kwargs = {
        "video_no": "VI000000000000000001",
        "destination": sshd.uri(str(target)),
        "destination_conn_id": sshd.conn_id,
        "overwrite": overwrite,
    }
    argv = [sys.executable, "-c", _KILLED_AT_SFTP_COMMIT, json.dumps(kwargs), str(target)]
    assert subprocess.run(argv, timeout=300).returncode == -9
    assert target.read_bytes() == data
    assert not (target.parent / ".v.mp4.memories.json").exists()
    result = run(**{**kwargs, "overwrite": False})
    assert result["skipped"] is True and result["sha256"] == sha(data)
    assert scripted.downloads == ["VI000000000000000001"]  # the retry downloads (and pays) nothing


def test_a_folder_that_cannot_be_listed_only_loses_the_staged_records(
    scripted: ScriptedService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An execute-only folder: the file can be stat'ed but the folder not listed for staged
    records; the file is then one with no record (it failed with UnboundLocalError). Root reads
    every folder here, so the listing is made to fail."""
    scripted.add("VI000000000000000001", os.urandom(SIZE))
    target = tmp_path / "v.mp4"
    target.write_bytes(os.urandom(SIZE))

    def denied(path: Any = ".") -> Any:
        raise PermissionError(13, "Permission denied", os.fspath(path))

    monkeypatch.setattr(os, "listdir", denied)
    monkeypatch.setattr(os, "scandir", denied)
    with pytest.raises(AirflowFailException, match="with no record of what it holds"):
        run(video_no="VI000000000000000001", destination=str(target))
    assert scripted.downloads == []


def test_a_dangling_symlink_planted_while_the_video_downloads_is_named(
    scripted: ScriptedService, tmp_path: Path
) -> None:
    # Before: the commit found the name taken, then hashed what was there to compare it with its
    # own bytes, and failed with a bare FileNotFoundError (the link points nowhere).
    scripted.add("VI000000000000000001", os.urandom(SIZE))
    target = tmp_path / "v.mp4"
    scripted.halfway["VI000000000000000001"] = lambda: target.symlink_to(tmp_path / "nowhere.mp4")
    with pytest.raises(
        AirflowFailException, match="created meanwhile by another writer and holds a symlink to"
    ):
        run(video_no="VI000000000000000001", destination=str(target))
    assert target.is_symlink() and not (tmp_path / "nowhere.mp4").exists()
    assert visible(tmp_path) == ["v.mp4"] and hidden(tmp_path) == []


def test_two_videos_racing_for_one_azure_blob(
    scripted: ScriptedService, azurite: Any, azure_container: str
) -> None:
    # Before: Azure's block list was committed unconditionally; the slower download replaced the
    # other's blob and both reported success, the faster one for bytes no longer there.
    first, second = os.urandom(SIZE), os.urandom(SIZE)
    scripted.add("VI000000000000000001", first)
    scripted.add("VI000000000000000002", second)
    uri = f"azure://{azure_container}/v.mp4"
    settings = {"destination_conn_id": azurite.conn_id}
    other: dict[str, Any] = {}
    scripted.halfway["VI000000000000000001"] = _other_worker(
        other, video_no="VI000000000000000002", destination=uri, **settings
    )
    with pytest.raises(
        AirflowFailException, match="created meanwhile by another writer and holds video VI000000000000000002"
    ):
        run(video_no="VI000000000000000001", destination=uri, **settings)
    assert other["sha256"] == sha(second)
    blob = azurite.service().get_blob_client(azure_container, "v.mp4")
    assert blob.download_blob().readall() == second


def test_a_stale_azure_blob_replaced_meanwhile_by_another_writer_is_kept(
    scripted: ScriptedService, azurite: Any, azure_container: str
) -> None:
    # As on GCS and S3: the stale blob's block list was committed unconditionally. Now it carries
    # the ETag seen (If-Match), which Azurite checks as Azure does.
    old, new, theirs = os.urandom(SIZE), os.urandom(SIZE), os.urandom(SIZE)
    scripted.add("VI000000000000000001", old)
    uri = f"azure://{azure_container}/v.mp4"
    settings = {"destination_conn_id": azurite.conn_id}
    run(video_no="VI000000000000000001", destination=uri, **settings)
    scripted.add("VI000000000000000001", new, create_time=2)  # the service's video changed
    blob = azurite.service().get_blob_client(azure_container, "v.mp4")
    scripted.halfway["VI000000000000000001"] = lambda: blob.upload_blob(theirs, overwrite=True)
    with pytest.raises(
        AirflowFailException, match="created meanwhile by another writer and holds other bytes"
    ):
        run(video_no="VI000000000000000001", destination=uri, **settings)
    assert blob.download_blob().readall() == theirs
    # Unraced, the stale blob is still replaced (its ETag is the one seen).
    run(video_no="VI000000000000000001", destination=uri, overwrite=True, **settings)
    scripted.add("VI000000000000000001", old, create_time=3)
    assert run(video_no="VI000000000000000001", destination=uri, **settings)["skipped"] is False
    assert blob.download_blob().readall() == old


def test_a_fifo_planted_while_the_video_downloads_is_named_not_read(
    scripted: ScriptedService, tmp_path: Path
) -> None:
    # Before: the commit found the name taken and opened what was there to hash it; opening a FIFO
    # for reading waits for a writer, so the task hung until its execution_timeout.
    scripted.add("VI000000000000000001", os.urandom(SIZE))
    target = tmp_path / "v.mp4"
    scripted.halfway["VI000000000000000001"] = lambda: os.mkfifo(target)
    with pytest.raises(AirflowFailException, match="created meanwhile by another writer and holds a FIFO"):
        run(video_no="VI000000000000000001", destination=str(target))
    assert visible(tmp_path) == ["v.mp4"] and hidden(tmp_path) == []
