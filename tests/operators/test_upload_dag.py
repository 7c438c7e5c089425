"""MemoriesUploadOperator inside real Airflow runs (``dag.test()``): retries and deferral."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
import pytest

from memories_provider.operators.upload import MemoriesUploadOperator

VIDEO = b"\x00\x00\x00\x18ftypmp42" + b"d" * 4096


@pytest.fixture
def video(tmp_path: Path) -> Path:
    path = tmp_path / "clip.mp4"
    path.write_bytes(VIDEO)
    return path


def _dag(dag_id: str, **op_kwargs: Any):  # type: ignore[no-untyped-def]
    from airflow import DAG

    with DAG(dag_id, start_date=pendulum.datetime(2024, 1, 1), schedule=None, catchup=False) as dag:
        MemoriesUploadOperator(task_id="upload", retries=1, retry_delay=timedelta(seconds=0), **op_kwargs)
    return dag


def _task_state(run: Any) -> str:
    [ti] = [t for t in run.get_task_instances() if t.task_id == "upload"]
    return str(ti.state)


def test_airflow_retry_after_a_lost_response_uploads_once(emu: Any, video: Path, run_dag: Any) -> None:
    emu.control.inject_fault("upload", "accept_then_drop")
    run = run_dag(_dag("memories_upload_retry", source="{{ params.src }}", params={"src": str(video)}))
    assert run.state == "success", _task_state(run)
    assert len(emu.control.videos()) == 1
    assert emu.control.count("upload") == 1


def test_deferrable_rate_limit_wait_runs_through_the_trigger(emu: Any, video: Path, run_dag: Any) -> None:
    emu.control.inject_fault("upload", "code_0429", count=1, retry_after=1)
    run = run_dag(_dag("memories_upload_deferred", source=str(video), deferrable=True))
    assert run.state == "success", _task_state(run)
    assert [r["code"] for r in emu.control.request_log("upload")] == ["0429", "0000"]
    assert len(emu.control.videos()) == 1


def test_retry_after_the_upload_reuses_the_video_from_the_state_store(
    emu: Any, video: Path, run_dag: Any
) -> None:
    # Attempt 1 uploads, then gives up waiting for PARSE; the retry must not upload again. On
    # Airflow >= 3.3 it finds the video in the real task state store (one get_metadata, no tag
    # lookup); on 2.11 through the idempotency tag.
    from airflow import __version__

    emu.control.configure(parse_delay=3600)

    def parse_all(context: Any) -> None:  # runs between the attempts
        for v in emu.control.videos():
            emu.control.set_status(v["video_no"], "PARSE")

    dag = _dag(
        "memories_upload_state_store",
        source=str(video),
        wait_for_parse=True,
        deferrable=False,
        poll_interval=0.2,
        timeout=1,
        on_retry_callback=parse_all,
    )
    run = run_dag(dag)
    assert run.state == "success", _task_state(run)
    assert len(emu.control.videos()) == 1 and emu.control.count("upload") == 1
    if tuple(int(p) for p in __version__.split(".")[:2]) >= (3, 3):
        assert emu.control.count("get_metadata") == 1
    else:
        assert emu.control.count("get_metadata") == 0


def test_deferrable_wait_for_parse_runs_through_the_status_trigger(
    emu: Any, video: Path, run_dag: Any
) -> None:
    emu.control.configure(parse_delay=1)
    dag = _dag(
        "memories_upload_wait", source=str(video), wait_for_parse=True, deferrable=True, poll_interval=0.2
    )
    run = run_dag(dag)
    assert run.state == "success", _task_state(run)
    [v] = emu.control.videos()
    assert v["status"] == "PARSE"
    assert emu.control.count("list_videos") >= 3  # tag lookup, the worker's first check, the trigger


def test_wait_for_parse_survives_a_transient_status_error(
    emu: Any, set_memories_conn: Any, video: Path, run_dag: Any
) -> None:
    # The client gives up on the 503 at once (max_retries=0); the wait polls again, as the sensor
    # does, instead of failing the attempt (which a retry would then hide).
    set_memories_conn(max_retries=0)
    emu.control.configure(parse_delay=0.5)
    emu.control.inject_fault("list_videos", "http_503")
    dag = _dag(
        "memories_upload_wait_transient",
        source=str(video),
        idempotent=False,  # the wait's first status check is then the first list_videos call
        wait_for_parse=True,
        deferrable=False,
        poll_interval=0.1,
    )
    run = run_dag(dag)
    assert run.state == "success", _task_state(run)
    [ti] = [t for t in run.get_task_instances() if t.task_id == "upload"]
    assert ti.try_number == 1
    assert emu.control.request_log("list_videos")[0]["http_status"] == 503
    assert emu.control.videos()[0]["status"] == "PARSE" and emu.control.count("upload") == 1
