"""A refused key, account or balance fails the task on its first try (spec: "fail fast, no retry").

``0401`` (key invalid), ``0402`` (not enough credits), ``0403`` (account disabled) and ``9009``
(permission denied) are answered the same way to every retry: a task with ``retries=2`` would send
the same request twice more, ``retry_delay`` apart, for the same refusal.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
import pytest
from airflow.providers.common.compat.sdk import AirflowFailException
from connections import use_emulator_conn

from memories_provider.client import MemoriesAuthError, MemoriesInsufficientCreditsError
from memories_provider.operators.download import MemoriesDownloadOperator
from memories_provider.operators.export import MemoriesExportOperator
from memories_provider.operators.upload import MemoriesUploadOperator

VIDEO = b"\x00\x00\x00\x18ftypmp42" + b"r" * 4096

#: Exceptions seen by ``on_failure_callback`` (dag.test runs tasks in this process).
FAILURES: list[BaseException] = []


def _record(context: Any) -> None:
    FAILURES.append(context["exception"])


def _run(run_dag: Any, dag_id: str, operator: type, **kwargs: Any) -> Any:
    from airflow import DAG

    with DAG(dag_id, start_date=pendulum.datetime(2024, 1, 1), schedule=None, catchup=False) as dag:
        operator(
            task_id="task",
            retries=2,
            retry_delay=timedelta(0),  # a retry would run at once, and show
            on_failure_callback=_record,
            **kwargs,
        )
    FAILURES.clear()
    run = run_dag(dag)
    [ti] = run.get_task_instances()
    return run, ti


@pytest.fixture
def video_no(emu: Any, upload_video: Any) -> str:
    return str(upload_video(VIDEO))


def test_a_wrong_key_fails_a_download_at_once(
    emu: Any, video_no: str, run_dag: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_emulator_conn(monkeypatch, emu, password="sk-not-the-key", max_retries=3)
    run, ti = _run(
        run_dag, "refused_download", MemoriesDownloadOperator, video_no=video_no, destination=f"{tmp_path}/"
    )
    assert (run.state, ti.try_number) == ("failed", 1)
    [error] = FAILURES
    assert (
        isinstance(error, AirflowFailException)
        and isinstance(error, MemoriesAuthError)
        and error.code == "0401"
    )
    assert "sk-not-the-key" not in str(error)


def test_a_disabled_account_fails_an_export_at_once(
    emu: Any, video_no: str, run_dag: Any, tmp_path: Path
) -> None:
    emu.control.configure(account_disabled=True)
    run, ti = _run(
        run_dag,
        "refused_export",
        MemoriesExportOperator,
        video_nos=[video_no],
        destination=str(tmp_path / "rows.csv"),
    )
    assert (run.state, ti.try_number) == ("failed", 1)
    [error] = FAILURES
    assert (
        isinstance(error, AirflowFailException)
        and isinstance(error, MemoriesAuthError)
        and error.code == "0403"
    )


@pytest.mark.parametrize("deferrable", [False, True], ids=["worker", "deferrable"])
def test_an_upload_short_of_credits_fails_at_once(
    emu: Any, run_dag: Any, tmp_path: Path, deferrable: bool
) -> None:
    source = tmp_path / "clip.mp4"
    source.write_bytes(VIDEO)
    emu.control.configure(credits=0.0)
    run, ti = _run(
        run_dag,
        f"refused_upload_{deferrable}",
        MemoriesUploadOperator,
        source=str(source),
        deferrable=deferrable,
    )
    assert (run.state, ti.try_number) == ("failed", 1)
    [error] = FAILURES
    assert (
        isinstance(error, AirflowFailException)
        and isinstance(error, MemoriesInsufficientCreditsError)
        and error.code == "0402"
    )
    assert "add credits to the account" in str(error)
    assert emu.control.count("upload") == 1 and emu.control.videos() == []
