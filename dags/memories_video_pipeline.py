"""Upload one video to memories.ai, wait until it is indexed, download it back, export what was learnt.

Trigger it with a config to choose the files, e.g.
``airflow dags trigger memories_video_pipeline -c '{"source": "s3://bucket/in/clip.mp4",
"destination": "s3://bucket/out/"}'``. ``source`` has no default (a run without one is refused
at once, naming it); the destination defaults to a folder under this project. ``make demo``
writes a sample video and runs this DAG against the local emulator.

Needs a ``memories_default`` connection (or the emulator's ``AIRFLOW_CONN_MEMORIES_DEFAULT``);
storage credentials come from the environment or from ``source_conn_id``/``destination_conn_id``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pendulum
from airflow.providers.common.compat.sdk import DAG, Param

from memories_provider.operators.download import MemoriesDownloadOperator
from memories_provider.operators.export import MemoriesExportOperator
from memories_provider.operators.upload import MemoriesUploadOperator
from memories_provider.sensors.video_status import MemoriesVideoStatusSensor

PROJECT = Path(__file__).resolve().parent.parent
# Seconds between status checks. Indexing takes minutes on the real service; the demo and the
# end-to-end test shorten it through the environment.
POLL_INTERVAL = float(os.environ.get("MEMORIES_POLL_INTERVAL", "30"))

DOC_MD = """
### Upload a video to memories.ai, wait until it is indexed, download it back, export what was learnt

**Trigger with** (the *Trigger* form, or `airflow dags trigger memories_video_pipeline -c '{...}'`):

* `source` (required): the video, a local path or an `s3://`, `gs://`, `azure://`, `sftp://` or
  `http(s)://` URI; `.mp4`, `.avi`, `.mkv` or `.mov`, at most 3 GB.
* `destination`: a file, or a folder ending in `/`, local or any of the URIs above
  (default: `demo-output/downloads/` beside the DAGs folder).
* `export_folder`: where the captions and transcript go, as `<video_no>.jsonl`
  (default: `demo-output/exports/`).

**Produces**

* `upload`: XCom `return_value`, the new `video_no`; XCom `upload_result` with `video_no`,
  `status`, `source` and `reused`.
* `wait_for_parse`: deferred (no worker slot) until the video is `PARSE`; fails at once if
  memories.ai could not index it.
* `download`: the file at `destination`, written atomically and sha256-checked; XCom `uri`,
  `bytes`, `sha256`, `filename`, `skipped`.
* `export`: one JSON Lines row per caption or transcript segment; XCom `uri`, `rows`, `videos`,
  `bytes`.

A bad `source` (missing file, wrong extension) fails `upload` at once, without retries and
without spending a credit. Needs the `memories_default` connection.
"""

with DAG(
    dag_id="memories_video_pipeline",
    description="Upload a video to memories.ai, wait for indexing, download it to a destination",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    tags=["memories.ai", "example"],
    doc_md=DOC_MD,
    params={
        # No default: no video exists on a fresh install, and a run without one should be
        # refused at once rather than fail its upload (``make demo`` passes its sample).
        "source": Param(
            type="string",
            minLength=1,
            title="Source video",
            description="Path or URI of the video to upload (.mp4/.avi/.mkv/.mov): a local path, "
            "s3://, gs://, azure://, sftp:// or http(s)://",
        ),
        "destination": Param(
            str(PROJECT / "demo-output" / "downloads") + "/",
            type="string",
            minLength=1,
            title="Destination",
            description="File, or folder ending in /, to download to (local path or URI)",
        ),
        "export_folder": Param(
            str(PROJECT / "demo-output" / "exports") + "/",
            type="string",
            # The file name is appended to it: without the '/', "out" would give "outVI….jsonl".
            pattern="^.+/$",
            title="Export folder",
            description="folder (ending in /) for <video_no>.jsonl: the video's captions and transcript",
        ),
    },
) as dag:
    # The upload is validated before a credit is spent and never repeated by a retry.
    upload = MemoriesUploadOperator(task_id="upload", source="{{ params.source }}", retries=2)

    # Deferrable: the wait costs no worker slot; all waits of a triggerer share one poller.
    wait_for_parse = MemoriesVideoStatusSensor(
        task_id="wait_for_parse",
        video_no=upload.output,
        deferrable=True,
        poke_interval=POLL_INTERVAL,
        timeout=60 * 60,
        # Airflow 3.3 can fail a deferred task whose trigger fires before the scheduler has seen the
        # worker leave (apache/airflow#72716); a retry just waits again, at no cost.
        retries=2,
    )

    # Streamed and atomic: the destination never holds a partial file.
    download = MemoriesDownloadOperator(
        task_id="download",
        video_no=upload.output,
        destination="{{ params.destination }}",
        retries=2,
    )

    # One JSON Lines row per caption/transcript segment; atomic like the download.
    export = MemoriesExportOperator(
        task_id="export",
        video_no=upload.output,
        destination="{{ params.export_folder }}{{ ti.xcom_pull(task_ids='upload') }}.jsonl",
        retries=2,
    )
    upload >> wait_for_parse >> download >> export
