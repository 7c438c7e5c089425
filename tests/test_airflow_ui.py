"""What a user meets in the Airflow UI (issue 19): hopeless input fails without retries, no false
alarm in the task log, short Test messages, a form that refuses what cannot work, documented DAGs."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

import airflow
import pendulum
import pytest
from connections import emulator_conn, use_emulator_conn
from local_http import LocalServer, QuietHandler

from memories_provider.hooks.memories import MemoriesHook
from memories_provider.operators.download import MemoriesDownloadOperator
from memories_provider.operators.export import MemoriesExportOperator
from memories_provider.operators.upload import MemoriesUploadOperator
from memories_provider.sensors.video_status import MemoriesVideoStatusSensor

AIRFLOW_3 = airflow.__version__.startswith("3.")
REPO = Path(__file__).resolve().parent.parent
VIDEO = b"\x00\x00\x00\x18ftypmp42" + b"u" * 2048


@pytest.fixture
def video(tmp_path: Path) -> Path:
    path = tmp_path / "clip.mp4"
    path.write_bytes(VIDEO)
    return path


@pytest.fixture
def emu(memories_emulator: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    use_emulator_conn(monkeypatch, memories_emulator, max_retries=1)
    return memories_emulator


def _run_one(run_dag: Any, dag_id: str, operator: Any, **op_kwargs: Any) -> Any:
    """Run a one-task DAG whose task has 2 retries at no delay; return its task instance."""
    from airflow import DAG

    with DAG(dag_id, start_date=pendulum.datetime(2024, 1, 1), schedule=None, catchup=False) as dag:
        operator(task_id="task", retries=2, retry_delay=timedelta(seconds=0), **op_kwargs)
    run = run_dag(dag)
    [ti] = run.get_task_instances()
    return ti


# ---------------------------------------------------------------------------- no retries of hopeless input

HOPELESS = {
    "missing source": (MemoriesUploadOperator, {"source": "{{ params.missing }}"}),
    "wrong extension": (MemoriesUploadOperator, {"source": "{{ params.text_file }}"}),
    "bad tags": (MemoriesUploadOperator, {"source": "{{ params.video }}", "tags": ["ok", ""]}),
    "bad datetime": (
        MemoriesUploadOperator,
        {"source": "{{ params.video }}", "datetime_taken": "01/05/2024"},
    ),
    "destination is a folder": (
        MemoriesDownloadOperator,
        {"video_no": "VI568102998803353600", "destination": "{{ params.folder }}"},
    ),
    "bad video_no": (
        MemoriesDownloadOperator,
        {"video_no": "{{ 'VI/../x' }}", "destination": "{{ params.out }}"},
    ),
    # The documented id shapes ('VI' + 18 digits, 're_' + digits), checked once rendered: before,
    # the download asked get_metadata (or the v2 download) and the export get_video_caption, and
    # the service refused the id.
    "download with a malformed video_no": (
        MemoriesDownloadOperator,
        {"video_no": "{{ 'VI1' }}", "destination": "{{ params.out }}"},
    ),
    "download with a malformed asset_id": (
        MemoriesDownloadOperator,
        {"asset_id": "{{ 're_x' }}", "destination": "{{ params.out }}"},
    ),
    "export with a malformed id": (
        MemoriesExportOperator,
        {"video_nos": ["VI568102998803353600", "{{ 'VI1' }}"], "destination": "{{ params.out }}x.jsonl"},
    ),
    "sensor with an empty id": (MemoriesVideoStatusSensor, {"video_nos": ["{{ params.blank }}"]}),
    "sensor with a malformed id": (MemoriesVideoStatusSensor, {"video_no": "{{ 'VI12 ' }}"}),
    "deferrable sensor with a malformed id": (
        MemoriesVideoStatusSensor,
        {"video_nos": ["VI568102998803353600", "{{ 'VI/../x' }}"], "deferrable": True},
    ),
    "sensor with an empty rendered list": (MemoriesVideoStatusSensor, {"video_nos": "{{ [] }}"}),
    # A template of a value that is not there renders the text 'None': the upload created a
    # unique_id named 'None', the other tasks looked for the video there (and failed, retrying).
    "upload into a unique_id rendered None": (
        MemoriesUploadOperator,
        {"source": "{{ params.video }}", "unique_id": "{{ params.nothing }}"},
    ),
    "download from a unique_id rendered None": (
        MemoriesDownloadOperator,
        {
            "video_no": "VI568102998803353600",
            "destination": "{{ params.out }}",
            "unique_id": "{{ params.nothing }}",
        },
    ),
    "export of a unique_id rendered None": (
        MemoriesExportOperator,
        {"all_parsed": True, "destination": "{{ params.out }}x.jsonl", "unique_id": "{{ params.nothing }}"},
    ),
    "sensor in a unique_id rendered null": (
        MemoriesVideoStatusSensor,
        {"video_no": "VI568102998803353600", "unique_id": "{{ params.nothing | tojson }}"},
    ),
}


@pytest.mark.parametrize("case", list(HOPELESS))
def test_hopeless_input_fails_on_the_first_try_without_a_request(
    case: str, emu: Any, run_dag: Any, tmp_path: Path, video: Path
) -> None:
    operator, kwargs = HOPELESS[case]
    (tmp_path / "notes.txt").write_text("not a video")
    (tmp_path / "folder").mkdir()
    params = {
        "missing": str(tmp_path / "nowhere.mp4"),
        "text_file": str(tmp_path / "notes.txt"),
        "video": str(video),
        "folder": str(tmp_path / "folder"),
        "out": str(tmp_path / "out") + "/",
        "blank": "",
        "nothing": None,
    }
    ti = _run_one(run_dag, f"ui_hopeless_{case.replace(' ', '_')}", operator, params=params, **kwargs)
    assert str(ti.state) == "failed"
    assert ti.try_number == 1, "a hopeless input was retried"
    assert emu.control.request_log() == []  # refused before any request


def test_a_unique_id_typed_as_none_is_a_name(emu: Any, run_dag: Any, video: Path) -> None:
    # Only a template's 'None' is refused: typed as such, it is a name like any other.
    hook = MemoriesHook()
    video_no = hook.upload_video(str(video), unique_id="None").video_no
    ti = _run_one(
        run_dag, "ui_none_as_a_name", MemoriesVideoStatusSensor, video_no=video_no, unique_id="None"
    )
    assert str(ti.state) == "success"


def test_a_misconfigured_connection_fails_on_the_first_try(
    memories_emulator: Any, monkeypatch: pytest.MonkeyPatch, run_dag: Any, video: Path
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_MEMORIES_DEFAULT", emulator_conn(memories_emulator, timeout=-1))
    ti = _run_one(run_dag, "ui_bad_connection", MemoriesUploadOperator, source=str(video))
    assert str(ti.state) == "failed" and ti.try_number == 1
    assert memories_emulator.control.request_log() == []


@pytest.fixture
def busy_server() -> Iterator[tuple[str, list[str]]]:
    """An HTTP server answering 503 to everything: a source that may be readable later."""
    seen: list[str] = []

    class Busy(QuietHandler):
        protocol_version = "HTTP/1.0"

        def _busy(self) -> None:
            seen.append(self.command)
            self.send_body(503, {}, b"")

        do_HEAD = do_GET = _busy

    with LocalServer(Busy) as server:
        yield f"{server.url}/clip.mp4", seen


def test_a_source_that_may_come_back_keeps_its_retries(emu: Any, run_dag: Any, busy_server: Any) -> None:
    url, seen = busy_server
    ti = _run_one(run_dag, "ui_transient_source", MemoriesUploadOperator, source=url)
    assert str(ti.state) == "failed"
    assert ti.try_number == 3  # 1 + both retries
    assert seen.count("HEAD") == 3
    assert emu.control.request_log() == []


def test_an_unreachable_s3_destination_is_transient_a_missing_bucket_is_not(moto_s3_server: Any) -> None:
    import boto3

    from memories_provider.storage.destinations import ResolvedTransport
    from memories_provider.storage.errors import StoreUnavailableError
    from memories_provider.storage.survey import survey

    def client(endpoint: str) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=__import__("botocore.config").config.Config(
                retries={"max_attempts": 0}, connect_timeout=2
            ),
        )

    with pytest.raises(StoreUnavailableError, match="cannot be reached"):
        survey("s3://b/x.mp4", transport=ResolvedTransport({"client": client("http://127.0.0.1:9")}))
    with pytest.raises(ValueError, match="does not exist") as info:
        moto = ResolvedTransport({"client": client(moto_s3_server.endpoint_url)})
        survey("s3://no-such-bucket-19/x.mp4", transport=moto)
    assert not isinstance(info.value, StoreUnavailableError)


# ---------------------------------------------------------------------------- no false alarm in the log


def _reset_short_secret_warning() -> None:
    try:
        from airflow._shared.secrets_masker.secrets_masker import SecretsMasker
    except ImportError:  # Airflow 2.11 never warns about short secrets
        return
    SecretsMasker._has_warned_short_secret = False


def test_a_pipeline_run_logs_no_skipping_masking_warning(
    memories_emulator: Any,
    monkeypatch: pytest.MonkeyPatch,
    run_dag: Any,
    video: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    # Airflow 3 registers every string extra with the masker, and warns for one under 5 characters:
    # the form used to save blob_download_api="v2". A connection saved with the form's defaults:
    from memories_provider.hooks.connection import CONN_FIELDS

    defaults = {name: f["schema"]["default"] for name, f in CONN_FIELDS.items() if "default" in f["schema"]}
    assert all(not isinstance(v, str) or len(v) >= 5 for v in defaults.values())
    conn = emulator_conn(memories_emulator, **defaults)
    monkeypatch.setenv("AIRFLOW_CONN_MEMORIES_DEFAULT", conn)
    monkeypatch.setenv("MEMORIES_POLL_INTERVAL", "0.5")
    memories_emulator.control.configure(parse_delay=0.5)
    from tests.dags.test_example_dags import load_dags

    dag = load_dags().get_dag("memories_video_pipeline")
    _reset_short_secret_warning()
    caplog.set_level(logging.INFO)
    run = run_dag(dag, run_conf={"source": str(video), "destination": f"{tmp_path}/out/"})
    assert run.state == "success"
    out, err = capfd.readouterr()
    text = caplog.text + out + err
    assert "Uploaded" in text  # the task logs were captured
    assert "Skipping masking" not in text


def test_the_key_is_still_masked(memories_emulator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.providers.common.compat.sdk import redact

    monkeypatch.setenv("AIRFLOW_CONN_UI_MASKED", emulator_conn(memories_emulator, blob_download_api="v2"))
    config = MemoriesHook("ui_masked").config
    assert config.api_key not in str(redact(f"key={config.api_key}"))
    assert "v2" in str(redact("blob_download_api=v2"))


# ---------------------------------------------------------------------------- Test button messages


def _test_button(conn_json: str) -> tuple[bool, str]:
    """What Airflow's Test button does: a copy under a random id, exported to the environment."""
    import os

    from airflow.models.connection import Connection
    from airflow.utils.strings import get_random_string

    data = json.loads(conn_json)
    if isinstance(data.get("extra"), dict):
        data["extra"] = json.dumps(data["extra"])
    transient = get_random_string()
    while transient == transient.lower():  # Airflow's ids mix cases; an all-lower one is named as is
        transient = get_random_string()
    conn = Connection(conn_id=transient, **{k: v for k, v in data.items() if k != "conn_id"})
    var = f"AIRFLOW_CONN_{transient.upper()}"
    os.environ[var] = conn.get_uri()
    try:
        status, message = conn.test_connection()
    finally:
        os.environ.pop(var, None)
    assert transient not in message, "the message names Airflow's temporary id"
    return status, message


def test_test_button_on_a_bad_extra_says_this_connection(memories_emulator: Any) -> None:
    ok, message = _test_button(emulator_conn(memories_emulator, timeout=-1))
    assert not ok
    assert message.startswith("This connection: extra 'timeout' must be")


def test_test_button_on_an_unreachable_host_is_one_short_sentence(memories_emulator: Any) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    conn = json.loads(memories_emulator.conn_json)
    conn["host"] = f"http://127.0.0.1:{port}"
    conn.setdefault("extra", {}).pop("v2_host", None)
    ok, message = _test_button(json.dumps(conn))
    assert not ok
    assert message == f"This connection: cannot reach http://127.0.0.1:{port} (connection refused)"


def test_test_button_succeeds_against_the_emulator(memories_emulator: Any) -> None:
    ok, message = _test_button(memories_emulator.conn_json)
    assert ok, message


def test_a_saved_connection_is_named(memories_emulator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_MY_VIDEOS", emulator_conn(memories_emulator, max_retries="1.5"))
    ok, message = MemoriesHook("my_videos").test_connection()
    assert not ok and message.startswith("Connection 'my_videos': extra 'max_retries' must be a whole number")


# ---------------------------------------------------------------------------- the form


@pytest.mark.skipif(not AIRFLOW_3, reason="Airflow 3's UI reads the form from the API server")
def test_airflow3_form_metadata_carries_labels_constraints_and_placeholders() -> None:
    from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService

    [meta] = [m for m in HookMetaService.hook_meta_data() if m.connection_type == "memories"]
    standard = meta.standard_fields.model_dump()
    assert standard["login"]["hidden"] and standard["url_schema"]["hidden"]
    assert standard["password"]["title"] == "API key"
    assert standard["host"]["placeholder"] == "https://api.memories.ai"
    assert standard["port"]["placeholder"]
    fields = {name.rpartition("__")[2]: field for name, field in (meta.extra_fields or {}).items()}
    schema = {name: field["schema"] for name, field in fields.items()}
    assert schema["timeout"]["minimum"] == 1 and schema["upload_timeout"]["minimum"] == 1
    assert schema["max_retries"]["type"] == ["integer", "null"]
    assert (schema["max_retries"]["minimum"], schema["max_retries"]["maximum"]) == (0, 20)
    assert schema["blob_download_api"]["enum"] == [None, "v2", "v1"]
    assert schema["v2_host"]["examples"] == ["https://mavi-backend.memories.ai"]
    assert all(s.get("title") for s in schema.values()) and all(f["description"] for f in fields.values())


@pytest.mark.skipif(AIRFLOW_3, reason="Airflow 2.11's form is built from the hook's widgets")
def test_airflow2_form_refuses_what_can_never_work() -> None:
    from airflow.providers_manager import ProvidersManager
    from flask import Flask
    from flask_wtf import FlaskForm

    widgets = {
        name.rpartition("__")[2]: info.field
        for name, info in ProvidersManager().connection_form_widgets.items()
        if name.startswith("extra__memories__")
    }
    form_class = type("MemoriesForm", (FlaskForm,), widgets)
    app = Flask("ui")
    app.config.update(WTF_CSRF_ENABLED=False, SECRET_KEY="x")
    bad = {"timeout": "-1", "max_retries": "1.5", "v2_host": "not a url", "blob_download_api": "v3"}
    with app.test_request_context(method="POST", data=bad):
        form = form_class()
        assert not form.validate()
        assert set(form.errors) == set(bad)
    good = {"timeout": "30", "max_retries": "3", "v2_host": "http://127.0.0.1:9", "blob_download_api": "v1"}
    with app.test_request_context(method="POST", data=good):
        assert form_class().validate()
    placeholders = ProvidersManager().field_behaviours["memories"]["placeholders"]
    assert placeholders["extra__memories__v2_host"] == "https://mavi-backend.memories.ai"
    assert placeholders["host"] == "https://api.memories.ai"


# ---------------------------------------------------------------------------- docs, DAGs, the trigger


def test_project_urls_give_airflow_a_documentation_link() -> None:
    urls = dict(
        entry.split(", ", 1)
        for entry in metadata.metadata("airflow-provider-memories").get_all("Project-URL")
    )
    assert {"Documentation", "Source", "Changelog"} <= set(urls)
    assert urls["Documentation"].startswith("https://")
    assert (REPO / "CHANGELOG.md").read_text().startswith("# Changelog")
    if AIRFLOW_3:
        from airflow.providers_manager import ProvidersManager

        info = ProvidersManager().providers["airflow-provider-memories"].data
        assert info["documentation-url"] == urls["Documentation"]


def test_example_dags_have_doc_md_and_the_pipeline_needs_a_source(airflow_db: Any) -> None:
    from tests.dags.test_example_dags import load_dags

    bag = load_dags()
    for dag_id in ("memories_video_pipeline", "memories_backfill"):
        doc = bag.get_dag(dag_id).doc_md
        assert doc and "Trigger with" in doc and "Produces" in doc
    params = bag.get_dag("memories_video_pipeline").params
    with pytest.raises(Exception, match="source"):  # a run without a source is refused at once
        params.validate()


def test_the_fired_event_is_one_short_line() -> None:
    from memories_provider.triggers.video_status import VideoStatusTriggerEvent

    videos = [{"video_no": f"VI{i}", "video_name": "x" * 200, "tags": ["t"] * 20} for i in range(8)]
    event = VideoStatusTriggerEvent(
        payload={"status": "success", "message": "all 8 video(s) are PARSE", "videos": videos}
    )
    line = f"Trigger fired event result={event}"
    assert repr(event) == str(event)
    assert "status=success" in line and "VI0" in line and "(+3 more)" in line
    assert len(line) < 150 and "x" * 20 not in line
    assert event.payload["videos"] == videos  # what the task receives is unchanged


def test_a_blank_unique_id_fails_the_sensor_at_once_naming_it(emu: Any, run_dag: Any) -> None:
    """It reached the service, which refused every batch; the sensor then blamed each video id."""
    from airflow.providers.common.compat.sdk import AirflowFailException

    sensor = MemoriesVideoStatusSensor(task_id="w", video_no="VI568102998803353600", unique_id="  ")
    with pytest.raises(AirflowFailException, match="`unique_id`"):
        sensor.execute({})
    assert emu.control.request_log() == []
