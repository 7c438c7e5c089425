"""Backfill: upload every video under a prefix, wait for all of them, download them elsewhere.

One upload task per file (dynamic task mapping), all in the ``memories_uploads`` pool: the
service accepts about one upload per minute per account, so a one-slot pool keeps a backfill of
thousands of files from spending its retries on rate limits. Create the pool once:
``airflow pools set memories_uploads 1 "memories.ai upload rate limit"``.

Re-running is cheap: files already present at the destination are neither uploaded nor
downloaded again, and a retried upload reuses the video of its earlier attempt.
"""

from __future__ import annotations

import os
from pathlib import Path

import pendulum
from airflow.providers.common.compat.sdk import DAG, Param, task

from memories_provider.operators.download import MemoriesDownloadOperator
from memories_provider.operators.upload import MemoriesUploadOperator
from memories_provider.sensors.video_status import MemoriesVideoStatusSensor

PROJECT = Path(__file__).resolve().parent.parent
POOL = "memories_uploads"
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi")
POLL_INTERVAL = float(os.environ.get("MEMORIES_POLL_INTERVAL", "30"))
# Airflow connection for an s3:// source prefix; None uses boto3's default credential chain.
AWS_CONN_ID = os.environ.get("MEMORIES_BACKFILL_AWS_CONN_ID") or None

with DAG(
    dag_id="memories_backfill",
    description="Upload every video under a prefix to memories.ai and download them to another prefix",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["memories.ai", "example"],
    params={
        "source_prefix": Param(
            str(PROJECT / "demo-output" / "backfill-in") + "/",
            type="string",
            description="local folder or s3:// prefix",
        ),
        "destination_prefix": Param(
            str(PROJECT / "demo-output" / "backfill-out") + "/",
            type="string",
            description="folder URI ending in /",
        ),
    },
) as dag:

    @task
    def list_new_videos(params: dict | None = None) -> list[str]:
        """Videos under the source prefix that are not yet at the destination (by file name)."""
        from memories_provider.storage.destinations import destination_exists, join_folder

        assert params is not None
        prefix, destination = params["source_prefix"], params["destination_prefix"]
        if prefix.startswith("s3://"):
            from airflow.providers.amazon.aws.hooks.s3 import S3Hook

            bucket, _, key_prefix = prefix[len("s3://") :].partition("/")
            keys = S3Hook(aws_conn_id=AWS_CONN_ID).list_keys(bucket, prefix=key_prefix) or []
            sources = [f"s3://{bucket}/{key}" for key in keys]
        else:
            sources = [str(p) for p in sorted(Path(prefix).iterdir()) if p.is_file()]
        videos = [s for s in sources if s.lower().endswith(VIDEO_SUFFIXES)]
        return [
            s for s in videos if destination_exists(join_folder(destination, s.rsplit("/", 1)[-1])) is None
        ]

    uploads = MemoriesUploadOperator.partial(
        task_id="upload",
        pool=POOL,
        deferrable=True,
        retries=3,
        source_conn_id=AWS_CONN_ID,  # ignored for local files
    ).expand(source=list_new_videos())

    wait_for_parse = MemoriesVideoStatusSensor(
        task_id="wait_for_parse",
        video_nos=uploads.output,
        deferrable=True,
        poke_interval=POLL_INTERVAL,
        timeout=6 * 60 * 60,
    )

    downloads = MemoriesDownloadOperator.partial(
        task_id="download",
        destination="{{ params.destination_prefix }}",
        retries=2,
    ).expand(video_no=uploads.output)

    wait_for_parse >> downloads
