"""MemoriesUploadOperator inside real Airflow runs (``dag.test()``): retries and deferral."""

from __future__ import annotations

import hashlib
import os
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


def test_an_upload_the_service_refuses_fails_on_its_first_try(emu: Any, video: Path, run_dag: Any) -> None:
    # 0001: a rule of the service's the pre-flight checks did not know. Asked again, it answers
    # the same: a retry would only send the whole file once more (and spend a rate-limit slot).
    emu.control.inject_fault("upload", "json_error", code="0001", msg="unsupported codec")
    run = run_dag(_dag("memories_upload_refused", source=str(video)))
    [ti] = [t for t in run.get_task_instances() if t.task_id == "upload"]
    assert (str(ti.state), ti.try_number) == ("failed", 1)
    assert emu.control.count("upload") == 1 and emu.control.videos() == []


def test_deferrable_rate_limit_wait_runs_through_the_trigger(emu: Any, video: Path, run_dag: Any) -> None:
    emu.control.inject_fault("upload", "code_0429", count=1, retry_after=1)
    run = run_dag(_dag("memories_upload_deferred", source=str(video), deferrable=True))
    assert run.state == "success", _task_state(run)
    assert [r["code"] for r in emu.control.request_log("upload")] == ["0429", "0000"]
    assert len(emu.control.videos()) == 1


def test_deferrable_rate_limit_waits_stop_at_max_retries_under_dag_test(
    emu: Any, video: Path, run_dag: Any, set_memories_conn: Any
) -> None:
    from airflow import DAG

    set_memories_conn(max_retries=2)
    emu.control.inject_fault("upload", "code_0429", count=6, retry_after=0.05)
    with DAG("memories_upload_rl_count", start_date=pendulum.datetime(2024, 1, 1), schedule=None) as dag:
        MemoriesUploadOperator(task_id="upload", source=str(video), deferrable=True, retries=0)
    run = run_dag(dag)
    assert run.state == "failed" and emu.control.count("upload") == 3  # the first try and 2 retries


@pytest.mark.parametrize("deferrable", [False, True], ids=["worker", "deferred"])
def test_retry_after_the_upload_reuses_the_video_from_the_record(
    emu: Any, video: Path, run_dag: Any, deferrable: bool
) -> None:
    # Attempt 1 uploads, then gives up waiting for PARSE; the retry must not upload again. It
    # finds the video_no in the record the first attempt wrote (the task state store on Airflow
    # >= 3.3, a Variable on 2.11). Deferred as on the worker: a wait for PARSE that times out fails
    # the attempt, and the retry reuses the recorded video and waits again (AirflowSensorTimeout
    # would end the task with no retry).
    emu.control.configure(parse_delay=3600)

    def parse_all(context: Any) -> None:  # runs between the attempts
        for v in emu.control.videos():
            emu.control.set_status(v["video_no"], "PARSE")

    dag = _dag(
        f"memories_upload_retry_reuses_{'deferred' if deferrable else 'worker'}",
        source=str(video),
        wait_for_parse=True,
        deferrable=deferrable,
        poll_interval=0.2,
        timeout=1,
        on_retry_callback=parse_all,
    )
    run = run_dag(dag)
    assert run.state == "success", _task_state(run)
    assert len(emu.control.videos()) == 1 and emu.control.count("upload") == 1
    if not deferrable:  # one get_metadata, no tag lookup (the deferred wait polls list_videos)
        assert emu.control.count("get_metadata") == 1
        assert record_variable(emu.control.videos()[0]) not in leftover_records()  # 2.11: gone on success


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


def test_a_deferred_wait_for_parse_returns_the_video_no(emu: Any, video: Path, run_dag: Any) -> None:
    # The XCom return_value downstream tasks read (a sensor, a download): the video's id, also
    # where the resumed task is not handed the deferral's kwargs back (dag.test()).
    emu.control.configure(parse_delay=1)
    dag = _dag(
        "memories_upload_wait_xcom",
        source=str(video),
        wait_for_parse=True,
        deferrable=True,
        poll_interval=0.2,
    )
    run = run_dag(dag)
    assert run.state == "success", _task_state(run)
    [v] = emu.control.videos()
    [ti] = [t for t in run.get_task_instances() if t.task_id == "upload"]
    assert ti.xcom_pull(task_ids="upload") == v["video_no"]


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


# ---------------------------------------------------------------------------- lost answers, real retries
#
# The earlier attempt's video is held UNPARSE (parse_delay=3600) and moved only where a test says
# so: Airflow's retry must still never upload a second, billed copy.

#: A different file of the same size: what another task might upload as "clip.mp4" too.
OTHER = bytes(reversed(VIDEO))


def record_variable(video: dict) -> str:
    """The name of the Variable that holds the record of ``video``'s upload (Airflow < 3.3)."""
    from memories_provider.operators._attempt_record import VARIABLE_PREFIX

    [tag] = [t for t in video["tags"] if t.startswith("airflow-")]
    return VARIABLE_PREFIX + tag


def leftover_records() -> list[str]:
    """Upload records kept as Airflow Variables (Airflow < 3.3, or forced) in the metastore
    (tests whose task failed for good leave theirs: compare by name)."""
    from airflow.models.variable import Variable
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from memories_provider.operators._attempt_record import VARIABLE_PREFIX

    with create_session() as session:
        return list(session.scalars(select(Variable.key).where(Variable.key.startswith(VARIABLE_PREFIX))))


def _retry_state(run: Any) -> tuple[str, int]:
    [ti] = [t for t in run.get_task_instances() if t.task_id == "upload"]
    return str(ti.state), int(ti.try_number)


def _lost_answer_dag(dag_id: str, video: Path, *, deferrable: bool, **kwargs: Any):  # type: ignore[no-untyped-def]
    kwargs = {"poll_interval": 0.1, "lost_answer_grace": 0.2, "timeout": 600, **kwargs}
    return _dag(
        f"{dag_id}_{'deferred' if deferrable else 'worker'}",
        source=str(video),
        deferrable=deferrable,
        **kwargs,
    )


@pytest.mark.parametrize("deferrable", [False, True])
def test_lost_answer_with_the_video_unparse_for_the_whole_retry(
    emu: Any, video: Path, run_dag: Any, deferrable: bool
) -> None:
    emu.control.configure(parse_delay=3600)
    emu.control.inject_fault("upload", "accept_then_drop")
    run = run_dag(_lost_answer_dag("memories_lost_unparse", video, deferrable=deferrable, timeout=1))
    assert _retry_state(run) == ("failed", 2)  # undecided: failed, with nothing uploaded
    [v] = emu.control.videos()
    assert v["status"] == "UNPARSE" and emu.control.count("upload") == 1


@pytest.mark.parametrize("deferrable", [False, True])
def test_lost_answer_with_the_video_reaching_parse_during_the_retry(
    emu: Any, video: Path, run_dag: Any, after_first_look: Any, deferrable: bool
) -> None:
    emu.control.configure(parse_delay=3600)
    emu.control.inject_fault("upload", "accept_then_drop")
    looks = after_first_look(lambda: emu.control.set_status(emu.control.videos()[0]["video_no"], "PARSE"))
    run = run_dag(_lost_answer_dag("memories_lost_parse", video, deferrable=deferrable))
    assert _retry_state(run) == ("success", 2), _task_state(run)
    [v] = emu.control.videos()
    assert emu.control.count("upload") == 1 and looks[0] == 2
    [ti] = [t for t in run.get_task_instances() if t.task_id == "upload"]
    result = ti.xcom_pull(task_ids="upload", key="upload_result")
    assert result["video_no"] == v["video_no"] and result["reused"] is True
    assert record_variable(v) not in leftover_records()


def test_another_tasks_look_alike_between_the_attempts_is_not_reused(
    emu: Any, video: Path, run_dag: Any, after_first_look: Any, upload_video: Any
) -> None:
    emu.control.configure(parse_delay=3600)
    emu.control.inject_fault("upload", "accept_then_drop")
    theirs: list[str] = []

    def other_task_uploads(context: Any) -> None:  # between the attempts
        theirs.append(upload_video(OTHER, "clip.mp4"))

    def all_parse() -> None:
        for v in emu.control.videos():
            emu.control.set_status(v["video_no"], "PARSE")

    after_first_look(all_parse)
    dag = _lost_answer_dag(
        "memories_lost_lookalike", video, deferrable=True, on_retry_callback=other_task_uploads
    )
    run = run_dag(dag)
    assert _retry_state(run) == ("success", 2), _task_state(run)
    [ti] = [t for t in run.get_task_instances() if t.task_id == "upload"]
    ours = ti.xcom_pull(task_ids="upload", key="return_value")
    assert len(theirs) == 1 and ours != theirs[0]
    assert {v["video_no"] for v in emu.control.videos()} == {ours, theirs[0]}
    assert emu.control.count("upload") == 2  # attempt 1 and the other task; no duplicate


@pytest.mark.parametrize("deferrable", [False, True])
def test_an_upload_that_never_arrived_is_sent_again_beside_a_look_alike(
    emu: Any, video: Path, run_dag: Any, after_first_look: Any, upload_video: Any, deferrable: bool
) -> None:
    emu.control.configure(parse_delay=3600)
    emu.control.inject_fault("upload", "drop_before_response")  # body read whole, nothing stored
    theirs: list[str] = []
    after_first_look(lambda: emu.control.set_status(theirs[0], "PARSE"))
    dag = _lost_answer_dag(
        "memories_lost_never_arrived",
        video,
        deferrable=deferrable,
        on_retry_callback=lambda context: theirs.append(upload_video(OTHER, "clip.mp4")),
    )
    run = run_dag(dag)
    assert _retry_state(run) == ("success", 2), _task_state(run)
    [ti] = [t for t in run.get_task_instances() if t.task_id == "upload"]
    ours = ti.xcom_pull(task_ids="upload", key="return_value")
    videos = {v["video_no"]: v for v in emu.control.videos()}
    assert set(videos) == {ours, theirs[0]}
    assert any(t.startswith("airflow-") for t in videos[ours]["tags"])
    assert not any(t.startswith("airflow-") for t in videos[theirs[0]]["tags"])


def test_earlier_video_failing_to_parse_fails_the_retry(emu: Any, video: Path, run_dag: Any) -> None:
    emu.control.configure(parse_delay=3600)
    emu.control.inject_fault("upload", "accept_then_drop")

    def it_fails(context: Any) -> None:  # between the attempts
        [v] = emu.control.videos()
        emu.control.set_status(v["video_no"], "FAILED", "unsupported codec")

    run = run_dag(
        _lost_answer_dag("memories_lost_failed", video, deferrable=True, on_retry_callback=it_fails)
    )
    assert _retry_state(run) == ("failed", 2)  # documented: fails naming it; never a second upload
    assert emu.control.count("upload") == 1 and len(emu.control.videos()) == 1


def test_records_kept_as_variables_where_there_is_no_state_store(
    emu: Any, video: Path, run_dag: Any, after_first_look: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Airflow 2.11 (and 3.0-3.2) have no task state store: the record is an Airflow Variable. On
    # 3.3 the store is bypassed here to run the same path through the Task SDK's Variables.
    from memories_provider.operators import upload
    from memories_provider.operators._attempt_record import VariableBook

    monkeypatch.setattr(upload, "record_book", lambda context, tag: VariableBook(tag))
    emu.control.configure(parse_delay=3600)
    emu.control.inject_fault("upload", "accept_then_drop")
    between: list[list[str]] = []
    after_first_look(lambda: emu.control.set_status(emu.control.videos()[0]["video_no"], "PARSE"))
    dag = _lost_answer_dag(
        "memories_lost_variables",
        video,
        deferrable=False,
        on_retry_callback=lambda context: between.append(leftover_records()),
    )
    run = run_dag(dag)
    assert _retry_state(run) == ("success", 2), _task_state(run)
    [v] = emu.control.videos()
    assert len(between) == 1 and record_variable(v) in between[0]  # written before the send
    assert record_variable(v) not in leftover_records() and emu.control.count("upload") == 1


def test_a_source_replaced_by_a_longer_file_before_the_retry_is_uploaded_again(
    emu: Any, video: Path, run_dag: Any
) -> None:
    # Try 1 sends the file and loses the answer (the service keeps it, and parses it: its tag is
    # readable). Before try 2 the file at the same path is replaced by a longer one. The earlier
    # video holds the old bytes: try 2 returned it as this source's upload.
    emu.control.inject_fault("upload", "accept_then_drop")
    longer = VIDEO + b"e" * 1000

    def replace_the_source(context: Any) -> None:
        video.write_bytes(longer)

    run = run_dag(
        _lost_answer_dag(
            "memories_lost_resized", video, deferrable=False, on_retry_callback=replace_the_source
        )
    )
    assert _retry_state(run) == ("success", 2), _task_state(run)
    assert emu.control.count("upload") == 2
    [ti] = [t for t in run.get_task_instances() if t.task_id == "upload"]
    result = ti.xcom_pull(task_ids="upload", key="upload_result")
    sizes = {v["video_no"]: v["size"] for v in emu.control.videos()}
    assert result["reused"] is False and sizes[result["video_no"]] == len(longer)


def test_a_source_replaced_by_another_file_of_the_same_size_before_the_retry_is_uploaded_again(
    emu: Any, video: Path, run_dag: Any
) -> None:
    # As above, but the new file has the very size of the old one: size and tag both matched, and
    # try 2 returned try 1's video, which holds the old bytes.
    emu.control.inject_fault("upload", "accept_then_drop")

    def replace_the_source(context: Any) -> None:
        fresh = video.with_name("fresh.mp4")
        fresh.write_bytes(OTHER)
        os.replace(fresh, video)

    run = run_dag(
        _lost_answer_dag(
            "memories_lost_replaced", video, deferrable=False, on_retry_callback=replace_the_source
        )
    )
    assert _retry_state(run) == ("success", 2), _task_state(run)
    assert emu.control.count("upload") == 2
    [ti] = [t for t in run.get_task_instances() if t.task_id == "upload"]
    result = ti.xcom_pull(task_ids="upload", key="upload_result")
    shas = {v["video_no"]: v["sha256"] for v in emu.control.videos()}
    assert result["reused"] is False and shas[result["video_no"]] == hashlib.sha256(OTHER).hexdigest()
