"""MemoriesVideoStatusSensor in real Airflow runs (``dag.test()``) against the emulator, in every mode."""

from __future__ import annotations

import math
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import airflow
import pendulum
import pytest
import requests
from airflow.providers.common.compat.sdk import (
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
)
from connections import use_emulator_conn
from status_waits import after_first_status_check

from memories_provider.sensors.video_status import MemoriesVideoStatusSensor, handle_status_event

AIRFLOW_VERSION = tuple(int(p) for p in airflow.__version__.split(".")[:2])
VIDEO = b"\x00\x00\x00\x18ftypmp42" + b"s" * 2048


@pytest.fixture
def emu(memories_emulator: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    use_emulator_conn(monkeypatch, memories_emulator, max_retries=0)
    return memories_emulator


def upload(emu: Any, name: str = "clip.mp4") -> str:
    body = requests.post(
        f"{emu.v1_url}/upload",
        headers={"Authorization": emu.api_key},
        files={"file": (name, VIDEO, "video/mp4")},
        timeout=30,
    ).json()
    assert body["code"] == "0000", body
    return str(body["data"]["videoNo"])


def _dag(dag_id: str, **sensor_kwargs: Any):  # type: ignore[no-untyped-def]
    from airflow import DAG

    with DAG(dag_id, start_date=pendulum.datetime(2024, 1, 1), schedule=None, catchup=False) as dag:
        MemoriesVideoStatusSensor(task_id="wait", **sensor_kwargs)
    return dag


def _ti(run: Any) -> Any:
    [ti] = [t for t in run.get_task_instances() if t.task_id == "wait"]
    return ti


MODES = [
    pytest.param({"mode": "poke"}, id="poke"),
    pytest.param({"mode": "reschedule"}, id="reschedule"),
    pytest.param({"deferrable": True}, id="deferrable"),
]


@pytest.mark.parametrize("mode", MODES)
def test_success_after_waiting_returns_the_metadata(emu: Any, run_dag: Any, mode: dict) -> None:
    video_no = upload(emu)
    emu.control.set_status(video_no, "UNPARSE")  # held until the sensor has seen it unparsed
    with after_first_status_check(emu, lambda: emu.control.set_status(video_no, "PARSE")):
        run = run_dag(
            _dag(f"wait_ok_{next(iter(mode))}", video_no=video_no, poke_interval=0.2, timeout=30, **mode)
        )
    assert run.state == "success"
    [video] = _ti(run).xcom_pull(task_ids="wait")
    assert (video["video_no"], video["status"]) == (video_no, "PARSE")
    assert emu.control.count("list_videos") >= 2  # a check that saw UNPARSE, then one that saw PARSE


#: Exception type names seen by ``on_failure_callback`` (dag.test runs tasks in this process).
FAILURES: list[str] = []


#: Their messages.
MESSAGES: list[str] = []


def _record_failure(context: Any) -> None:
    FAILURES.append(type(context["exception"]).__name__)
    MESSAGES.append(str(context["exception"]))


@pytest.mark.parametrize("mode", MODES)
def test_timeout_fails_and_soft_fail_skips(emu: Any, run_dag: Any, mode: dict) -> None:
    """A timeout ends as AirflowSensorTimeout in every mode: failed without spending retries."""
    video_no = upload(emu)
    emu.control.set_status(video_no, "UNPARSE")  # held there
    name = next(iter(mode))
    FAILURES.clear()
    retries = {"retries": 2, "retry_delay": timedelta(0)}  # a retry would run at once, and show
    common = {"video_no": video_no, "poke_interval": 0.2, "timeout": 1, **retries, **mode}
    run = run_dag(_dag(f"wait_timeout_{name}", on_failure_callback=_record_failure, **common))
    ti = _ti(run)
    assert (run.state, str(ti.state)) == ("failed", "failed")
    assert FAILURES == ["AirflowSensorTimeout"]  # not a TaskDeferralError from the deferral timeout
    assert ti.try_number == 1  # AirflowSensorTimeout: no retry spent
    run = run_dag(_dag(f"wait_soft_{name}", soft_fail=True, **common))
    assert str(_ti(run).state) == "skipped"


#: A permanent rate-limit storm: every status call answers 0429 with ``Retry-After: 4``.
STORM_RETRY_AFTER = 4.0


@pytest.mark.parametrize("mode", MODES)
def test_the_timeout_holds_under_a_0429_storm_with_retry_after(
    emu: Any, run_dag: Any, monkeypatch: pytest.MonkeyPatch, mode: dict
) -> None:
    """No poke, worker-side check, client retry or Retry-After sleep runs past the timeout."""
    # The connection default: five retries, each honouring Retry-After.
    use_emulator_conn(monkeypatch, emu, max_retries=5)
    video_no = upload(emu)
    emu.control.set_status(video_no, "UNPARSE")
    emu.control.inject_fault("list_videos", "code_0429", count=10_000, retry_after=STORM_RETRY_AFTER)
    timeout, interval = 3.0, 1.0
    name = next(iter(mode))
    FAILURES.clear()
    MESSAGES.clear()
    retries = {"retries": 2, "retry_delay": timedelta(0)}
    run = run_dag(
        _dag(
            f"wait_storm_{name}",
            video_no=video_no,
            poke_interval=interval,
            timeout=timeout,
            on_failure_callback=_record_failure,
            **retries,
            **mode,
        )
    )
    ti = _ti(run)
    assert (run.state, FAILURES, ti.try_number) == ("failed", ["AirflowSensorTimeout"], 1)  # no retry spent
    assert f"no status seen: {video_no}" in MESSAGES[0]
    if mode.get("mode") != "reschedule" or AIRFLOW_VERSION >= (3, 3):  # kept in the task state store
        assert "the last status check failed: Request has exceeded the limit" in MESSAGES[0]
    times = [r["time"] for r in emu.control.request_log("list_videos")]
    # The deadline math: a retry would sleep 4 s, past the 3 s timeout, so none is made; each poke
    # (or the trigger's first request) sends one request, all within the timeout of the first one.
    # Without the deadline a poke would block 5 x 4 s, and the trigger would start a fresh window.
    assert 1 <= len(times) <= math.floor(timeout / interval) + 2
    assert max(times) - min(times) < timeout + 1.0  # (a request sent just in time may arrive late)


def test_deferral_timeout_is_only_a_backstop_behind_the_triggers_deadline(emu: Any) -> None:
    """The trigger's own timeout event must win the race with Airflow's deferral timeout."""
    from airflow.providers.common.compat.sdk import TaskDeferred

    video_no = upload(emu)
    emu.control.set_status(video_no, "UNPARSE")
    sensor = MemoriesVideoStatusSensor(
        task_id="wait", video_no=video_no, deferrable=True, poke_interval=45, timeout=600
    )
    before = time.time()
    with pytest.raises(TaskDeferred) as info:
        sensor.execute({})
    after = time.time()
    trigger = info.value.trigger
    # The deadline counts from the start of execute(), worker-side check included: no fresh window.
    assert before + 600 <= trigger.end_time <= after + 600
    # The deferral timeout is the time left to end_time plus a margin of max(60 s, 2 poll intervals).
    margin = info.value.timeout.total_seconds() - 90
    assert trigger.end_time - after <= margin <= trigger.end_time - before
    assert emu.control.count("list_videos") == 1  # the first check ran on the worker


@pytest.mark.parametrize("mode", MODES)
def test_failed_video_fails_at_once_without_retries(emu: Any, run_dag: Any, mode: dict) -> None:
    ok, bad = upload(emu), upload(emu)
    emu.control.set_status(bad, "FAILED", cause="corrupt file")
    name = next(iter(mode))
    run = run_dag(
        _dag(f"wait_failed_{name}", video_nos=[ok, bad], poke_interval=0.2, timeout=30, retries=3, **mode)
    )
    ti = _ti(run)
    assert str(ti.state) == "failed"
    assert ti.try_number == 1  # AirflowFailException: no retry spent


TRANSIENT = [
    pytest.param("http_503", {"count": 2}, id="503"),
    # The response stalls past the connection's 0.5 s read timeout, twice.
    pytest.param("slow_body", {"count": 2, "delay": 3.0}, id="read-timeout"),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("fault", "params"), TRANSIENT)
def test_transient_errors_are_survived(
    emu: Any, run_dag: Any, monkeypatch: pytest.MonkeyPatch, mode: dict, fault: str, params: dict
) -> None:
    """Deferrable: the first failure hits the check on the worker, the second the trigger."""
    use_emulator_conn(monkeypatch, emu, max_retries=0, timeout=0.5)
    video_no = upload(emu)
    emu.control.inject_fault("list_videos", fault, **params)
    name = f"wait_transient_{next(iter(mode))}_{fault}"
    run = run_dag(_dag(name, video_no=video_no, poke_interval=0.1, timeout=30, retries=0, **mode))
    assert run.state == "success"
    first, second, answered = emu.control.request_log("list_videos")
    assert (first.get("fault"), second.get("fault"), answered.get("fault")) == (fault, fault, None)


def test_exactly_one_of_video_no_or_video_nos() -> None:
    with pytest.raises(ValueError, match="exactly one of `video_no` or `video_nos`"):
        MemoriesVideoStatusSensor(task_id="w")
    with pytest.raises(ValueError, match="exactly one"):
        MemoriesVideoStatusSensor(task_id="w", video_no="VI1", video_nos=["VI2"])


def test_handle_status_event_maps_every_outcome() -> None:
    assert handle_status_event({"status": "success", "videos": [{"video_no": "VI1"}]}) == [
        {"video_no": "VI1"}
    ]
    with pytest.raises(AirflowFailException, match="bad"):
        handle_status_event({"status": "failed", "message": "bad"})
    with pytest.raises(AirflowSensorTimeout):
        handle_status_event({"status": "timeout", "message": "late"})
    with pytest.raises(AirflowSkipException):
        handle_status_event({"status": "timeout", "message": "late"}, soft_fail=True)
    with pytest.raises(Exception, match="boom"):
        handle_status_event({"status": "error", "message": "boom"})


def test_upload_wait_download_pipeline(emu: Any, run_dag: Any, tmp_path: Path) -> None:
    from airflow import DAG

    from memories_provider.operators.download import MemoriesDownloadOperator
    from memories_provider.operators.upload import MemoriesUploadOperator

    source = tmp_path / "in" / "clip.mp4"
    source.parent.mkdir()
    source.write_bytes(VIDEO)
    emu.control.configure(parse_delay=1.0)
    with DAG("upload_wait_download", start_date=pendulum.datetime(2024, 1, 1), schedule=None) as dag:
        up = MemoriesUploadOperator(task_id="upload", source=str(source))
        wait = MemoriesVideoStatusSensor(
            task_id="wait", video_no=up.output, deferrable=True, poke_interval=0.2
        )
        down = MemoriesDownloadOperator(
            task_id="download", video_no=up.output, destination=str(tmp_path / "out") + "/"
        )
        up >> wait >> down
    run = run_dag(dag)
    assert run.state == "success"
    [ti] = [t for t in run.get_task_instances() if t.task_id == "download"]
    result = ti.xcom_pull(task_ids="download")
    assert Path(result["uri"]).read_bytes() == VIDEO


def test_check_videos_batches_by_200_and_names_unknown_ids(emu: Any) -> None:
    from memories_provider.hooks.memories import MemoriesHook
    from memories_provider.sensors.video_status import check_videos

    real = upload(emu)
    missing = [f"VI{900000000000000000 + i}" for i in range(249)]
    hook = MemoriesHook()
    try:
        [video] = check_videos(hook, [real], None) or []
        assert video["video_no"] == real and video["status"] == "PARSE"
        with pytest.raises(AirflowFailException, match=missing[0]) as info:
            check_videos(hook, [real, *missing], None)
    finally:
        hook.close()
    assert "unknown video" in str(info.value) and real not in str(info.value)
    # one single-id round, then 250 ids in ceil(250/200) = 2 requests
    assert emu.control.count("list_videos") == 3


@pytest.mark.parametrize("mode", MODES)
def test_soft_fail_skips_a_failed_video_in_every_mode(emu: Any, run_dag: Any, mode: dict) -> None:
    """Airflow's soft_fail skips a sensor whose check fails: the deferrable check on the worker too,
    as it does when the video fails later, in the trigger."""
    bad = upload(emu)
    emu.control.set_status(bad, "FAILED", cause="corrupt file")
    name = next(iter(mode))
    run = run_dag(
        _dag(f"wait_soft_failed_{name}", video_no=bad, poke_interval=0.2, timeout=30, soft_fail=True, **mode)
    )
    assert str(_ti(run).state) == "skipped"
    assert emu.control.count("list_videos") == 1  # the one check that saw FAILED


@pytest.mark.parametrize("mode", MODES)
def test_ids_a_template_rendered_as_text_are_waited_for(emu: Any, run_dag: Any, mode: dict) -> None:
    """Without render_template_as_native_obj, an XCom list renders as "['VI…', 'VI…']": it is
    read back as the list, not sent to the service as one id (which refused it)."""
    from airflow import DAG
    from airflow.providers.common.compat.sdk import task

    first, second = upload(emu), upload(emu)
    name = next(iter(mode))
    with DAG(f"wait_rendered_{name}", start_date=pendulum.datetime(2024, 1, 1), schedule=None) as dag:

        @task
        def ids() -> list[str]:
            return [first, second, first]

        ids() >> MemoriesVideoStatusSensor(
            task_id="wait",
            video_nos="{{ ti.xcom_pull(task_ids='ids') }}",
            poke_interval=0.2,
            timeout=30,
            **mode,
        )
    run = run_dag(dag)
    assert run.state == "success"
    assert [v["video_no"] for v in _ti(run).xcom_pull(task_ids="wait")] == [first, second]
    [request] = emu.control.request_log("list_videos")
    assert sorted(request["video_nos"]) == sorted([first, second])


@pytest.mark.parametrize("mode", MODES[:2])
def test_the_timeout_is_not_stretched_by_a_long_poke_interval(
    emu: Any, run_dag: Any, mode: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Airflow waits a whole poke_interval between checks, past the timeout if it is longer: the
    wait must end at its timeout, not an interval later."""
    video_no = upload(emu)
    emu.control.set_status(video_no, "UNPARSE")
    FAILURES.clear()
    name = next(iter(mode))
    waits: list[float] = []  # what Airflow is told to sleep (poke) or reschedule by
    plain = MemoriesVideoStatusSensor._get_next_poke_interval

    def recorded(self: Any, *args: Any, **kwargs: Any) -> float:
        waits.append(plain(self, *args, **kwargs))
        return waits[-1]

    monkeypatch.setattr(MemoriesVideoStatusSensor, "_get_next_poke_interval", recorded)
    run = run_dag(
        _dag(
            f"wait_long_interval_{name}",
            video_no=video_no,
            poke_interval=90,
            timeout=2,
            on_failure_callback=_record_failure,
            **mode,
        )
    )
    assert (run.state, FAILURES) == ("failed", ["AirflowSensorTimeout"])
    assert waits and max(waits) <= 2  # never past the 2 s timeout, although the interval is 90 s
    assert emu.control.count("list_videos") == 1  # the deadline check at 2 s sends nothing


#: Refusals of the key or the account (spec: "fail fast, no retry"), as the emulator configures them.
ACCOUNT_REFUSALS = [
    pytest.param({"account_disabled": True}, "0403", id="0403-account-disabled"),
    pytest.param({"permission_denied": ["list_videos"]}, "9009", id="9009-permission-denied"),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("refusal", "code"), ACCOUNT_REFUSALS)
def test_a_refused_account_fails_at_once_without_retries(
    emu: Any, run_dag: Any, mode: dict, refusal: dict, code: str
) -> None:
    """A refused key or account is refused on every retry: the task fails on its first try.

    The refusal comes after the first check saw the video unparsed, so the deferrable sensor meets
    it in the trigger, the others in a later poke.
    """
    video_no = upload(emu)
    emu.control.set_status(video_no, "UNPARSE")
    FAILURES.clear()
    MESSAGES.clear()
    name = f"wait_refused_{next(iter(mode))}_{code}"
    retries = {"retries": 2, "retry_delay": timedelta(0)}  # a retry would run at once, and show
    with after_first_status_check(emu, lambda: emu.control.configure(**refusal)):
        run = run_dag(
            _dag(
                name,
                video_no=video_no,
                poke_interval=0.2,
                timeout=60,
                on_failure_callback=_record_failure,
                **retries,
                **mode,
            )
        )
    ti = _ti(run)
    assert (run.state, ti.try_number) == ("failed", 1)  # no retry spent
    assert FAILURES and all(f in ("AccountRefusedError", "AirflowFailException") for f in FAILURES), FAILURES
    assert f"code={code}" in MESSAGES[-1]


def _soft_fail_dag(dag_id: str, **sensor_kwargs: Any):  # type: ignore[no-untyped-def]
    """A soft_fail sensor with retries that would run at once (and show), failures recorded."""
    return _dag(
        dag_id,
        poke_interval=0.2,
        timeout=60,
        soft_fail=True,
        retries=2,
        retry_delay=timedelta(0),
        on_failure_callback=_record_failure,
        **sensor_kwargs,
    )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("refused_first", [True, False], ids=["first-check", "later-check"])
def test_a_refused_key_fails_even_with_soft_fail(
    emu: Any, run_dag: Any, mode: dict, refused_first: bool
) -> None:
    """soft_fail skips a sensor whose videos failed or did not come in time; a refused key says
    nothing about the videos: skipped, it would read as "nothing to wait for" and skip everything
    downstream. It fails, on its first try, in every mode: met in the first check (on the worker,
    deferrable included) or in a later one (the trigger's, when deferrable)."""
    video_no = upload(emu)
    emu.control.set_status(video_no, "UNPARSE")
    FAILURES.clear()
    name = f"wait_refused_soft_{next(iter(mode))}_{refused_first}"
    dag = _soft_fail_dag(name, video_no=video_no, **mode)
    if refused_first:
        emu.control.configure(account_disabled=True)
        run = run_dag(dag)
    else:
        with after_first_status_check(emu, lambda: emu.control.configure(account_disabled=True)):
            run = run_dag(dag)
    ti = _ti(run)
    assert (str(ti.state), ti.try_number) == ("failed", 1)
    assert FAILURES == ["AccountRefusedError"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "mistake",
    [
        pytest.param({"memories_conn_id": "no_such_connection"}, id="undefined-connection"),
        pytest.param({"video_no": "VI123"}, id="malformed-id"),
    ],
)
def test_a_mistake_in_the_task_fails_even_with_soft_fail(
    emu: Any, run_dag: Any, mode: dict, mistake: dict
) -> None:
    """A misnamed connection or a malformed id is no video that failed or came late: with
    soft_fail it fails, on its first try and before any request, rather than skip."""
    FAILURES.clear()
    MESSAGES.clear()
    kwargs = {"video_no": upload(emu), **mistake}
    name = f"wait_mistake_soft_{next(iter(mode))}_{sorted(mistake)[0]}"
    run = run_dag(_soft_fail_dag(name, **kwargs, **mode))
    ti = _ti(run)
    assert (str(ti.state), ti.try_number) == ("failed", 1)
    assert FAILURES == ["BadInputError"]
    assert f"`{next(iter(mistake))}`" in MESSAGES[-1]  # the parameter is named
    assert emu.control.count("list_videos") == 0


def test_the_check_before_deferring_does_not_sleep_out_a_rate_limit_in_the_worker(
    emu: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deferrable: a 0429 on the worker's one check is "not yet" at once, and the wait defers; the
    connection's retries would hold the worker slot max_retries Retry-After's long (the trigger's
    pacer paces rate limits without a slot)."""
    from airflow.providers.common.compat.sdk import TaskDeferred

    use_emulator_conn(monkeypatch, emu, max_retries=2)
    video_no = upload(emu)
    emu.control.inject_fault("list_videos", "code_0429", count=10, retry_after=1)
    sensor = MemoriesVideoStatusSensor(
        task_id="wait", video_no=video_no, deferrable=True, poke_interval=5, timeout=600
    )
    with pytest.raises(TaskDeferred) as info:
        sensor.execute({})
    assert info.value.trigger.video_nos == [video_no]
    assert emu.control.count("list_videos") == 1  # no retry slept out on the worker


def test_the_deferral_does_not_outlast_the_execution_timeout(emu: Any) -> None:
    """Airflow 3 does not cap a deferral by execution_timeout (Airflow 2 did): the sensor does."""
    from airflow.providers.common.compat.sdk import TaskDeferred

    video_no = upload(emu)
    emu.control.set_status(video_no, "UNPARSE")
    sensor = MemoriesVideoStatusSensor(
        task_id="wait",
        video_no=video_no,
        deferrable=True,
        poke_interval=45,
        timeout=3600,
        execution_timeout=timedelta(seconds=120),
    )
    with pytest.raises(TaskDeferred) as info:
        sensor.execute({})
    assert info.value.timeout is not None and info.value.timeout <= timedelta(seconds=120)


@pytest.mark.parametrize("mode", MODES)
def test_a_key_rotated_while_the_sensor_waits_is_read_again_not_failed(
    emu: Any, run_dag: Any, mode: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key is rotated during a long wait: the connection gets the new one, then the old one is
    revoked. The sensor's next check uses the connection as it is now, in every mode (a poking
    sensor holds its worker process for the whole wait): a refusal of the key it no longer holds
    would fail the task at once, without retries."""
    video_no = upload(emu)
    emu.control.set_status(video_no, "UNPARSE")

    def rotate() -> None:
        use_emulator_conn(monkeypatch, emu, max_retries=0, password="sk-rotated-key")
        emu.control.configure(api_keys=["sk-rotated-key"])
        emu.control.set_status(video_no, "PARSE")

    with after_first_status_check(emu, rotate):
        run = run_dag(
            _dag(f"wait_rotated_{next(iter(mode))}", video_no=video_no, poke_interval=0.2, timeout=60, **mode)
        )
    assert run.state == "success"
    [video] = _ti(run).xcom_pull(task_ids="wait")
    assert video["video_no"] == video_no


@pytest.mark.parametrize("mode", MODES)
def test_a_timeout_of_zero_still_checks_once(emu: Any, run_dag: Any, mode: dict) -> None:
    """As Airflow's own sensors: the first poke runs whatever the timeout, which is checked after it.
    ``timeout=0`` (with ``soft_fail``: "go on if it is indexed already, else skip") must not time
    out a video that is PARSE without ever asking about it."""
    parsed, held = upload(emu), upload(emu)
    emu.control.set_status(held, "UNPARSE")
    name = f"wait_zero_{next(iter(mode))}"
    done = run_dag(_dag(f"{name}_parsed", video_no=parsed, timeout=0, soft_fail=True, **mode))
    assert (done.state, str(_ti(done).state)) == ("success", "success")
    [video] = _ti(done).xcom_pull(task_ids="wait")
    assert video["video_no"] == parsed
    late = run_dag(_dag(f"{name}_held", video_no=held, timeout=0, soft_fail=True, **mode))
    assert str(_ti(late).state) == "skipped"
    assert emu.control.count("list_videos") == 2  # one look each, and no more
