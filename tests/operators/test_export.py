"""MemoriesExportOperator against the emulator (real sockets): exact rows, storage, failures, attacks."""

from __future__ import annotations

import bz2
import copy
import datetime
import gzip
import json
import logging
import lzma
import os
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import requests
from status_waits import after_first_status_check

from memories_provider.client import MemoriesRateLimitError, MemoriesServerError
from memories_provider.operators.export import COLUMNS, MemoriesExportOperator

NAMES = ("alpha.mp4", "beta.mp4", "gamma.mp4")


def run(**kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("task_id", "export")
    return MemoriesExportOperator(**kwargs).execute(context={})


@pytest.fixture
def three(emu: Any, upload_video: Any) -> list[str]:
    """Three parsed videos; ``gamma`` has no audio track."""
    emu.control.configure(no_audio_pattern="^gamma")
    return [upload_video(b"\x00" * (1000 + i), name) for i, name in enumerate(NAMES)]


def expected_rows(emu: Any, video_nos: list[str], kinds: tuple[str, ...] = ("visual", "audio")) -> list[dict]:
    stored = {v["video_no"]: v for v in emu.control.videos()}
    rows = []
    for video_no in video_nos:
        video = stored[video_no]
        for kind in kinds:
            if kind == "audio" and video["filename"].startswith("gamma"):
                continue
            for i in range(3):
                text = (
                    f"Scene {i} of {video['filename']}"
                    if kind == "visual"
                    else (f"Words {i} spoken in {video['filename']}")
                )
                rows.append(
                    {
                        "video_no": video_no,
                        "unique_id": "default",
                        "kind": kind,
                        "index": i,
                        "start_s": 7.0 * i,
                        "end_s": 7.0 * (i + 1),
                        "text": text,
                        "video_name": video["video_name"],
                        "video_duration_s": 21.0,  # the emulator's 3 segments of 7 s
                        "video_create_time": video["create_time"],
                    }
                )
    return rows


def read_jsonl(data: bytes) -> list[dict]:
    lines = data.split(b"\n")
    assert lines[-1] == b""  # every row ends with a newline, the last one too
    return [json.loads(line) for line in lines[:-1]]


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# ---------------------------------------------------------------------------- exact rows


def test_exact_rows_of_three_videos_to_a_local_file(emu: Any, three: list[str], tmp_path: Path) -> None:
    target = tmp_path / "out" / "index.jsonl"
    result = run(video_nos=three, destination=str(target))
    data = target.read_bytes()
    rows = read_jsonl(data)
    assert rows == expected_rows(emu, three)
    assert list(rows[0]) == list(COLUMNS)
    assert result == {
        "uri": str(target),
        "rows": 15,
        "videos": 3,
        "bytes": len(data),
        "format": "jsonl",
        "kinds": ["visual", "audio"],
        "skipped": [],
    }
    assert files_in(target.parent) == ["index.jsonl"]  # no temporary file left behind
    # One status request for the three, then one request per video and kind.
    assert emu.control.count("list_videos") == 1
    assert emu.control.count("get_video_caption") == 3
    assert emu.control.count("get_audio_transcription") == 3


def test_a_rendered_destination_is_taken_without_the_whitespace_around_it(
    emu: Any, three: list[str], tmp_path: Path
) -> None:
    # A template's trailing newline was kept: the export was written to a file named 'index.jsonl\n'.
    target = tmp_path / "index.jsonl"
    result = run(video_no=three[0], destination=f"{target}\n", file_format="jsonl")
    assert result["uri"] == str(target)
    assert files_in(tmp_path) == ["index.jsonl"]


def test_one_kind_and_one_video(emu: Any, three: list[str], tmp_path: Path) -> None:
    target = tmp_path / "audio.jsonl"
    result = run(video_no=three[2], kinds="audio", destination=str(target))
    assert target.read_bytes() == b""  # no audio track: zero rows, not an error
    assert (result["rows"], result["videos"], result["bytes"]) == (0, 1, 0)
    assert emu.control.count("get_video_caption") == 0


def test_parquet(emu: Any, three: list[str], tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    target = tmp_path / "index.parquet"
    result = run(video_nos=three, destination=str(target))
    assert result["format"] == "parquet"
    table = pq.read_table(target)
    assert table.column_names == list(COLUMNS)
    assert table.to_pylist() == expected_rows(emu, three)
    assert result["bytes"] == target.stat().st_size


def test_s3(emu: Any, three: list[str], moto_s3_server: Any, s3_bucket: str) -> None:
    uri = f"s3://{s3_bucket}/exports/index.jsonl.gz"  # .gz: gzip, as every reader takes it
    result = run(video_nos=three, destination=uri, destination_conn_id=moto_s3_server.conn_id)
    body = moto_s3_server.client().get_object(Bucket=s3_bucket, Key="exports/index.jsonl.gz")["Body"].read()
    assert read_jsonl(gzip.decompress(body)) == expected_rows(emu, three)
    assert (result["uri"], result["bytes"]) == (uri, len(body))


def test_gcs(emu: Any, three: list[str], gcs_server: Any, gcs_bucket: str) -> None:
    result = run(video_nos=three, destination=f"gs://{gcs_bucket}/index.jsonl")
    body = gcs_server.client().bucket(gcs_bucket).get_blob("index.jsonl").download_as_bytes()
    assert read_jsonl(body) == expected_rows(emu, three)
    assert result["rows"] == 15


@pytest.mark.parametrize(
    ("suffix", "decompress"), [(".gz", gzip.decompress), (".BZ2", bz2.decompress), (".xz", lzma.decompress)]
)
def test_a_compressed_name_gets_a_compressed_file(
    emu: Any, three: list[str], tmp_path: Path, suffix: str, decompress: Any
) -> None:
    # 'index.jsonl.gz' was written as plain JSON Lines: DuckDB, Spark, pandas and BigQuery take
    # the compression from the name and failed on it ('not a gzip file').
    target = tmp_path / f"index.jsonl{suffix}"
    result = run(video_nos=three, destination=str(target))
    data = target.read_bytes()
    assert read_jsonl(decompress(data)) == expected_rows(emu, three)
    assert (result["format"], result["bytes"], result["rows"]) == ("jsonl", len(data), 15)
    assert files_in(tmp_path) == [target.name]
    run(video_nos=three, destination=str(target))
    assert target.read_bytes() == data  # the same bytes again: no time stamped in the header
    emu.control.inject_fault("get_video_caption", "none", count=2)
    emu.control.inject_fault("get_video_caption", "http_500", count=10)
    with pytest.raises(MemoriesServerError):
        run(video_nos=three, destination=str(target))
    assert target.read_bytes() == data  # a failed export leaves the file as it was, and no part
    assert files_in(tmp_path) == [target.name]


def test_all_parsed_videos_of_the_scope(
    emu: Any, three: list[str], upload_video: Any, tmp_path: Path
) -> None:
    pending = upload_video(b"\x01" * 10, "pending.mp4")
    emu.control.set_status(pending, "UNPARSE")
    target = tmp_path / "all.jsonl"
    result = run(all_parsed=True, kinds=["visual"], destination=str(target))
    rows = read_jsonl(target.read_bytes())
    assert {r["video_no"] for r in rows} == set(three)
    assert sorted(rows, key=lambda r: (r["video_no"], r["index"])) == sorted(
        expected_rows(emu, three, ("visual",)), key=lambda r: (r["video_no"], r["index"])
    )
    assert result["videos"] == 3


# ---------------------------------------------------------------------------- not parsed


def test_not_parsed_fails_before_any_output_is_fetched(emu: Any, three: list[str], tmp_path: Path) -> None:
    from airflow.providers.common.compat.sdk import AirflowFailException

    emu.control.set_status(three[1], "UNPARSE")
    emu.control.set_status(three[2], "FAILED", cause="bad codec")
    with pytest.raises(AirflowFailException, match=r"not PARSE.*FAILED"):
        run(video_nos=three, destination=str(tmp_path / "x.jsonl"))
    assert emu.control.count("get_video_caption") == 0
    assert files_in(tmp_path) == []
    emu.control.set_status(three[2], "PARSE")
    with pytest.raises(AirflowFailException, match=rf"not PARSE yet \({three[1]}\).*not_parsed='wait'"):
        run(video_nos=three, destination=str(tmp_path / "x.jsonl"))
    with pytest.raises(AirflowFailException, match="unknown"):
        run(video_nos=[three[0], "VI000000000000000001"], destination=str(tmp_path / "x.jsonl"))
    assert files_in(tmp_path) == []


def test_not_parsed_skip(emu: Any, three: list[str], tmp_path: Path) -> None:
    emu.control.set_status(three[1], "UNPARSE")
    target = tmp_path / "x.jsonl"
    result = run(video_nos=[*three, "VI000000000000000001"], not_parsed="skip", destination=str(target))
    assert result["skipped"] == [three[1], "VI000000000000000001"]
    assert read_jsonl(target.read_bytes()) == expected_rows(emu, [three[0], three[2]])


@pytest.mark.parametrize("previous", [None, b'{"an": "earlier export"}\n'])
def test_not_parsed_skip_of_every_video_leaves_the_destination_as_it_was(
    emu: Any, three: list[str], tmp_path: Path, previous: bytes | None
) -> None:
    # Nothing to export is not an empty export: a good earlier file is not replaced by nothing,
    # and the task is skipped (its downstream loads have nothing new either).
    from airflow.providers.common.compat.sdk import AirflowSkipException

    target = tmp_path / "x.jsonl"
    if previous is not None:
        target.write_bytes(previous)
    emu.control.set_status(three[1], "UNPARSE")
    with pytest.raises(AirflowSkipException, match="every video was left out") as info:
        run(video_nos=[three[1], "VI000000000000000001"], not_parsed="skip", destination=str(target))
    assert three[1] in str(info.value) and "left as it was" in str(info.value)
    assert files_in(tmp_path) == ([] if previous is None else ["x.jsonl"])
    if previous is not None:
        assert target.read_bytes() == previous


def test_not_parsed_wait_reuses_the_status_check(
    emu: Any, three: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import memories_provider.operators.export as export

    emu.control.set_status(three[1], "UNPARSE")
    waits: list[float] = []

    class Clock:
        """The operator's time: a pause parses the video (no real sleeping)."""

        monotonic = staticmethod(export.time.monotonic)
        time = staticmethod(export.time.time)

        @staticmethod
        def sleep(seconds: float) -> None:
            waits.append(seconds)
            emu.control.set_status(three[1], "PARSE")

    monkeypatch.setattr(export, "time", Clock)
    target = tmp_path / "x.jsonl"
    result = run(video_nos=three, not_parsed="wait", poll_interval=5, destination=str(target))
    assert waits == [5]
    assert result["rows"] == 15
    # The second check asks only for the video still waiting.
    assert [e.get("video_nos") for e in emu.control.request_log("list_videos")] == [three, [three[1]]]


def _deferral(three: list[str], destination: Path, **kwargs: Any) -> Any:
    """The ``TaskDeferred`` a deferrable export waiting for ``three`` raises (``kwargs``: more settings)."""
    from airflow.providers.common.compat.sdk import TaskDeferred

    operator = MemoriesExportOperator(
        task_id="export",
        video_nos=three,
        not_parsed="wait",
        deferrable=True,
        destination=str(destination),
        **kwargs,
    )
    with pytest.raises(TaskDeferred) as info:
        operator.execute({})
    return info.value


def test_not_parsed_wait_deferrable_defers_after_one_check_and_writes_nothing(
    emu: Any, three: list[str], tmp_path: Path
) -> None:
    import time

    emu.control.set_status(three[1], "UNPARSE")
    emu.control.set_status(three[2], "UNPARSE")
    before = time.time()
    deferred = _deferral(three, tmp_path / "out" / "x.jsonl", wait_timeout=600, poll_interval=45)
    after = time.time()
    trigger = deferred.trigger
    # The trigger waits for the videos not parsed yet, in the export's scope, by its deadline.
    assert trigger.video_nos == [three[1], three[2]] and trigger.unique_id == "default"
    assert trigger.poll_interval == 45
    assert before + 600 <= trigger.end_time <= after + 600
    assert deferred.method_name == "execute_complete"
    # The deadline survives the resume, and so does the try's start (execution_timeout counts from it).
    assert deferred.kwargs == {"end_time": trigger.end_time, "started_at": deferred.kwargs["started_at"]}
    assert before <= deferred.kwargs["started_at"] <= after
    # Airflow's own deferral timeout is a backstop beyond end_time: max(60 s, 2 poll intervals).
    margin = deferred.timeout.total_seconds() - 90
    assert trigger.end_time - after <= margin <= trigger.end_time - before
    # One status check on the worker; no output fetched, nothing written.
    assert emu.control.count("list_videos") == 1
    assert emu.control.count("get_video_caption") == emu.control.count("get_audio_transcription") == 0
    assert files_in(tmp_path / "out") == []  # the pre-flight made the folder; nothing in it


def test_deferrable_wait_defers_when_the_first_check_goes_unanswered(
    emu: Any, three: list[str], tmp_path: Path
) -> None:
    """5xx on every try of the worker's check: the trigger (which retries them) waits, not the worker."""
    emu.control.inject_fault("list_videos", "http_500", count=50)
    deferred = _deferral(three, tmp_path / "x.jsonl")
    assert deferred.trigger.video_nos == three  # none confirmed: all are waited for
    assert emu.control.count("list_videos") == 4  # one try and the connection's 3 retries, no more
    assert files_in(tmp_path) == []


def test_deferrable_wait_does_not_sleep_out_a_rate_limit_in_the_worker(
    emu: Any, three: list[str], tmp_path: Path
) -> None:
    """0429 on the worker's check: deferred at once (the trigger's pacer paces rate limits), not
    after the connection's 3 retries, each sleeping its Retry-After in the worker slot."""
    emu.control.inject_fault("list_videos", "code_0429", count=50, retry_after=1)
    deferred = _deferral(three, tmp_path / "x.jsonl")
    assert deferred.trigger.video_nos == three
    assert emu.control.count("list_videos") == 1
    assert files_in(tmp_path) == []


def test_a_deferred_wait_does_not_outlast_the_execution_timeout(
    emu: Any, three: list[str], tmp_path: Path
) -> None:
    """Airflow 3 does not cap a deferral by execution_timeout (Airflow 2 did): the export does."""
    from datetime import timedelta

    emu.control.set_status(three[1], "UNPARSE")
    deferred = _deferral(
        three, tmp_path / "x.jsonl", wait_timeout=3600, execution_timeout=timedelta(seconds=120)
    )
    assert deferred.timeout is not None and deferred.timeout <= timedelta(seconds=120)


def test_a_further_deferred_wait_does_not_get_a_new_execution_timeout(
    emu: Any, three: list[str], tmp_path: Path
) -> None:
    """Resumed in a new process (a new operator, as on Airflow 3) 110 s into a try of 120 s, with a
    video still not parsed: the wait defers again for the 10 s left, not for a new 120."""
    from datetime import timedelta

    from airflow.providers.common.compat.sdk import TaskDeferred

    emu.control.set_status(three[1], "UNPARSE")
    kwargs: dict[str, Any] = dict(
        task_id="export",
        video_nos=three,
        not_parsed="wait",
        deferrable=True,
        wait_timeout=3600,
        execution_timeout=timedelta(seconds=120),
        destination=str(tmp_path / "x.jsonl"),
    )
    with pytest.raises(TaskDeferred) as info:
        MemoriesExportOperator(**kwargs).execute({})
    resume = {**info.value.kwargs, "started_at": info.value.kwargs["started_at"] - 110}
    with pytest.raises(TaskDeferred) as again:
        MemoriesExportOperator(**kwargs).execute_complete({}, {"status": "success"}, **resume)
    assert again.value.timeout is not None and again.value.timeout <= timedelta(seconds=10)
    assert files_in(tmp_path) == []


def test_wait_timeouts_must_be_finite_and_a_huge_one_still_defers(
    emu: Any, three: list[str], tmp_path: Path
) -> None:
    for name in ("wait_timeout", "poll_interval"):
        with pytest.raises(ValueError, match=f"`{name}` must be a finite number of seconds > 0"):
            MemoriesExportOperator(
                task_id="e", video_nos=three, destination="/tmp/x.jsonl", **{name: float("inf")}
            )
    emu.control.set_status(three[0], "UNPARSE")
    deferred = _deferral(three, tmp_path / "x.jsonl", wait_timeout=1e14)  # beyond what a timedelta holds
    assert deferred.trigger.end_time > 1e14 and deferred.timeout.total_seconds() == 1e13


def test_deferrable_only_defers_what_it_waits_for(emu: Any, three: list[str], tmp_path: Path) -> None:
    from airflow.providers.common.compat.sdk import AirflowFailException

    target = tmp_path / "x.jsonl"
    # All parsed: no deferral at all.
    result = run(video_nos=three, not_parsed="wait", deferrable=True, destination=str(target))
    assert result["rows"] == 15
    # "fail" and "skip" never wait, deferrable or not.
    emu.control.set_status(three[1], "UNPARSE")
    with pytest.raises(AirflowFailException, match="not PARSE yet"):
        run(video_nos=three, deferrable=True, destination=str(tmp_path / "y.jsonl"))
    result = run(video_nos=three, not_parsed="skip", deferrable=True, destination=str(tmp_path / "z.jsonl"))
    assert result["skipped"] == [three[1]]
    # A failed video fails at once, before any deferral.
    emu.control.set_status(three[2], "FAILED", cause="bad codec")
    with pytest.raises(AirflowFailException, match=rf"not PARSE: {three[2]}: FAILED"):
        run(video_nos=three, not_parsed="wait", deferrable=True, destination=str(tmp_path / "w.jsonl"))
    assert not (tmp_path / "w.jsonl").exists() and not (tmp_path / "y.jsonl").exists()


@pytest.mark.parametrize(
    ("status", "error"),
    [("failed", "AirflowFailException"), ("timeout", "AirflowException"), ("error", "AirflowException")],
)
def test_resumed_wait_that_did_not_succeed_fails_with_nothing_written(
    emu: Any, three: list[str], tmp_path: Path, status: str, error: str
) -> None:
    import time

    operator = MemoriesExportOperator(
        task_id="export",
        video_nos=three,
        not_parsed="wait",
        deferrable=True,
        destination=str(tmp_path / "x.jsonl"),
    )
    message = f"{three[1]}: the trigger's own words for {status}"
    with pytest.raises(Exception) as info:
        operator.execute_complete({}, {"status": status, "message": message, "videos": []}, time.time() + 60)
    assert type(info.value).__name__ == error  # failed: no retry helps; timeout/error: Airflow's retries may
    assert str(info.value) == (
        f"cannot export: {message}; nothing was exported"
        if status == "failed"
        else f"{message}; nothing was exported"
    )
    assert emu.control.count("list_videos") == 0 and files_in(tmp_path) == []


def test_resumed_wait_keeps_its_deadline(emu: Any, three: list[str], tmp_path: Path) -> None:
    """The deadline handed over in the deferral's kwargs stands (here, already past): the resumed
    export checks the statuses once, exports if all are parsed, and grants no fresh window else."""
    import time

    from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException

    success = {"status": "success", "message": "", "videos": []}
    resumed = MemoriesExportOperator(
        task_id="export",
        video_nos=three,
        not_parsed="wait",
        deferrable=True,
        destination=str(tmp_path / "y.jsonl"),
    )
    # Resumed late (queued after the trigger fired): all parsed, so it exports.
    assert resumed.execute_complete({}, success, time.time() - 10)["rows"] == 15
    emu.control.set_status(three[0], "UNPARSE")
    operator = MemoriesExportOperator(
        task_id="export",
        video_nos=three,
        not_parsed="wait",
        deferrable=True,
        wait_timeout=3600,
        destination=str(tmp_path / "x.jsonl"),
    )
    with pytest.raises(AirflowException, match=rf"timed out .*\({three[0]}\); nothing was exported") as info:
        operator.execute_complete({}, success, time.time() - 1)
    assert not isinstance(info.value, AirflowFailException)
    assert files_in(tmp_path) == ["y.jsonl"]


def test_deferred_export_in_a_dag_run_resumes_and_exports(
    emu: Any, three: list[str], tmp_path: Path, run_dag: Any
) -> None:
    import pendulum
    from airflow import DAG

    emu.control.set_status(three[1], "UNPARSE")
    target = tmp_path / "x.jsonl"
    with DAG(
        "export_deferred", start_date=pendulum.datetime(2024, 1, 1), schedule=None, catchup=False
    ) as dag:
        MemoriesExportOperator(
            task_id="export",
            video_nos=three,
            not_parsed="wait",
            deferrable=True,
            poll_interval=0.2,
            wait_timeout=60,
            destination=str(target),
        )
    with after_first_status_check(emu, lambda: emu.control.set_status(three[1], "PARSE")):
        dag_run = run_dag(dag)
    assert dag_run.state == "success"
    [ti] = dag_run.get_task_instances()
    assert ti.xcom_pull(task_ids="export")["rows"] == 15
    assert read_jsonl(target.read_bytes()) == expected_rows(emu, three)
    asked = [e.get("video_nos") for e in emu.control.request_log("list_videos")]
    # The worker's check of all three, the trigger's of the one waited for, the resumed check of all.
    assert asked[0] == three and asked[-1] == three and [three[1]] in asked[1:-1]


def test_video_failing_during_a_deferred_wait_fails_the_task_once_with_nothing_written(
    emu: Any, three: list[str], tmp_path: Path, run_dag: Any
) -> None:
    import pendulum
    from airflow import DAG

    emu.control.set_status(three[1], "UNPARSE")
    target = tmp_path / "x.jsonl"
    with DAG("export_deferred_fails", start_date=pendulum.datetime(2024, 1, 1), schedule=None) as dag:
        MemoriesExportOperator(
            task_id="export",
            video_nos=three,
            not_parsed="wait",
            deferrable=True,
            poll_interval=0.2,
            wait_timeout=60,
            retries=2,
            destination=str(target),
        )
    fail = partial(emu.control.set_status, three[1], "FAILED", cause="unsupported codec")
    with after_first_status_check(emu, fail):
        dag_run = run_dag(dag)
    [ti] = dag_run.get_task_instances()
    assert str(ti.state) == "failed"
    assert ti.try_number == 1  # AirflowFailException: no retry spent on a failed video
    assert files_in(tmp_path) == []
    assert emu.control.count("get_video_caption") == 0


def test_a_key_rotated_during_the_wait_is_read_again_and_the_export_made_with_it(
    emu: Any, three: list[str], tmp_path: Path, set_memories_conn: Any
) -> None:
    # not_parsed="wait" on the worker: the key is rotated meanwhile (the connection gets the new
    # one, the old one is revoked). The wait and the export after it go on with the connection as
    # it is now, rather than failing the task at once, unretried, for a key it no longer holds.
    emu.control.set_status(three[1], "UNPARSE")
    target = tmp_path / "x.jsonl"

    def rotate() -> None:
        set_memories_conn(max_retries=3, password="sk-rotated-key")
        emu.control.configure(api_keys=["sk-rotated-key"])
        emu.control.set_status(three[1], "PARSE")

    with after_first_status_check(emu, rotate):
        result = run(video_nos=three, not_parsed="wait", poll_interval=0.05, destination=str(target))
    assert result["rows"] == 15
    assert read_jsonl(target.read_bytes()) == expected_rows(emu, three)
    codes = [r["code"] for r in emu.control.request_log("list_videos")]
    assert codes.count("0401") == 1, codes


# ---------------------------------------------------------------------------- failures mid-export


def test_0429_storm_completes_without_duplicate_rows(emu: Any, three: list[str], tmp_path: Path) -> None:
    emu.control.inject_fault("get_audio_transcription", "code_0429", count=3, retry_after=0.01)
    emu.control.inject_fault("list_videos", "http_429", count=2, retry_after=0.01)
    target = tmp_path / "x.jsonl"
    result = run(video_nos=three, destination=str(target))
    assert read_jsonl(target.read_bytes()) == expected_rows(emu, three)
    assert result["rows"] == 15
    assert emu.control.count("get_audio_transcription") == 6


def test_dropped_connections_are_retried(emu: Any, three: list[str], tmp_path: Path) -> None:
    emu.control.inject_fault("get_video_caption", "drop_mid_body", count=2)
    emu.control.inject_fault("get_audio_transcription", "drop_before_response")
    target = tmp_path / "x.jsonl"
    run(video_nos=three, destination=str(target))
    assert read_jsonl(target.read_bytes()) == expected_rows(emu, three)


def test_persistent_failure_mid_export_leaves_nothing_locally(
    emu: Any, three: list[str], tmp_path: Path
) -> None:
    target = tmp_path / "x.jsonl"
    target.write_text("previous export\n")
    emu.control.inject_fault("get_video_caption", "none", count=2)  # the first two videos go through
    emu.control.inject_fault("get_video_caption", "http_500", count=10)
    with pytest.raises(MemoriesServerError):
        run(video_nos=three, destination=str(target))
    assert target.read_text() == "previous export\n"  # the old object, untouched
    assert files_in(tmp_path) == ["x.jsonl"]


def test_persistent_0429_mid_export_leaves_nothing_in_s3(
    emu: Any, three: list[str], moto_s3_server: Any, s3_bucket: str
) -> None:
    emu.control.inject_fault("get_audio_transcription", "none", count=1)
    emu.control.inject_fault("get_audio_transcription", "code_0429", count=10, retry_after=0.01)
    with pytest.raises(MemoriesRateLimitError):
        run(
            video_nos=three,
            destination=f"s3://{s3_bucket}/x.jsonl",
            destination_conn_id=moto_s3_server.conn_id,
        )
    client = moto_s3_server.client()
    assert client.list_objects_v2(Bucket=s3_bucket).get("KeyCount", 0) == 0
    assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []


def _delete_before_fetching(emu: Any, victim: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Delete ``victim`` (through the API) right before its outputs are asked for."""
    from memories_provider.hooks.memories import MemoriesHook

    real = MemoriesHook.get_transcript

    def get_transcript(self: MemoriesHook, video_no: str, kind: Any, **kwargs: Any) -> Any:
        if video_no == victim and kind == "audio":  # half-way through the video: visual already fetched
            requests.post(
                f"{emu.v1_url}/delete_videos",
                headers={"Authorization": emu.api_key},
                json=[victim],
                timeout=10,
            ).raise_for_status()
        return real(self, video_no, kind, **kwargs)

    monkeypatch.setattr(MemoriesHook, "get_transcript", get_transcript)


def test_video_deleted_mid_export_fails_and_writes_nothing(
    emu: Any, three: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.providers.common.compat.sdk import AirflowFailException

    _delete_before_fetching(emu, three[1], monkeypatch)
    with pytest.raises(AirflowFailException, match=rf"{three[1]} could not be found.*nothing was written"):
        run(video_nos=three, destination=str(tmp_path / "x.jsonl"))
    assert files_in(tmp_path) == []


def test_video_deleted_mid_export_is_skipped_whole_when_asked(
    emu: Any, three: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _delete_before_fetching(emu, three[1], monkeypatch)
    target = tmp_path / "x.jsonl"
    result = run(video_nos=three, not_parsed="skip", destination=str(target))
    assert result["skipped"] == [three[1]]
    # Its visual rows were fetched but never written: no half video in the file.
    assert read_jsonl(target.read_bytes()) == expected_rows(emu, [three[0], three[2]])


def test_all_parsed_leaves_out_a_video_deleted_mid_export(
    emu: Any, three: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "Every parsed video of the scope": one deleted after the listing is no longer in it. It
    # failed the task for good (AirflowFailException, no retry) though a retry would have listed
    # the videos again and succeeded.
    _delete_before_fetching(emu, three[1], monkeypatch)
    target = tmp_path / "x.jsonl"
    result = run(all_parsed=True, destination=str(target))
    assert result["skipped"] == [three[1]]
    assert result["videos"] == 2
    rows = read_jsonl(target.read_bytes())
    key = lambda r: (r["video_no"], r["kind"], r["index"])  # noqa: E731
    assert sorted(rows, key=key) == sorted(expected_rows(emu, [three[0], three[2]]), key=key)


@pytest.mark.parametrize("not_parsed", ["fail", "skip"])
def test_an_infrastructure_404_is_not_a_deleted_video(
    emu: Any, three: list[str], tmp_path: Path, not_parsed: str
) -> None:
    # Spec section 1: a 404 without a business code is infrastructure, not "the video is gone": the
    # video is neither left out of the file nor failed for good; the try fails and a retry exports it.
    from airflow.providers.common.compat.sdk import AirflowFailException

    from memories_provider.client import MemoriesRouteNotFoundError

    emu.control.inject_fault("get_audio_transcription", "http_404")
    target = tmp_path / "x.jsonl"
    with pytest.raises(MemoriesRouteNotFoundError) as info:
        run(video_nos=three, not_parsed=not_parsed, destination=str(target))
    assert not isinstance(info.value, AirflowFailException)
    assert files_in(tmp_path) == []
    result = run(video_nos=three, not_parsed=not_parsed, destination=str(target))
    assert result["skipped"] == []
    assert read_jsonl(target.read_bytes()) == expected_rows(emu, three)


# ---------------------------------------------------------------------------- hostile content


def test_hostile_text_stays_one_row_per_line(emu: Any, upload_video: Any, tmp_path: Path) -> None:
    video_no = upload_video(b"\x00" * 10, 'evil\n"name.mp4')
    huge = "y" * (3 * 1024 * 1024)
    texts = [
        "a\nb\r\nc",
        "nul\x00byte",
        "sep\u2028par\u2029nel\x85",
        '{"forged": "row"}\n{"x":1}',
        huge,
        "\ud800",
    ]
    items = [
        {"index": i, "content": t, "startTime": str(i), "endTime": str(i + 1)} for i, t in enumerate(texts)
    ]
    emu.control.set_index_outputs(video_no, visual=items, audio=[])
    target = tmp_path / "x.jsonl"
    result = run(video_no=video_no, destination=str(target))
    data = target.read_bytes()
    assert data.count(b"\n") == len(texts) == result["rows"]
    assert len(data.decode("utf-8").splitlines()) == len(texts)  # also by Python's wider idea of a line
    rows = read_jsonl(data)
    assert [r["text"] for r in rows] == [*texts[:-1], "\ufffd"]


def test_hostile_text_in_parquet(emu: Any, upload_video: Any, tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    video_no = upload_video(b"\x00" * 10)
    texts = ["a\nb", "nul\x00byte", "\ud800x"]
    items = [{"index": i, "content": t, "startTime": i, "endTime": "1.5"} for i, t in enumerate(texts)]
    emu.control.set_index_outputs(video_no, visual=items)
    target = tmp_path / "x.parquet"
    run(video_no=video_no, kinds="visual", destination=str(target))
    assert pq.read_table(target).column("text").to_pylist() == ["a\nb", "nul\x00byte", "\ufffdx"]


# ---------------------------------------------------------------------------- bad input, secrets


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one"),
        ({"video_no": "VI000000000000000001", "all_parsed": True}, "exactly one"),
        ({"video_no": "VI000000000000000001", "video_nos": ["VI000000000000000002"]}, "exactly one"),
        ({"video_no": "VI000000000000000001", "kinds": "subtitles"}, "kinds"),
        ({"video_no": "VI000000000000000001", "kinds": []}, "kinds"),
        ({"video_no": "VI000000000000000001", "file_format": "csv"}, "file_format"),
        ({"video_no": "VI000000000000000001", "not_parsed": "ignore"}, "not_parsed"),
        ({"video_no": "VI000000000000000001", "poll_interval": 0}, "poll_interval"),
        ({"video_no": "VI000000000000000001", "destination": ""}, "destination"),
    ],
)
def test_bad_arguments_fail_at_parse_time(kwargs: dict[str, Any], message: str, tmp_path: Path) -> None:
    kwargs.setdefault("destination", str(tmp_path / "x.jsonl"))
    with pytest.raises(ValueError, match=message):
        MemoriesExportOperator(task_id="t", **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"video_no": "../VI000000000000000001"}, "video_no"),
        ({"video_nos": ["VI000000000000000001", "a/b"]}, "video_no"),
        # Spec: 'VI' + 18 digits. Before, the export asked list_videos about them and the service
        # refused them (the sensor alone checked the shape).
        ({"video_no": "VI1"}, r"`video_no` must be a video id \('VI' and 18 digits"),
        ({"video_nos": ["VI000000000000000001", "VI2 x"]}, r"`video_nos` must hold video ids \('VI' and 18"),
        ({"video_no": "VI000000000000000001", "destination": "{dir}/folder/"}, "not the folder"),
        ({"video_no": "VI000000000000000001", "destination": "ftp://host/x.jsonl"}, "scheme"),
        # Before, exported into a file named 'C:\lake\x.jsonl' in the worker's working folder.
        (
            {"video_no": "VI000000000000000001", "destination": "C:\\lake\\x.jsonl"},
            "`destination` .* is a Windows path",
        ),
        ({"video_no": "VI000000000000000001", "transport_params": {"min_part_size": 1}}, "transport_params"),
        # Parquet compresses inside the file; it was written as JSON Lines under this name.
        (
            {"video_no": "VI000000000000000001", "destination": "{dir}/x.parquet.gz"},
            "`destination` .*x.parquet.gz.* Parquet",
        ),
        (
            {"video_no": "VI000000000000000001", "destination": "{dir}/x.gz", "file_format": "parquet"},
            "`destination` .* Parquet",
        ),
        (
            {"video_no": "VI000000000000000001", "destination": "{dir}/x.jsonl.zst"},
            "`destination` .*zst.*\\.gz",
        ),
        (
            {"video_no": "VI000000000000000001", "destination": "{dir}/x.parquet.zst"},
            "`destination` .*zst.*Parquet",
        ),
        (
            {"video_no": "VI000000000000000001", "destination": "{dir}/exists.jsonl", "overwrite": False},
            "already exists",
        ),
        ({"video_no": "VI000000000000000001", "destination": "{dir}/afile/x.jsonl"}, "destination"),
        # An existing folder, no '/': the hint was the download's ("end it with '/' to download into
        # it"), which the export then refused ("not the folder").
        (
            {"video_no": "VI000000000000000001", "destination": "{dir}/adir"},
            r"`destination` .*adir' is an existing folder: name a file in it",
        ),
    ],
)
def test_bad_input_fails_before_any_request(
    emu: Any, kwargs: dict[str, Any], message: str, tmp_path: Path
) -> None:
    from airflow.providers.common.compat.sdk import AirflowFailException

    (tmp_path / "exists.jsonl").write_text("x")
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    kwargs["destination"] = kwargs.get("destination", "{dir}/x.jsonl").format(dir=tmp_path)
    with pytest.raises((ValueError, AirflowFailException), match=message):
        run(**kwargs)
    assert emu.control.request_log() == []


def test_the_key_never_shows_even_when_the_server_echoes_it(
    emu: Any, three: list[str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    emu.control.configure(echo_requests=True)
    emu.control.inject_fault("get_video_caption", "code_0429", count=10, retry_after=0.01)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(MemoriesRateLimitError) as info:
        run(video_nos=three, destination=str(tmp_path / "x.jsonl"))
    assert "request was" in str(info.value)  # the echo arrived ...
    assert emu.api_key not in str(info.value)  # ... redacted
    assert emu.api_key not in repr(info.value)
    assert emu.api_key not in caplog.text
    assert files_in(tmp_path) == []


# ---------------------------------------------------------------------------- Airflow


def test_dag_test_templated_mapped_export_with_asset_event(
    emu: Any, three: list[str], run_dag: Any, tmp_path: Path
) -> None:
    from airflow.providers.common.compat.sdk import DAG, Asset, task
    from test_download_dag import _asset_events, _register_datasets_on_airflow2

    uri = f"file://{tmp_path}/all.jsonl"
    dag_id = f"export_dag_{os.getpid()}_{three[0][-6:]}"
    with DAG(dag_id, schedule=None, start_date=datetime.datetime(2025, 1, 1), catchup=False) as dag:

        @task
        def pick() -> list[str]:
            return three

        ids = pick()
        each = MemoriesExportOperator.partial(
            task_id="each", destination=str(tmp_path) + "/each/{{ ti.map_index }}.jsonl"
        ).expand(video_no=ids)
        together = MemoriesExportOperator(
            task_id="together",
            video_nos="{{ ti.xcom_pull(task_ids='pick') }}",
            destination=str(tmp_path) + "/all.jsonl",
            outlets=[Asset(uri)],
        )
        ids >> together

    assert each is not None
    _register_datasets_on_airflow2(dag)
    dagrun = run_dag(dag)
    assert str(dagrun.state).endswith("success"), dagrun.state
    assert read_jsonl((tmp_path / "all.jsonl").read_bytes()) == expected_rows(emu, three)
    for i, video_no in enumerate(three):
        assert read_jsonl((tmp_path / "each" / f"{i}.jsonl").read_bytes()) == expected_rows(emu, [video_no])
    events = _asset_events(uri)
    assert len(events) == 1
    assert events[0] == {
        "rows": 15,
        "videos": 3,
        "bytes": (tmp_path / "all.jsonl").stat().st_size,
        "format": "jsonl",
    }


def test_integers_no_int64_holds_do_not_fail_a_parquet_export(
    emu: Any, upload_video: Any, tmp_path: Path
) -> None:
    # pyarrow raised OverflowError on an index of 2**70: the export failed, and so did every retry.
    pq = pytest.importorskip("pyarrow.parquet")
    from memories_provider.client import Transcript, Video
    from memories_provider.operators._export_rows import rows_of

    video_no = upload_video(b"\x00" * 10)
    items = [
        {"index": 2**70, "content": "a", "startTime": "0", "endTime": "1"},
        {"index": -(2**63), "content": "b", "startTime": "1", "endTime": "2"},
    ]
    emu.control.set_index_outputs(video_no, visual=items)
    target = tmp_path / "x.parquet"
    run(video_no=video_no, kinds="visual", destination=str(target))
    assert pq.read_table(target).column("index").to_pylist() == [0, -(2**63)]  # unreadable: its position
    # A creation time no int64 holds is absent, in JSON Lines and Parquet alike.
    video = Video.from_api({"videoNo": video_no, "createTime": 2**70})
    transcript = Transcript.from_api({"transcriptions": items}, video_no=video_no, kind="visual")
    assert [row["video_create_time"] for row in rows_of(video, "u", [transcript])] == [None, None]


def test_an_id_named_twice_is_exported_once_and_a_non_list_is_refused(
    emu: Any, three: list[str], tmp_path: Path
) -> None:
    # Ids were deduplicated before being stripped: "VI…01" and "VI…01 " (a template's trailing space)
    # both stayed, and the video's rows were written twice.
    from airflow.providers.common.compat.sdk import AirflowFailException

    target = tmp_path / "x.jsonl"
    result = run(video_nos=[three[0], f" {three[0]} ", three[1], three[0]], destination=str(target))
    assert read_jsonl(target.read_bytes()) == expected_rows(emu, three[:2])
    assert (result["rows"], result["videos"]) == (12, 2)
    before = len(emu.control.request_log())
    # Not iterable: a clear error naming the parameter (was a bare TypeError, retried), no request.
    with pytest.raises(AirflowFailException, match="`video_nos` must be a list"):
        run(video_nos=5, destination=str(target))
    assert len(emu.control.request_log()) == before


def test_a_failed_parquet_export_leaves_no_writer_open(
    emu: Any, three: list[str], moto_s3_server: Any, s3_bucket: str
) -> None:
    # The abandoned pyarrow writer stayed open; whenever it was collected it wrote its footer into
    # the aborted upload: "Exception ignored in ParquetWriter.__del__ ... I/O operation on closed
    # file" in the task log, at a random later time.
    import gc

    pq = pytest.importorskip("pyarrow.parquet")
    emu.control.inject_fault("get_video_caption", "none", count=1)
    emu.control.inject_fault("get_video_caption", "http_500", count=10)
    with pytest.raises(MemoriesServerError):
        run(
            video_nos=three,
            destination=f"s3://{s3_bucket}/x.parquet",
            destination_conn_id=moto_s3_server.conn_id,
        )
    gc.collect()
    # type(), not isinstance(): some of Airflow's lazy objects import things when asked their __class__.
    assert [w for w in gc.get_objects() if type(w) is pq.ParquetWriter and w.is_open] == []
    client = moto_s3_server.client()
    assert client.list_objects_v2(Bucket=s3_bucket).get("KeyCount", 0) == 0
    assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []


def test_json_lines_of_one_video_are_written_as_they_are_made() -> None:
    # All lines of a video were joined before the first write: a video of many segments was held a
    # second time, as JSON, on top of its parsed answer. Shown by when the writes come and how big
    # they are, not by tracemalloc's peak, which counts every thread's allocations (a suite's
    # emulator threads included) and so failed under load.
    import io

    from memories_provider.operators._export_rows import CountingFile, JsonLinesWriter

    sink = io.BytesIO()
    out = CountingFile(sink)
    writes: list[int] = []
    made_at_first_write: list[int] = []
    made = 0
    real_write = out.write

    def write(data: Any) -> int:
        if not made_at_first_write:
            made_at_first_write.append(made)
        writes.append(len(data))
        sink.seek(0)  # keep the sink small
        return real_write(data)

    out.write = write  # type: ignore[method-assign]
    row = {column: None for column in COLUMNS} | {"text": "t" * 1000}

    def rows() -> Iterator[dict[str, Any]]:
        nonlocal made
        for _ in range(20_000):  # ~20 MiB of lines
            made += 1
            yield row

    JsonLinesWriter(out).write_rows(rows())
    assert out.bytes > 20 * 2**20 and len(writes) > 10
    # The first write goes out after about 1 MiB of lines (~1 000 rows), not after all 20 000.
    assert made_at_first_write[0] <= 2_000, made_at_first_write
    assert max(writes) <= 2 * 2**20, max(writes)


def test_a_lone_surrogate_in_the_video_s_name_is_the_replacement_character_in_both_formats() -> None:
    # JSON may carry "\ud800" alone in a listed name. The caption text became U+FFFD, but the name
    # became '?', a character of its own that no reader can tell from a real question mark.
    import io

    pq = pytest.importorskip("pyarrow.parquet")
    from memories_provider.client import Transcript, Video
    from memories_provider.operators._export_rows import CountingFile, JsonLinesWriter, ParquetWriter, rows_of

    video = Video.from_api({"video_no": "VI000000000000000001", "video_name": "cam\ud800 1?"})
    items = [{"index": 0, "content": "x\udfff", "startTime": "0", "endTime": "1"}]
    transcript = Transcript.from_api({"transcriptions": items}, video_no=video.video_no, kind="visual")
    names = []
    for writer_class in (JsonLinesWriter, ParquetWriter):
        sink = io.BytesIO()
        writer = writer_class(CountingFile(sink))
        writer.write_rows(rows_of(video, "u", [transcript]))
        writer.close()
        if writer_class is JsonLinesWriter:
            (row,) = read_jsonl(sink.getvalue())
        else:
            (row,) = pq.read_table(io.BytesIO(sink.getvalue())).to_pylist()
        names.append((row["video_name"], row["text"]))
    assert names == [("cam\ufffd 1?", "x\ufffd")] * 2


def test_parquet_row_groups_are_cut_by_the_bytes_of_text_not_its_characters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The row group held PARQUET_ROW_GROUP_BYTES characters of text: up to four times as many
    # bytes (and Python's copy as many again) for text outside the BMP, such as emoji.
    import io

    pq = pytest.importorskip("pyarrow.parquet")
    from memories_provider.operators import _export_rows

    monkeypatch.setattr(_export_rows, "PARQUET_ROW_GROUP_BYTES", 1000)
    row = {column: None for column in COLUMNS} | {"index": 0, "text": "\U0001f600" * 300}  # 1 200 bytes
    sink = io.BytesIO()
    writer = _export_rows.ParquetWriter(_export_rows.CountingFile(sink))
    writer.write_rows([row] * 3)
    writer.close()
    parquet = pq.ParquetFile(io.BytesIO(sink.getvalue()))
    assert parquet.metadata.num_rows == 3
    assert parquet.metadata.num_row_groups == 3  # each row's text is over the bytes allowed


# ---------------------------------------------------------------------------- retries and overwrite=False


def _ti(run_id: str = "manual__1") -> Any:
    from types import SimpleNamespace

    return SimpleNamespace(dag_id="d", task_id="export", run_id=run_id, map_index=-1)


def _export_as(ti: Any, **kwargs: Any) -> dict[str, Any]:
    return MemoriesExportOperator(task_id="export", overwrite=False, **kwargs).execute(context={"ti": ti})


def test_a_retry_replaces_the_export_its_own_earlier_try_committed(
    emu: Any, three: list[str], tmp_path: Path
) -> None:
    # The first try committed, then its worker was lost before Airflow heard of it: the retry
    # (the same task instance) must not fail for good on "already exists".
    target = tmp_path / "index.jsonl"
    _export_as(_ti(), video_nos=three[:1], destination=str(target))
    result = _export_as(_ti(), video_nos=three, destination=str(target))
    assert read_jsonl(target.read_bytes()) == expected_rows(emu, three)
    assert result["rows"] == 15


def test_overwrite_false_still_refuses_another_runs_export_or_a_changed_file(
    emu: Any, three: list[str], tmp_path: Path
) -> None:
    from airflow.providers.common.compat.sdk import AirflowFailException

    target = tmp_path / "index.jsonl"
    _export_as(_ti("manual__1"), video_nos=three[:1], destination=str(target))
    before = target.read_bytes()
    with pytest.raises(AirflowFailException, match="already exists"):
        _export_as(_ti("manual__2"), video_nos=three, destination=str(target))
    assert target.read_bytes() == before
    with target.open("ab") as fh:  # changed since: no longer the file that try wrote
        fh.write(b"\n")
    with pytest.raises(AirflowFailException, match="already exists"):
        _export_as(_ti("manual__1"), video_nos=three, destination=str(target))
    assert target.read_bytes() == before + b"\n"


def test_a_retry_replaces_its_own_earlier_export_in_s3_and_nobody_elses(
    emu: Any, three: list[str], moto_s3_server: Any, s3_bucket: str
) -> None:
    from airflow.providers.common.compat.sdk import AirflowFailException

    uri = f"s3://{s3_bucket}/exports/index.jsonl"
    common = {"destination": uri, "destination_conn_id": moto_s3_server.conn_id}
    _export_as(_ti(), video_nos=three[:1], **common)
    _export_as(_ti(), video_nos=three, **common)
    body = moto_s3_server.client().get_object(Bucket=s3_bucket, Key="exports/index.jsonl")["Body"].read()
    assert read_jsonl(body) == expected_rows(emu, three)
    with pytest.raises(AirflowFailException, match="already exists"):
        _export_as(_ti("manual__2"), video_nos=three[:1], **common)
    again = moto_s3_server.client().get_object(Bucket=s3_bucket, Key="exports/index.jsonl")["Body"].read()
    assert again == body


def test_a_second_try_on_the_same_operator_counts_only_its_own_videos(
    emu: Any, three: list[str], tmp_path: Path
) -> None:
    # dag.test() runs each try on a shallow copy of the one operator: what an earlier try exported
    # must not make this try's "every video left out" an empty export replacing the file.
    from airflow.providers.common.compat.sdk import AirflowSkipException

    target = tmp_path / "x.jsonl"
    op = MemoriesExportOperator(
        task_id="export", video_nos=[three[0]], not_parsed="skip", destination=str(target)
    )
    assert copy.copy(op).execute(context={})["videos"] == 1
    first = target.read_bytes()
    emu.control.set_status(three[0], "UNPARSE")
    with pytest.raises(AirflowSkipException, match="every video was left out"):
        copy.copy(op).execute(context={})
    assert target.read_bytes() == first


def test_ids_a_template_rendered_as_text_are_exported(emu: Any, three: list[str], tmp_path: Path) -> None:
    # Without render_template_as_native_obj an XCom list renders as "['VI…', 'VI…']".
    target = tmp_path / "x.jsonl"
    result = run(video_nos=str([three[0], three[2], three[0]]), destination=str(target))
    assert result["videos"] == 2
    assert read_jsonl(target.read_bytes()) == expected_rows(emu, [three[0], three[2]])
    with pytest.raises(ValueError, match=r"`video_nos` must be a list of video ids.*\(or all_parsed=True\)"):
        run(video_nos=f"['{three[0]}'", destination=str(target))


# ---------------------------------------------------------------------------- ids the service sends


def test_all_parsed_leaves_out_a_listed_id_it_cannot_send_back(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The client reads the ids the service sends as they come, but sends only ids of the documented
    # shape ('VI' + 18 digits). A scope listing a row of another shape (which the strict emulator
    # never does: a scripted service here) is exported without it, said in the log and in
    # `skipped`, instead of the whole export failing on an id the user never typed.
    from connections import point_memories_default_at
    from local_http import LocalServer, QuietHandler

    good, odd = "VI568102998803353600", "VI-7"
    asked: list[str] = []

    class Scripted(QuietHandler):
        def _json(self, data: Any) -> None:
            body = json.dumps({"code": "0000", "msg": "success", "data": data}).encode()
            self.send_body(200, {"Content-Type": "application/json"}, body)

        def do_POST(self) -> None:
            request = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            asked.append(self.path)
            rows = [{"video_no": v, "video_name": "x.mp4", "status": "PARSE"} for v in (good, odd)]
            page = {"current_page": request["page"], "page_size": request["size"], "total_count": 2}
            self._json({**page, "videos": rows if request["page"] == 1 else []})

        def do_GET(self) -> None:
            asked.append(self.path)
            segments = [{"index": 0, "content": "hello", "startTime": "0", "endTime": "1"}]
            self._json({"videoNo": good, "transcriptions": segments, "createTime": "1"})

    with LocalServer(Scripted) as server:
        point_memories_default_at(monkeypatch, server.url)
        result = run(all_parsed=True, kinds=["visual"], destination=str(tmp_path / "x.jsonl"))
    assert result["skipped"] == [odd] and result["videos"] == 1
    rows = read_jsonl((tmp_path / "x.jsonl").read_bytes())
    assert [(r["video_no"], r["text"]) for r in rows] == [(good, "hello")]
    assert not any(odd in path for path in asked)  # never sent back


# ---------------------------------------------------------------------------- all_parsed paging


def test_all_parsed_exports_a_video_that_a_deletion_shifted_onto_a_page_already_read(
    emu: Any, upload_video: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # list_videos pages by offset (newest first). The export lists page 2 only once page 1's
    # videos are written; a video of page 1 deleted meanwhile moves every later one up a place,
    # so the first of page 2 was now on page 1, already read: a video PARSE all along was left out
    # of a file reported complete, with nothing said. Here the service pages by 2.
    from memories_provider.hooks.memories import MemoriesHook

    emu.control.configure(max_page_size=2)
    videos = [upload_video(b"\x00" * (10 + i), f"v{i}.mp4") for i in range(4)]
    newest, last_of_page_one = videos[3], videos[2]
    real = MemoriesHook.get_transcript

    def get_transcript(self: MemoriesHook, video_no: str, kind: Any, **kwargs: Any) -> Any:
        if video_no == last_of_page_one and kind == "audio":  # page 1 done; page 2 not asked yet
            requests.post(
                f"{emu.v1_url}/delete_videos",
                headers={"Authorization": emu.api_key},
                json=[newest],
                timeout=10,
            ).raise_for_status()
        return real(self, video_no, kind, **kwargs)

    monkeypatch.setattr(MemoriesHook, "get_transcript", get_transcript)
    target = tmp_path / "all.jsonl"
    result = run(all_parsed=True, destination=str(target))
    rows = read_jsonl(target.read_bytes())
    exported = list(dict.fromkeys(r["video_no"] for r in rows))
    assert sorted(exported) == sorted(videos)  # the deleted one was exported before it went
    assert len(rows) == len({(r["video_no"], r["kind"], r["index"]) for r in rows})  # each row once
    assert (result["videos"], result["skipped"]) == (4, [])
    assert emu.control.count("list_videos") == 4  # 2 pages, then one whole listing of the 3 left


def test_all_parsed_of_a_scope_the_account_does_not_have_fails_and_keeps_the_old_export(
    emu: Any, three: list[str], upload_video: Any, tmp_path: Path
) -> None:
    # Scopes are case-sensitive and created on first use, so a misspelt unique_id lists nothing:
    # the export replaced the scope's last good export with an empty file and reported success.
    from airflow.providers.common.compat.sdk import AirflowFailException

    target = tmp_path / "all.jsonl"
    target.write_text("last good export\n")
    with pytest.raises(AirflowFailException, match=r"`unique_id` 'Default' .*did you mean 'default'"):
        run(all_parsed=True, unique_id="Default", destination=str(target))
    assert target.read_text() == "last good export\n"
    assert files_in(tmp_path) == ["all.jsonl"]
    # A scope that exists but has no PARSE video yet is exported as what it is: no rows.
    pending = upload_video(b"\x02" * 10, "pending.mp4", unique_id="later")
    emu.control.set_status(pending, "UNPARSE")
    result = run(all_parsed=True, unique_id="later", destination=str(target))
    assert (target.read_bytes(), result["videos"], result["skipped"]) == (b"", 0, [])
    # A deployment without list_unique_ids (an HTTP 404 of the route) cannot say: exported as is.
    target.write_text("last good export\n")
    emu.control.inject_fault("list_unique_ids", "http_404")
    result = run(all_parsed=True, unique_id="Later", destination=str(target))
    assert (target.read_bytes(), result["videos"]) == (b"", 0)


def test_all_parsed_of_a_scope_that_did_not_change_lists_it_twice(
    emu: Any, upload_video: Any, tmp_path: Path
) -> None:
    # Every list_videos is a rate-limited call of an account many tasks share: a scope that did
    # not change is listed twice (the check of the first listing, which no count can replace:
    # see test_all_parsed_lists_again_after_a_deletion_and_a_parse_the_total_does_not_show), not
    # up to 4 times.
    emu.control.configure(max_page_size=2)
    videos = [upload_video(b"\x00" * (10 + i), f"v{i}.mp4") for i in range(6)]
    target = tmp_path / "all.jsonl"
    result = run(all_parsed=True, kinds="visual", destination=str(target))
    assert (result["videos"], result["skipped"]) == (6, [])
    assert sorted({r["video_no"] for r in read_jsonl(target.read_bytes())}) == sorted(videos)
    assert emu.control.count("list_videos") == 6  # pages of 2: two listings


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("ignore_page", r"page 2 of the listing of unique_id 'default' with exactly the videos of page 1"),
        ("no_rows", r"listing of unique_id 'default' ended at page 2 after 2 video\(s\), though .* counts 6"),
    ],
)
def test_all_parsed_fails_on_a_listing_that_cannot_be_read_whole(
    emu: Any, upload_video: Any, tmp_path: Path, kind: str, message: str
) -> None:
    # A service that answers page 1 to every page (it drops `page`), or whose pages end before
    # they reach its total_count: the export held the first page's videos alone, and reported
    # success (a drop of `page` without a total_count would have asked for pages forever).
    from airflow.providers.common.compat.sdk import AirflowException

    emu.control.configure(max_page_size=2)
    for i in range(6):
        upload_video(b"\x00" * (10 + i), f"v{i}.mp4")
    target = tmp_path / "all.jsonl"
    target.write_text("last good export\n")
    emu.control.inject_fault("list_videos", "none")  # page 1 as it is
    emu.control.inject_fault("list_videos", kind, count=20)
    with pytest.raises(AirflowException, match=message):
        run(all_parsed=True, kinds="visual", destination=str(target))
    assert target.read_text() == "last good export\n"
    assert files_in(tmp_path) == ["all.jsonl"]


def test_all_parsed_lists_again_after_a_deletion_the_total_does_not_show(
    emu: Any, upload_video: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pages of 2, newest first: [v3 v2 | v1 v0 ...]. While page 1 is exported, v2 is deleted and
    # an older video turns PARSE at the end of the listing: page 2 is then [v0 older], its
    # total_count the same, and v1, PARSE all along, was never listed. The export saw v2 gone
    # (its outputs not found): that is a change of the scope, so it lists the scope again.
    from memories_provider.hooks.memories import MemoriesHook

    emu.control.configure(max_page_size=2)
    older = upload_video(b"\x01" * 10, "older.mp4")
    emu.control.set_status(older, "UNPARSE")
    videos = [upload_video(b"\x00" * (10 + i), f"v{i}.mp4") for i in range(4)]
    victim = videos[2]
    real = MemoriesHook.get_transcript

    def get_transcript(self: MemoriesHook, video_no: str, kind: Any, **kwargs: Any) -> Any:
        if video_no == victim and kind == "visual":
            requests.post(
                f"{emu.v1_url}/delete_videos",
                headers={"Authorization": emu.api_key},
                json=[victim],
                timeout=10,
            ).raise_for_status()
            emu.control.set_status(older, "PARSE")
        return real(self, video_no, kind, **kwargs)

    monkeypatch.setattr(MemoriesHook, "get_transcript", get_transcript)
    target = tmp_path / "all.jsonl"
    result = run(all_parsed=True, destination=str(target))
    exported = {r["video_no"] for r in read_jsonl(target.read_bytes())}
    assert exported == {videos[0], videos[1], videos[3], older}
    assert result["skipped"] == [victim]


def test_all_parsed_lists_again_after_a_deletion_and_a_parse_the_total_does_not_show(
    emu: Any, upload_video: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pages of 2, newest first: [v3 v2 | v1 v0], an older video not PARSE yet. While the last
    # output of page 1 is fetched, v3 (exported already) is deleted and the older video turns
    # PARSE at the end of the listing: page 2 is then [v0 older]. Every page counted 4, the
    # listing held 4 videos, none twice, none found gone: it looks whole, yet v1, PARSE all
    # along, was never listed. Only listing the scope again finds it.
    from memories_provider.hooks.memories import MemoriesHook

    emu.control.configure(max_page_size=2)
    older = upload_video(b"\x01" * 10, "older.mp4")
    emu.control.set_status(older, "UNPARSE")
    videos = [upload_video(b"\x00" * (10 + i), f"v{i}.mp4") for i in range(4)]
    real = MemoriesHook.get_transcript

    def get_transcript(self: MemoriesHook, video_no: str, kind: Any, **kwargs: Any) -> Any:
        if video_no == videos[2] and kind == "audio":  # page 1's last output; page 2 not asked yet
            requests.post(
                f"{emu.v1_url}/delete_videos",
                headers={"Authorization": emu.api_key},
                json=[videos[3]],
                timeout=10,
            ).raise_for_status()
            emu.control.set_status(older, "PARSE")
        return real(self, video_no, kind, **kwargs)

    monkeypatch.setattr(MemoriesHook, "get_transcript", get_transcript)
    target = tmp_path / "all.jsonl"
    result = run(all_parsed=True, destination=str(target))
    exported = {r["video_no"] for r in read_jsonl(target.read_bytes())}
    assert exported == {*videos, older}  # v3's rows were written before it went
    assert (result["videos"], result["skipped"]) == (5, [])
    assert emu.control.count("list_videos") == 4  # 2 pages, then the second listing's 2


def test_all_parsed_takes_a_page_that_videos_added_ahead_pushed_down_for_no_repeated_page(
    emu: Any, upload_video: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pages of 2, newest first: [v3 v2 | v1 v0]. Two videos uploaded (and parsed) while page 1 is
    # exported push it down whole: page 2 is then [v3 v2], page 1's videos again, as a service
    # that ignores `page` would answer. Its total_count moved (4 -> 6): the listing moved, the
    # service did not misbehave, and the export goes on, each video once, the new ones included.
    from memories_provider.hooks.memories import MemoriesHook

    emu.control.configure(max_page_size=2)
    videos = [upload_video(b"\x00" * (10 + i), f"v{i}.mp4") for i in range(4)]
    added: list[str] = []
    real = MemoriesHook.get_transcript

    def get_transcript(self: MemoriesHook, video_no: str, kind: Any, **kwargs: Any) -> Any:
        if video_no == videos[2] and not added:  # the last of page 1
            added.extend(upload_video(b"\x02" * (10 + i), f"n{i}.mp4") for i in range(2))
        return real(self, video_no, kind, **kwargs)

    monkeypatch.setattr(MemoriesHook, "get_transcript", get_transcript)
    target = tmp_path / "all.jsonl"
    result = run(all_parsed=True, kinds="visual", destination=str(target))
    rows = read_jsonl(target.read_bytes())
    assert sorted(r["video_no"] for r in rows if r["index"] == 0) == sorted(videos + added)
    assert len(added) == 2 and (result["videos"], result["skipped"]) == (6, [])


def test_all_parsed_fails_on_a_service_that_ignores_page_and_counts_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Without total_count, paging stops at a short page. A service that drops `page` answers
    # every page with page 1, full: the export asked for pages for ever (here the scripted
    # service gives up after 20 and answers an empty page), then reported page 1 as the scope.
    from urllib.parse import parse_qs, urlsplit

    from airflow.providers.common.compat.sdk import AirflowException
    from connections import point_memories_default_at
    from local_http import LocalServer, QuietHandler

    ids = ["VI568102998803353600", "VI568102998803353601"]
    pages: list[int] = []

    class IgnoresPage(QuietHandler):
        def _json(self, data: Any) -> None:
            body = json.dumps({"code": "0000", "msg": "success", "data": data}).encode()
            self.send_body(200, {"Content-Type": "application/json"}, body)

        def do_POST(self) -> None:
            request = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            pages.append(request["page"])
            rows = [{"video_no": v, "video_name": "x.mp4", "status": "PARSE"} for v in ids]
            self._json({"current_page": 1, "page_size": 2, "videos": rows if len(pages) <= 20 else []})

        def do_GET(self) -> None:
            video_no = parse_qs(urlsplit(self.path).query)["video_no"][0]
            segments = [{"index": 0, "content": "hello", "startTime": "0", "endTime": "1"}]
            self._json({"videoNo": video_no, "transcriptions": segments, "createTime": "1"})

    target = tmp_path / "x.jsonl"
    with LocalServer(IgnoresPage) as server:
        point_memories_default_at(monkeypatch, server.url)
        with pytest.raises(AirflowException, match=r"page 2 of the listing of unique_id 'default'"):
            run(all_parsed=True, kinds=["visual"], destination=str(target))
    assert pages == [1, 2]
    assert files_in(tmp_path) == []


def test_a_retry_does_not_replace_what_another_writer_put_there_during_its_export(
    emu: Any, three: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # overwrite=False: a retry replaces its own earlier try's export, as it found it before any
    # request. Another writer replacing that file while the retry exported (another run with
    # overwrite=True, a person) was clobbered by the retry's commit, a plain replace: the retry
    # overwrote a file that was not its own. It now looks again just before its commit.
    from airflow.providers.common.compat.sdk import AirflowFailException

    from memories_provider.hooks.memories import MemoriesHook

    target = tmp_path / "index.jsonl"
    _export_as(_ti(), video_nos=three[:1], destination=str(target))
    real = MemoriesHook.get_transcript

    def get_transcript(self: MemoriesHook, video_no: str, kind: Any, **kwargs: Any) -> Any:
        if video_no == three[1]:
            target.write_bytes(b"another writer's file\n")
        return real(self, video_no, kind, **kwargs)

    monkeypatch.setattr(MemoriesHook, "get_transcript", get_transcript)
    with pytest.raises(AirflowFailException, match="created by another writer during the export"):
        _export_as(_ti(), video_nos=three, destination=str(target))
    assert target.read_bytes() == b"another writer's file\n"
    assert [p for p in files_in(tmp_path) if p.endswith(".part")] == []


def test_all_parsed_says_so_when_the_scope_kept_changing_through_every_listing(
    emu: Any,
    upload_video: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    # A busy scope: a video turns PARSE before every page is asked for. Each listing finds new
    # ones, so the export stopped after its 4th listing without a word, though the last could
    # have missed a video a deletion moved; now the log says the export may be incomplete.
    from memories_provider.hooks.memories import MemoriesHook

    emu.control.configure(max_page_size=2)
    for i in range(3):
        upload_video(b"\x00" * (10 + i), f"v{i}.mp4")
    real = MemoriesHook.list_videos
    made: list[str] = []

    def list_videos(self: MemoriesHook, **kwargs: Any) -> Any:
        made.append(upload_video(b"\x03" * (10 + len(made)), f"n{len(made)}.mp4"))
        return real(self, **kwargs)

    monkeypatch.setattr(MemoriesHook, "list_videos", list_videos)
    target = tmp_path / "all.jsonl"
    with caplog.at_level(logging.WARNING):
        result = run(all_parsed=True, kinds="visual", destination=str(target))
    captured = capfd.readouterr()
    logged = caplog.text + captured.out + captured.err
    assert result["videos"] >= 3
    assert "unique_id 'default' changed under each of its 4 listings" in logged


def test_a_retry_does_not_replace_what_another_writer_put_in_s3_just_before_its_commit(
    emu: Any,
    three: list[str],
    moto_s3_server: Any,
    s3_bucket: str,
    s3_if_match_on_completion: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The retry looked at its own earlier export again just before the commit, then completed with a
    # plain replace: another writer's object put there between the look and the completion was
    # overwritten. Now the completion carries the ETag seen (If-Match), checked as S3 does by
    # s3_if_match_on_completion; the other writer puts its object as the completion arrives.
    from airflow.providers.common.compat.sdk import AirflowFailException
    from moto.s3.responses import S3Response

    uri = f"s3://{s3_bucket}/exports/index.jsonl"
    common = {"destination": uri, "destination_conn_id": moto_s3_server.conn_id}
    _export_as(_ti(), video_nos=three[:1], **common)
    checked = S3Response._key_response_post
    theirs = b"another writer's object\n"

    def racing(self: Any, request: Any, body: bytes, bucket: str, query: Any, key: str) -> Any:
        if query.get("uploadId") and key == "exports/index.jsonl":
            self.backend.put_object(bucket, key, theirs)
        return checked(self, request, body, bucket, query, key)

    monkeypatch.setattr(S3Response, "_key_response_post", racing)
    with pytest.raises(AirflowFailException, match="created by another writer during the export"):
        _export_as(_ti(), video_nos=three, **common)
    client = moto_s3_server.client()
    assert client.get_object(Bucket=s3_bucket, Key="exports/index.jsonl")["Body"].read() == theirs
    assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
    assert len(s3_if_match_on_completion) == 1
    # Removed (not replaced) as the completion arrives: nothing to keep, the next try writes it.
    from airflow.providers.common.compat.sdk import AirflowException

    client.delete_object(Bucket=s3_bucket, Key="exports/index.jsonl")
    monkeypatch.setattr(S3Response, "_key_response_post", checked)
    _export_as(_ti(), video_nos=three[:1], **common)

    def removing(self: Any, request: Any, body: bytes, bucket: str, query: Any, key: str) -> Any:
        if query.get("uploadId") and key == "exports/index.jsonl":
            self.backend.delete_object(bucket, key)
        return checked(self, request, body, bucket, query, key)

    monkeypatch.setattr(S3Response, "_key_response_post", removing)
    with pytest.raises(AirflowException, match="removed by another writer during the export") as gone:
        _export_as(_ti(), video_nos=three, **common)
    assert not isinstance(gone.value, AirflowFailException)
    assert client.list_objects_v2(Bucket=s3_bucket).get("KeyCount", 0) == 0
    monkeypatch.setattr(S3Response, "_key_response_post", checked)
    _export_as(_ti(), video_nos=three, **common)
    body = client.get_object(Bucket=s3_bucket, Key="exports/index.jsonl")["Body"].read()
    assert read_jsonl(body) == expected_rows(emu, three)


def test_a_retry_does_not_replace_what_another_writer_put_in_azure_just_before_its_commit(
    emu: Any, three: list[str], azurite: Any, azure_container: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As on S3: the block list was committed unconditionally after the second look. Now it carries
    # the ETag seen (If-Match), which Azurite checks; the other writer commits its blob as ours is
    # about to be committed.
    from airflow.providers.common.compat.sdk import AirflowFailException
    from azure.storage.blob import BlobClient

    uri = f"azure://{azure_container}/index.jsonl"
    common = {"destination": uri, "destination_conn_id": azurite.conn_id}
    _export_as(_ti(), video_nos=three[:1], **common)
    blob = azurite.service().get_blob_client(azure_container, "index.jsonl")
    theirs = b"another writer's blob\n"
    real_commit = BlobClient.commit_block_list

    def racing(self: BlobClient, *args: Any, **kwargs: Any) -> Any:
        if self.blob_name == "index.jsonl":
            blob.upload_blob(theirs, overwrite=True)
        return real_commit(self, *args, **kwargs)

    monkeypatch.setattr(BlobClient, "commit_block_list", racing)
    with pytest.raises(AirflowFailException, match="created by another writer during the export"):
        _export_as(_ti(), video_nos=three, **common)
    assert blob.download_blob().readall() == theirs


def test_a_retry_does_not_replace_what_another_writer_put_in_gcs_just_before_its_commit(
    emu: Any,
    three: list[str],
    gcs_preconditions: Any,
    gcs_server: Any,
    gcs_bucket: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As on S3 and Azure: the upload now carries the generation seen (ifGenerationMatch), which
    # gcs_preconditions checks as GCS does on the upload's last request; the other writer puts its
    # object as ours is about to send it.
    from airflow.providers.common.compat.sdk import AirflowFailException
    from google.cloud.storage.fileio import BlobWriter

    uri = f"gs://{gcs_bucket}/index.jsonl"
    _export_as(_ti(), video_nos=three[:1], destination=uri)
    blob = gcs_server.client().bucket(gcs_bucket).blob("index.jsonl")
    theirs = b"another writer's object\n"
    real_close = BlobWriter.close

    def racing(self: BlobWriter) -> None:
        if self._blob.name == "index.jsonl" and not self.closed:
            blob.upload_from_string(theirs)
        real_close(self)

    monkeypatch.setattr(BlobWriter, "close", racing)
    with pytest.raises(AirflowFailException, match="created by another writer during the export"):
        _export_as(_ti(), video_nos=three, destination=uri)
    assert blob.download_as_bytes() == theirs
