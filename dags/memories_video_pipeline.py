"""Upload one video to memories.ai, wait until it is indexed, download it back, export what was learnt.

Trigger it with a config to choose the files, e.g.
``airflow dags trigger memories_video_pipeline -c '{"source": "s3://bucket/in/clip.mp4",
"destination": "s3://bucket/out/"}'``. The defaults point at local paths under this project,
which is what ``make demo`` uses (against the local emulator).

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

with DAG(
    dag_id="memories_video_pipeline",
    description="Upload a video to memories.ai, wait for indexing, download it to a destination",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    tags=["memories.ai", "example"],
    params={
        "source": Param(
            str(PROJECT / "demo-output" / "sample.mp4"), type="string", description="video to upload"
        ),
        "destination": Param(
            str(PROJECT / "demo-output" / "downloads") + "/",
            type="string",
            description="file or folder (ending in /) to download to",
        ),
        "export_folder": Param(
            str(PROJECT / "demo-output" / "exports") + "/",
            type="string",
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
