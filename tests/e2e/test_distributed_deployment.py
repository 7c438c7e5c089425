"""End to end on a distributed Airflow 3: CeleryExecutor with two workers, two triggerers, Postgres
as the metadata DB, Redis as the broker, the API server, the scheduler and the DAG processor —
each a process of its own — and the emulator with the spec's rate limits (uploads and downloads
shortened, the 5/s status limit kept).

The memories.ai connection lives in the metadata DB (created through the REST API), so workers and
triggerers resolve it through the API server, as on a real cluster. Each triggerer has room for
one trigger, which makes where triggers run predictable. The emulator holds every video
``UNPARSE`` until the test releases it. The scenario, in order:

1. Two ``memories_video_pipeline`` runs (two ``clip.mp4`` from different folders). The first one's
   upload is accepted by the service and its answer dropped; its video is released, and the
   retry must find and reuse it rather than upload (and pay) again. The second one's wait defers
   and fills one triggerer.
2. The first pipeline's download stalls half-way (``slow_body``). Once the emulator reports the
   stall, the temporary file is there and that download is the only task running, the worker
   running it is SIGKILLed with everything it started. The scheduler notices the silence
   (heartbeat timeout) and the retry runs on the other worker; by then the killed writer's
   temporary file is old enough for the provider to sweep it.
3. Meanwhile ``memories_backfill`` runs over 60 videos (some named alike in different folders), its
   uploads in a pool that counts deferred tasks, through a ``0429`` storm on uploads (the uploads
   wait it out deferred, on the other triggerer). Its wait defers there too; with a short poll
   interval both triggerers' pollers push against the 5/s status limit, and meet a ``503`` burst.
   Then every video is released, and a ``503`` burst hits the downloads.

Afterwards, from the emulator's log, the destinations, the metadata DB and the components' logs:
every video uploaded exactly once, every download present with its sha256 and its provenance
record, no temporary file left, at most 5 % of status calls answered ``0429``, both workers and
both triggerers did work, every task succeeded, no process of the deployment left. Wall and CPU
time of the whole deployment are printed.
"""

from __future__ import annotations

import json
import os
import re
import resource
import secrets
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import airflow
import psutil
import pytest
from airflow_stack import (
    REPO,
    Components,
    MetadataDB,
    Postgres,
    Redis,
    RestApi,
    defer_exits_processed,
    free_port,
    link_dags,
    process_tree,
    run_airflow,
    sha256_of,
    wait_for,
)

from memories_provider.storage.destinations import LOCAL_TEMP_GRACE
from memories_provider.storage.provenance import Provenance, sidecar_name

pytestmark = [
    pytest.mark.skipif(
        not airflow.__version__.startswith("3."), reason="the distributed deployment runs Airflow 3"
    ),
    pytest.mark.distributed_e2e,
    pytest.mark.timeout(1800),
]

DEADLINE = 600.0
BACKFILL_VIDEOS = 60
#: Seconds between status checks: short, so that two pollers want more than the 5/s limit.
POLL_INTERVAL = 0.2
#: Status calls to see while both triggerers poll before the videos are released.
CONTENDED_STATUS_CALLS = 75
#: A killed task is retried once its heartbeat is this old. Above the provider's grace for a
#: temporary file whose writer is gone (Airflow's default, 300 s, is too), so that the retry
#: sweeps the killed writer's file: a stale heartbeat, not a sleep, spaces them. The margin: the
#: last heartbeat may precede the writer's last write (heartbeats are due every 5 s, later on a
#: busy machine).
HEARTBEAT_TIMEOUT = int(LOCAL_TEMP_GRACE) + 20
STATUS_ENDPOINTS = ("list_videos", "get_metadata")
WORKERS = ("worker-a", "worker-b")
TRIGGERERS = ("triggerer-a", "triggerer-b")


@dataclass
class Cluster:
    """A running distributed deployment and how to look at it."""

    env: dict[str, str]
    home: Path
    emu: Any
    components: Components
    db: MetadataDB
    api: RestApi
    triggerer_jobs: set[int] = field(default_factory=set)


@pytest.fixture
def cluster(
    tmp_path: Path, postgres: Postgres, redis: Redis, memories_emulator_process: Any
) -> Iterator[Cluster]:
    started = time.monotonic()
    cpu_before = _own_and_reaped_cpu()
    # Videos stay UNPARSE until the test releases them. The spec's rate limits, with uploads
    # (1/min) and v1 downloads (12/min) shortened so 62 of each take seconds, not an hour.
    emu = memories_emulator_process(rate_limits=True, parse_delay=3600.0)
    emu.control.configure(rate_limits={"upload": (4, 1.0), "upload_url": (4, 1.0), "download": (5, 1.0)})
    service_cpu_before = _tree_cpu(emu.pid, postgres.pid, redis.pid)
    home = tmp_path / "airflow-home"
    home.mkdir()
    dags = tmp_path / "dags"
    link_dags(dags, sorted((REPO / "dags").glob("*.py")))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_"))}
    env.update(_airflow_config(home, dags, port, postgres, redis))
    run_airflow(env, "db", "migrate")
    components = Components(env, tmp_path / "logs")
    db = MetadataDB(postgres.url)
    api = RestApi(f"http://127.0.0.1:{port}")
    cluster = Cluster(env=env, home=home, emu=emu, components=components, db=db, api=api)
    try:
        components.start("api-server", "api-server", "--port", str(port), "--host", "127.0.0.1")
        components.start("scheduler", "scheduler")
        components.start("dag-processor", "dag-processor")
        for worker in WORKERS:
            components.start(
                worker,
                "celery",
                "worker",
                "--celery-hostname",
                f"{worker}@%h",
                "--concurrency",
                "4",
                "--skip-serve-logs",  # both on one host: their log servers would share a port
                "--without-gossip",
                "--without-mingle",
            )
        for name in TRIGGERERS:
            # Room for one trigger each: a long wait on one sends every other trigger to the other.
            components.start(name, "triggerer", "--capacity", "1", "--skip-serve-logs")
        # Their job ids name the logs of the triggers they run.
        cluster.triggerer_jobs = wait_for(
            "both triggerers to register", lambda: _triggerer_jobs(cluster), components.procs, DEADLINE
        )
        wait_for("the API server", lambda: _api_up(api), components.procs, DEADLINE)
        # Stored in the metadata DB (encrypted): workers and triggerers get it from the API server.
        conn = json.loads(emu.conn_json)
        api.call(
            "POST",
            "connections",
            {
                "connection_id": "memories_default",
                "conn_type": conn["conn_type"],
                "host": conn["host"],
                "password": conn["password"],
                "extra": json.dumps(conn["extra"]),
            },
        )
        api.call(
            "POST",
            "pools",
            {"name": "memories_uploads", "slots": 4, "description": "uploads", "include_deferred": True},
        )
        yield cluster
    finally:
        services = _tree_cpu(emu.pid, postgres.pid, redis.pid) - service_cpu_before
        each = {name: _tree_cpu(proc.pid) for name, proc in components.procs.items()}
        db.close()
        api.close()
        components.stop()
        # Also nothing that left its component's tree (a task runner whose parent was killed).
        survivors = [p for p in psutil.process_iter(["environ"]) if _airflow_home_of(p) == str(home)]
        assert survivors == [], f"processes of this deployment survived the teardown: {survivors}"
        # Everything this process reaped (components, CLI commands) plus the services it did not yet.
        cpu = _own_and_reaped_cpu() - cpu_before + services
        shares = ", ".join(f"{name} {seconds:.0f}" for name, seconds in sorted(each.items()))
        print(
            f"\ndistributed e2e: {time.monotonic() - started:.0f} s wall, {cpu:.0f} s CPU in all "
            f"(emulator + Postgres + Redis {services:.0f}; {shares}; killed workers not itemised)"
        )


def _airflow_config(home: Path, dags: Path, port: int, postgres: Postgres, redis: Redis) -> dict[str, str]:
    from cryptography.fernet import Fernet

    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CORE__PARALLELISM": "16",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY": "1",
        "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": postgres.url,
        "AIRFLOW__CELERY__BROKER_URL": redis.url,
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{postgres.url}",
        "AIRFLOW__CELERY__SYNC_PARALLELISM": "1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "600",  # parsed once is enough here
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "MEMORIES_POLL_INTERVAL": str(POLL_INTERVAL),
    }


def _triggerer_jobs(cluster: Cluster) -> set[int] | None:
    rows = cluster.db.query("select id from job where job_type = 'TriggererJob' and state = 'running'")
    return {row[0] for row in rows} if len(rows) == len(TRIGGERERS) else None


def _api_up(api: RestApi) -> bool:
    try:
        api.call("GET", "monitor/health")
    except Exception:
        return False
    return True


def _airflow_home_of(proc: psutil.Process) -> str | None:
    environ = proc.info.get("environ") or {}  # None where it may not be read (not ours, then)
    return environ.get("AIRFLOW_HOME")


def _tree_cpu(*pids: int) -> float:
    """CPU seconds of processes and their descendants, reaped ones included."""
    total = 0.0
    for pid in pids:
        for member in process_tree(pid):
            try:
                t = member.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += t.user + t.system + t.children_user + t.children_system
    return total


def _own_and_reaped_cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


# ---------------------------------------------------------------------------- reading the state


def _task_instances(cluster: Cluster) -> list[tuple]:
    return cluster.db.query("select dag_id, run_id, task_id, map_index, state, try_number from task_instance")


def _active_tasks(cluster: Cluster) -> list[tuple]:
    """Task instances a worker runs or is about to run."""
    return cluster.db.query(
        "select dag_id, run_id, task_id from task_instance "
        "where state in ('scheduled', 'queued', 'running', 'restarting', 'up_for_retry')"
    )


def _deferred_on(cluster: Cluster, dag_id: str, run_id: str, task_id: str) -> int | None:
    """The triggerer job running the trigger of a deferred task, once it runs there."""
    rows = cluster.db.query(
        "select t.triggerer_id from task_instance ti join trigger t on t.id = ti.trigger_id "
        "where ti.dag_id = :dag and ti.run_id = :run and ti.task_id = :task and ti.state = 'deferred'",
        dag=dag_id,
        run=run_id,
        task=task_id,
    )
    return rows[0][0] if rows and rows[0][0] is not None else None


def _deferral_noted(cluster: Cluster, dag_id: str, run_id: str) -> bool:
    """Whether the scheduler has processed the worker's exit of this run's deferred wait."""
    noted = defer_exits_processed(cluster.components.text("scheduler"))
    return (dag_id, "wait_for_parse", run_id, -1) in noted


_WORKLOAD = re.compile(r"Executing workload in Celery: .*?log_path='([^']+)'")


def _worked_on(cluster: Cluster, worker: str) -> set[str]:
    """Task attempts a Celery worker ran, from its log (their log paths, relative to the log folder)."""
    return set(_WORKLOAD.findall(cluster.components.text(worker)))


def _attempt_path(dag_id: str, run_id: str, task_id: str, map_index: int, attempt: int) -> str:
    mapped = f"/map_index={map_index}" if map_index >= 0 else ""
    return f"dag_id={dag_id}/run_id={run_id}/task_id={task_id}{mapped}/attempt={attempt}.log"


def _trigger_logs(cluster: Cluster, job_id: int) -> list[Path]:
    """Logs of the triggers a triggerer ran (Airflow names them after the triggerer's job id)."""
    return sorted((cluster.home / "logs").rglob(f"*.trigger.{job_id}.log"))


def _status_calls(cluster: Cluster) -> list[dict[str, Any]]:
    return [r for r in cluster.emu.control.request_log() if r["endpoint"] in STATUS_ENDPOINTS]


def _video_of(cluster: Cluster, sha256: str) -> str | None:
    """The stored video with these bytes, once the service has it."""
    return next((v["video_no"] for v in cluster.emu.control.videos() if v["sha256"] == sha256), None)


def _write_video(path: Path, size: int) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = os.urandom(size)
    path.write_bytes(data)
    return sha256_of(path)


def _backfill_sources(root: Path) -> dict[str, str]:
    """60 videos in four folders, ``relative path -> sha256``; four names recur in other folders."""
    sources = {}
    for i in range(BACKFILL_VIDEOS):
        alike = i >= BACKFILL_VIDEOS - 4  # same name as clip-00..03, in the next folder
        name = f"clip-{i - (BACKFILL_VIDEOS - 4) if alike else i:02d}.mp4"
        relative = f"cam-{(i + alike) % 4}/{name}"
        sources[relative] = _write_video(root / relative, 20_000 + 97 * i)
    assert len(sources) == BACKFILL_VIDEOS and len({Path(r).name for r in sources}) == BACKFILL_VIDEOS - 4
    return sources


# ---------------------------------------------------------------------------- the test


def test_the_dags_on_celery_with_two_workers_and_two_triggerers(cluster: Cluster, tmp_path: Path) -> None:
    control, procs = cluster.emu.control, cluster.components.procs
    wait_for(
        "the DAG processor to serialize the example DAGs",
        lambda: (
            {"memories_video_pipeline", "memories_backfill"}
            <= {r[0] for r in cluster.db.query("select dag_id from serialized_dag")}
        ),
        procs,
        DEADLINE,
    )

    # 1. Two pipeline runs. The first one's upload is accepted and its answer lost; its video is
    # released at once, so that the retry can read the video's tags (shown only once PARSE) and
    # reuse it. The second one's video is held: its wait defers and holds one triggerer.
    pipelines = {
        "first": (tmp_path / "pipeline-in" / "one" / "clip.mp4", 3 * 1024 * 1024),
        "second": (tmp_path / "pipeline-in" / "two" / "clip.mp4", 700_000),
    }
    pipeline_sha = {key: _write_video(path, size) for key, (path, size) in pipelines.items()}
    pipeline_out = {key: tmp_path / "pipeline-out" / key for key in pipelines}
    control.inject_fault("upload", "accept_then_drop")
    control.inject_fault("download", "slow_body", delay=600.0)
    pipeline_runs: dict[str, str] = {}
    exports = tmp_path / "exports"  # not the checkout's demo-output/

    def run_pipeline(key: str) -> None:
        source = str(pipelines[key][0])
        destination = f"{pipeline_out[key]}/"
        conf = {"source": source, "destination": destination, "export_folder": f"{exports}/{key}/"}
        pipeline_runs[key] = cluster.api.trigger("memories_video_pipeline", conf)

    run_pipeline("first")

    def accepted_unanswered() -> str | None:
        dropped = any(r.get("fault") == "accept_then_drop" for r in control.request_log("upload"))
        return _video_of(cluster, pipeline_sha["first"]) if dropped else None

    first_video = wait_for(
        "the first pipeline's upload to be accepted without an answer", accepted_unanswered, procs, DEADLINE
    )
    control.set_status(first_video, "PARSE")
    run_pipeline("second")
    held_by = wait_for(
        "the second pipeline's wait to run in a triggerer",
        lambda: _deferred_on(cluster, "memories_video_pipeline", pipeline_runs["second"], "wait_for_parse"),
        procs,
        DEADLINE,
    )

    # 2. The first pipeline's download stalls half-way; its worker is killed, tree and all, once
    # it runs nothing else.
    stalled = wait_for(
        "the first pipeline's download to stall mid-body",
        lambda: [r for r in control.request_log("download") if "stalled_at" in r],
        procs,
        DEADLINE,
    )
    assert len(stalled) == 1 and stalled[0]["stalled_at"] > 0
    temp_files = wait_for(
        "the download's temporary file",
        lambda: list(pipeline_out["first"].glob(".*.part")),
        procs,
        DEADLINE,
    )
    first_download = _attempt_path("memories_video_pipeline", pipeline_runs["first"], "download", -1, 1)
    wait_for(
        "the first pipeline's download to be the only task running",
        lambda: _active_tasks(cluster) == [("memories_video_pipeline", pipeline_runs["first"], "download")],
        procs,
        DEADLINE,
    )
    # ... and the only one a worker has: the second pipeline's wait is deferred in the DB before its
    # worker is done with it (the scheduler notes that when the worker's result comes in).
    wait_for(
        "the scheduler to take note of the second pipeline's deferral",
        lambda: _deferral_noted(cluster, "memories_video_pipeline", pipeline_runs["second"]),
        procs,
        DEADLINE,
    )
    running_it = [w for w in WORKERS if first_download in _worked_on(cluster, w)]
    assert len(running_it) == 1, running_it
    killed = running_it[0]
    survivor = next(w for w in WORKERS if w != killed)
    cluster.components.kill_tree(killed)
    ended = wait_for(
        "the emulator to see the stalled client go",
        lambda: [r for r in control.request_log("download") if "stall_ended" in r],
        procs,
        DEADLINE,
    )
    assert ended[0]["stall_ended"] == "client gone"  # killed mid-body: the rest was never sent
    assert all(p.exists() for p in temp_files)  # the killed writer could not clean up

    # 3. The backfill, through a 0429 storm on uploads.
    backfill_in, backfill_out = tmp_path / "backfill-in", tmp_path / "backfill-out"
    sources = _backfill_sources(backfill_in)
    control.inject_fault("upload", "code_0429", count=4, retry_after=2.0)
    backfill_run = cluster.api.trigger(
        "memories_backfill",
        {
            "source_prefix": f"{backfill_in}/",
            "destination_prefix": f"{backfill_out}/",
            "export_prefix": f"{exports}/backfill/",
        },
    )
    backfill_on = wait_for(
        "the backfill's wait to run in a triggerer",
        lambda: _deferred_on(cluster, "memories_backfill", backfill_run, "wait_for_parse"),
        procs,
        DEADLINE,
    )
    assert backfill_on != held_by  # the second pipeline's wait still fills the other triggerer
    # Both triggerers poll the service at once (and meet a 503 burst) ...
    control.inject_fault("list_videos", "http_503", count=3)
    seen = len(_status_calls(cluster))
    wait_for(
        f"{CONTENDED_STATUS_CALLS} status calls with both triggerers polling",
        lambda: len(_status_calls(cluster)) >= seen + CONTENDED_STATUS_CALLS,
        procs,
        DEADLINE,
    )
    # ... until memories.ai finishes indexing (once the scheduler has taken note of the backfill's
    # deferral: see defer_exits_processed); then a 503 burst on downloads.
    wait_for(
        "the scheduler to take note of the backfill's deferral",
        lambda: _deferral_noted(cluster, "memories_backfill", backfill_run),
        procs,
        DEADLINE,
    )
    control.inject_fault("download", "http_503", count=3, every=5)
    for video in control.videos():
        if video["status"] == "UNPARSE":
            control.set_status(video["video_no"], "PARSE")

    runs = [*pipeline_runs.values(), backfill_run]

    def finished() -> list[tuple] | None:
        states = cluster.db.query("select run_id, state from dag_run")
        done = [row for row in states if row[1] in ("success", "failed")]
        return states if len(done) == len(runs) else None

    states = wait_for("every run to finish", finished, procs, DEADLINE)
    task_instances = _task_instances(cluster)
    assert sorted(states) == sorted((run, "success") for run in runs), task_instances
    assert {ti[4] for ti in task_instances} == {"success"}, task_instances
    # Two pipelines (upload, wait, download, export) and the backfill (list, wait, targets, export,
    # and an upload and a download per video).
    assert len(task_instances) == 4 * 2 + 4 + 2 * BACKFILL_VIDEOS
    # What the indexing learnt, exported: each pipeline's video, and every video of the backfill.
    for key in pipelines:
        (export_file,) = (exports / key).glob("*.jsonl")
        assert {json.loads(line)["video_no"] for line in export_file.read_text().splitlines()} == {
            export_file.stem
        }
    (backfill_index,) = (exports / "backfill").glob("*.jsonl")
    exported = {json.loads(line)["video_no"] for line in backfill_index.read_text().splitlines()}
    assert len(exported) >= BACKFILL_VIDEOS
    tries = {(run, task, map_index): n for _, run, task, map_index, _, n in task_instances}
    assert tries[(pipeline_runs["first"], "upload", -1)] == 2  # the lost answer cost a retry ...

    # Every video uploaded exactly once, whatever was dropped, limited or killed.
    expected_sha = sorted([*pipeline_sha.values(), *sources.values()])
    assert sorted(v["sha256"] for v in control.videos()) == expected_sha  # ... not a second video

    # Every download present with its bytes, and no temporary file (``.<name>.<random>.part``) left.
    for key, sha in pipeline_sha.items():
        (name, got), *others = _files(pipeline_out[key]).items()  # into a folder: the name is the service's
        # <video_no>.mp4: a download by video_no comes without Content-Disposition (spec: "may be
        # absent on A"; the emulator leaves it out), so the name comes from its Content-Type.
        assert (got, others) == (sha, []) and re.fullmatch(r"VI[0-9]{18}\.mp4", name), name
    assert _files(backfill_out) == sources
    assert _temp_files(tmp_path) == []
    # Beside each download, its provenance record (and nothing else hidden): the video it came
    # from and the sha256 of the bytes written.
    video_of = {v["sha256"]: v["video_no"] for v in control.videos()}
    for folder in (*pipeline_out.values(), backfill_out):
        downloads = [folder / relative for relative in _files(folder)]
        hidden = {p for p in folder.rglob(".*") if p.is_file()}
        assert hidden == {p.parent / sidecar_name(p.name) for p in downloads}, sorted(hidden)
        for path in downloads:
            record = Provenance.from_sidecar((path.parent / sidecar_name(path.name)).read_bytes())
            sha = sha256_of(path)
            assert record is not None and record[0].sha256 == sha, (path, record)
            assert record[0].source == f"video/{video_of[sha]}", (path, record)

    # The 5/s status limit, shared by both triggerers and the workers, was rarely exceeded.
    status = _status_calls(cluster)
    limited = [r for r in status if r["code"] == "0429" or r["http_status"] == 429]
    print(f"status calls: {len(status)}, answered 0429: {len(limited)}")
    assert len(status) >= CONTENDED_STATUS_CALLS
    assert len(limited) <= 0.05 * len(status), f"{len(limited)} of {len(status)} status calls got 0429"

    # Workers and triggerers had the connection from the API server (it is in no environment).
    fetched = re.findall(
        r"method=GET path=/execution/connections/memories_default query=\S* status_code=(\d+)",
        cluster.components.text("api-server"),
    )
    assert fetched and set(fetched) == {"200"}, Counter(fetched)

    # The fault plan was served in full.
    assert control.pending_faults() == {}
    served = Counter((r["endpoint"], r.get("fault")) for r in control.request_log())
    assert served[("upload", "code_0429")] == 4 and served[("list_videos", "http_503")] == 3
    assert served[("download", "http_503")] == 3 and served[("download", "slow_body")] == 1

    # Both workers did work; together, every attempt of every task. The killed download was
    # retried on the other worker.
    attempts = {
        _attempt_path(dag, run, task, map_index, attempt)
        for dag, run, task, map_index, _, n_tries in task_instances
        for attempt in range(1, n_tries + 1)
    }
    by_worker = {w: _worked_on(cluster, w) for w in WORKERS}
    assert all(by_worker.values()), {w: len(a) for w, a in by_worker.items()}
    assert by_worker[killed] | by_worker[survivor] == attempts
    retry = first_download.replace("attempt=1", "attempt=2")
    assert first_download in by_worker[killed] and retry in by_worker[survivor]

    # Both triggerers ran triggers to their end: the second pipeline's wait, the backfill's, and
    # the uploads waiting out the 0429 storm.
    for job_id in cluster.triggerer_jobs:
        logs = _trigger_logs(cluster, job_id)
        fired = [p for p in logs if "Trigger fired event" in p.read_text(errors="replace")]
        assert fired, f"the triggerer of job {job_id} ran no trigger: {logs}"
    upload_waits = [p for job in cluster.triggerer_jobs for p in _trigger_logs(cluster, job)]
    assert any("task_id=upload" in str(p) for p in upload_waits)


def _files(root: Path) -> dict[str, str]:
    """The files under ``root``, hidden ones (the provider's own records) aside: relative path -> sha256."""
    return {
        p.relative_to(root).as_posix(): sha256_of(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


def _temp_files(root: Path) -> list[Path]:
    """Temporary files of writers (the provider's ``.<name>.<random>.part``) anywhere under ``root``."""
    return sorted(p for p in root.rglob("*.part"))
