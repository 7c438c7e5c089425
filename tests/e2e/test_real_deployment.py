"""End to end on a real Airflow 3 deployment: api-server, scheduler (LocalExecutor), dag-processor
and a separate triggerer process, plus the emulator — the example DAGs triggered like a user would.

It is also the canary run for secrets: the API key and an SFTP password are canaries, the
emulator echoes the request (``Authorization`` included) in its 500, 401 and 0429 answers, which
faults inject on some calls, and afterwards no file under ``AIRFLOW_HOME`` or of the components,
and no table of the metadata DB, may hold the key, any 8 characters of it, or the password.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import sqlite3
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import airflow
import pytest
import requests
from airflow_stack import (
    REPO,
    Components,
    MetadataDB,
    defer_exits_processed,
    free_port,
    link_dags,
    run_airflow,
    sha256_of,
    trigger,
    wait_for,
)
from leaks import pieces

pytestmark = pytest.mark.skipif(
    not airflow.__version__.startswith("3."), reason="the deployment test runs the Airflow 3 components"
)

DEADLINE = 300.0
#: Random per run, with characters URL-encoding changes ("/", "+", "="): found only if leaked.
CANARY_KEY = f"sk-canary-{secrets.token_hex(10)}/{secrets.token_hex(4)}+="
CANARY_SFTP_PASSWORD = f"SftpCanary{secrets.token_hex(8)}"


@pytest.fixture
def deployment(tmp_path: Path, memories_emulator_process: Any, sshd: Any) -> Iterator[dict[str, Any]]:
    # Videos stay UNPARSE until the test releases them, once it has seen the sensors deferred.
    # The emulator accepts only the canary key and echoes requests in its error answers.
    emu = memories_emulator_process(
        rate_limits=True, parse_delay=3600.0, extra_args=["--api-key", CANARY_KEY, "--echo-requests"]
    )
    emu.api_key = CANARY_KEY
    # The spec's limits, scaled down (1 upload per second instead of per minute) so a handful of
    # files finish quickly while the pool and the 0429 handling are still exercised.
    emu.control.configure(rate_limits={"upload": (1, 1.0), "upload_url": (1, 1.0)})
    home = tmp_path / "airflow-home"
    home.mkdir()
    # The example DAGs and the canary DAG.
    dags = tmp_path / "dags"
    test_dags = [
        Path(__file__).parent / "dags" / name
        for name in ("memories_canary_sftp.py", "memories_export_deferred.py")
    ]
    link_dags(dags, [*sorted((REPO / "dags").glob("*.py")), *test_dags])
    sftp_conn = {
        "conn_type": "ssh",
        "host": "127.0.0.1",
        "port": sshd.port,
        "login": sshd.user,
        "password": CANARY_SFTP_PASSWORD,  # the key file authenticates (sshd takes no passwords)
        "extra": {"key_file": sshd.key_file, "no_host_key_check": True},
    }
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "8",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "AIRFLOW_CONN_MEMORIES_DEFAULT": emu.conn_uri,
            "AIRFLOW_CONN_CANARY_SFTP": json.dumps(sftp_conn),
            "CANARY_SFTP_KEY_FILE": sshd.key_file,
            "MEMORIES_POLL_INTERVAL": "1",
        }
    )
    run_airflow(env, "db", "migrate")
    run_airflow(env, "pools", "set", "memories_uploads", "1", "memories.ai uploads", "--include-deferred")
    components = Components(env, tmp_path / "logs")
    db = MetadataDB(f"sqlite:///{home}/airflow.db")
    try:
        components.start("api-server", "api-server", "--port", str(port), "--host", "127.0.0.1")
        components.start("dag-processor", "dag-processor")
        components.start("scheduler", "scheduler")
        components.start("triggerer", "triggerer")
        yield {
            "env": env,
            "home": home,
            "emu": emu,
            "procs": components.procs,
            "db": db,
            "logs": components.logs,
            "port": port,
            "sshd": sshd,
        }
    finally:
        db.close()
        components.stop()


def _inject_echoed_faults(emu: Any) -> None:
    """500, 401 and 0429 answers on some calls, the echoed key placed across the clients' cut."""
    control = emu.control
    control.inject_fault("upload", "code_0429", count=2, every=2, retry_after=0.2, auth_at=495)
    control.inject_fault("list_videos", "http_500", count=3, every=2, auth_at=190)
    control.inject_fault("download", "http_500", count=2, every=2, auth_at=195)
    control.inject_fault("download", "code_0429", retry_after=0.2, auth_at=497)
    # The canary DAG's asset downloads, one after the other: the first (to_sftp_conn) refused
    # outright (a key refusal: its task fails at once, not retried), the second (to_sftp_uri) a 500,
    # retried by its client within the try.
    control.inject_fault("v2_download", "http_401", auth_at=188)
    control.inject_fault("v2_download", "http_500", auth_at=199)


def test_example_dags_on_a_real_scheduler_and_triggerer(deployment: dict[str, Any], tmp_path: Path) -> None:
    env, home, emu, procs = deployment["env"], deployment["home"], deployment["emu"], deployment["procs"]
    db = deployment["db"]
    sshd = deployment["sshd"]
    single = tmp_path / "single" / "clip.mp4"
    single.parent.mkdir()
    single.write_bytes(os.urandom(300_000))
    backfill_in, backfill_out, single_out = tmp_path / "in", tmp_path / "out", tmp_path / "single-out"
    backfill_in.mkdir()
    sources = {f"cam-{i}.mp4": os.urandom(100_000 + i) for i in range(4)}
    for name, data in sources.items():
        (backfill_in / name).write_bytes(data)
    canary_asset = emu.control.add_asset(os.urandom(200_000), "canary.mp4", "video/mp4")
    canary_folder = sshd.root / "canary"
    for sub in ("conn", "uri"):
        (canary_folder / sub).mkdir(parents=True)

    # A video uploaded by hand (not parsed yet either) for the export that waits deferred.
    answer = requests.post(
        f"{emu.v1_url}/upload",
        headers={"Authorization": CANARY_KEY},
        files={"file": ("export-me.mp4", os.urandom(50_000), "video/mp4")},
        timeout=60,
    ).json()
    assert answer["code"] == "0000", answer
    export_video = str(answer["data"]["videoNo"])

    wanted = {"memories_video_pipeline", "memories_backfill"}
    every_dag = {*wanted, "memories_canary_sftp", "memories_export_deferred"}
    wait_for(
        "the dag processor to serialize the example DAGs",
        lambda: every_dag <= {r[0] for r in db.query("select dag_id from serialized_dag")},
        procs,
        DEADLINE,
    )
    _inject_echoed_faults(emu)
    exports = tmp_path / "exports"  # not the checkout's demo-output/
    trigger(
        env,
        "memories_video_pipeline",
        {"source": str(single), "destination": f"{single_out}/", "export_folder": f"{exports}/pipeline/"},
    )
    trigger(
        env,
        "memories_backfill",
        {
            "source_prefix": f"{backfill_in}/",
            "destination_prefix": f"{backfill_out}/",
            "export_prefix": f"{exports}/backfill/",
        },
    )
    trigger(
        env, "memories_canary_sftp", {"asset_id": canary_asset["asset_id"], "folder": f"{canary_folder}/"}
    )
    export_file = exports / "deferred" / "rows.jsonl"
    trigger(env, "memories_export_deferred", {"video_no": export_video, "destination": str(export_file)})
    waiting = {(dag, "wait_for_parse") for dag in wanted} | {("memories_export_deferred", "export")}

    def deferred() -> set[tuple[str, str]] | None:
        rows = db.query("select dag_id, task_id from task_instance where state = 'deferred'")
        return waiting if {(r[0], r[1]) for r in rows} >= waiting else None

    # Both sensors and the export are waiting in the triggerer (state "deferred", no worker slot) ...
    wait_for("both sensors and the export to defer", deferred, procs, DEADLINE)
    scheduler_log = deployment["logs"] / "scheduler.log"

    def deferrals_noted() -> bool:
        noted = defer_exits_processed(scheduler_log.read_text(errors="replace"))
        return waiting <= {(dag, task) for dag, task, _, _ in noted}

    wait_for("the scheduler to take note of the three deferrals", deferrals_noted, procs, DEADLINE)
    assert len(emu.control.videos()) == 2 + len(sources)
    assert not export_file.exists()  # nothing written while waiting
    # ... until memories.ai finishes indexing.
    for video in emu.control.videos():
        emu.control.set_status(video["video_no"], "PARSE")

    def finished() -> list[tuple] | None:
        runs = db.query("select dag_id, state from dag_run")
        done = [r for r in runs if r[1] in ("success", "failed")]
        return runs if len(done) == 4 else None

    runs = wait_for("the four DAG runs to finish", finished, procs, DEADLINE)
    states = db.query("select dag_id, task_id, map_index, state, try_number from task_instance")
    assert sorted(runs) == [
        ("memories_backfill", "success"),
        ("memories_canary_sftp", "success"),  # its leaf, to_sftp_uri, runs whatever to_sftp_conn did
        ("memories_export_deferred", "success"),
        ("memories_video_pipeline", "success"),
    ], states
    # The export resumed and wrote the video's rows (captions and transcript), once.
    rows = [json.loads(line) for line in export_file.read_text().splitlines()]
    assert rows and {r["video_no"] for r in rows} == {export_video}
    assert {r["kind"] for r in rows} == {"visual", "audio"}

    # Into a folder, the pipeline's file is named after its video: <video_no>.mp4 (a download by
    # video_no comes without Content-Disposition, as the spec allows: named from its Content-Type).
    (single_video,) = [v["video_no"] for v in emu.control.videos() if v["filename"] == "clip.mp4"]
    assert sha256_of(single_out / f"{single_video}.mp4") == sha256_of(single)
    for name, data in sources.items():
        assert sha256_of(backfill_out / name) == hashlib.sha256(data).hexdigest()
    # Folders too: <asset_id>.canary.mp4, written by the canary task that was not refused; the
    # refused one (the 401) left nothing behind.
    canary_states = {task: state for dag, task, _, state, _ in states if dag == "memories_canary_sftp"}
    assert canary_states == {"to_sftp_conn": "failed", "to_sftp_uri": "success"}, states
    assert list((canary_folder / "conn").iterdir()) == []
    canary_file = canary_folder / "uri" / f"{canary_asset['asset_id']}.canary.mp4"
    assert sha256_of(canary_file) == canary_asset["sha256"]

    # Each file became exactly one video at memories.ai, whatever the retries and rate limits did.
    names = [v["filename"] for v in emu.control.videos()]
    assert sorted(names) == sorted(["clip.mp4", "export-me.mp4", *sources])

    # The waits ran in the triggerer process: each sensor, and the export, has a trigger log there.
    for dag_id, task_id in sorted(waiting):
        trigger_logs = list((home / "logs").glob(f"dag_id={dag_id}/**/task_id={task_id}/*.trigger.*.log"))
        text = "".join(p.read_text(errors="replace") for p in trigger_logs)
        assert "video(s) to be parsed" in text and "Trigger fired event" in text, (dag_id, trigger_logs)

    _assert_the_canaries_never_left_the_processes(deployment, states)


def _assert_the_canaries_never_left_the_processes(deployment: dict[str, Any], states: list[tuple]) -> None:
    home, emu, logs, db = deployment["home"], deployment["emu"], deployment["logs"], deployment["db"]
    # Every injected fault was served, echoing the key: the run met what it was meant to meet.
    assert emu.control.pending_faults() == {}
    served = [r.get("fault") for r in emu.control.request_log()]
    assert {"http_500", "http_401", "code_0429"} <= set(served)
    # to_sftp_conn was refused (401) on its first try and, a key refusal, not retried (its DAG has
    # retries=1); to_sftp_uri got through its 500 within its first try.
    canary_tries = sorted(tries for dag, _, _, _, tries in states if dag == "memories_canary_sftp")
    assert canary_tries == [1, 1], states

    # The providers' own text shows where the secrets were, masked (not merely absent).
    text = "\n".join(p.read_text(errors="replace") for p in _files(home, logs) if p.suffix == ".log")
    assert "Authorization: ***" in text
    xcoms = " ".join(str(r) for r in db.query("select value from xcom where task_id = 'to_sftp_uri'"))
    assert f"sftp://{deployment['sshd'].user}:***@127.0.0.1" in xcoms

    needles = {piece for secret in (CANARY_KEY, CANARY_SFTP_PASSWORD) for piece in pieces(secret)}
    needles |= {quote(CANARY_KEY, safe=""), quote(CANARY_SFTP_PASSWORD, safe="")}
    hits = [
        f"{path}: {needle!r}" for path in _files(home, logs) for needle in _found(path.read_bytes(), needles)
    ]
    for table, column, value in _every_cell(home):
        hits += [f"table {table}.{column}: {needle!r}" for needle in _found(value, needles)]
    assert hits == []


def _files(*roots: Path) -> list[Path]:
    return [p for root in roots for p in sorted(root.rglob("*")) if p.is_file()]


def _found(data: bytes, needles: set[str]) -> list[str]:
    return sorted(n for n in needles if n.encode() in data)


def _every_cell(home: Path) -> Iterator[tuple[str, str, bytes]]:
    """Every value of every table of the metadata DB, as bytes (zlib-compressed ones inflated)."""
    with sqlite3.connect(home / "airflow.db", timeout=30) as db:
        tables = [r[0] for r in db.execute("select name from sqlite_master where type = 'table'")]
        for table in tables:
            cursor = db.execute(f'select * from "{table}"')
            columns = [d[0] for d in cursor.description]
            for row in cursor:
                for column, value in zip(columns, row, strict=True):
                    if value is None:
                        continue
                    data = value if isinstance(value, bytes) else str(value).encode()
                    with contextlib.suppress(zlib.error):
                        data += zlib.decompress(data)
                    yield table, column, data
