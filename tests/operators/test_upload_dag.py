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
