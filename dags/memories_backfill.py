"""Backfill: upload every video under a prefix, wait for all of them, download them elsewhere, and
export the captions and transcripts of every parsed video of the scope into one file per run.

One upload task per file (dynamic task mapping), all in the ``memories_uploads`` pool: the
service accepts about one upload per minute per account, so a one-slot pool keeps a backfill of
thousands of files from spending its retries on rate limits. The uploads are deferrable (a
rate-limited upload waits in the triggerer), so the pool must count deferred tasks, or a waiting
upload would hand its slot to the next one. Create the pool once, before the first run:
``airflow pools set memories_uploads 1 "memories.ai upload rate limit" --include-deferred``.

Each file keeps its path relative to the source prefix at the destination
(``in/cam-1/a.mp4`` → ``out/cam-1/a.mp4``), whatever name the service gives the download, so
re-running is cheap: files already present at the destination are neither uploaded nor
downloaded again, and a retried upload reuses the video of its earlier attempt. To resume a run
whose downloads failed, clear its failed tasks rather than triggering a new run (a new run
uploads the files that are not at the destination yet again).
"""

from __future__ import annotations

import os
from pathlib import Path

import pendulum
from airflow.providers.common.compat.sdk import DAG, AirflowFailException, Param, task

from memories_provider.operators.download import MemoriesDownloadOperator
from memories_provider.operators.export import MemoriesExportOperator
from memories_provider.operators.upload import MemoriesUploadOperator
from memories_provider.sensors.video_status import MemoriesVideoStatusSensor

PROJECT = Path(__file__).resolve().parent.parent
POOL = "memories_uploads"
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi")
POLL_INTERVAL = float(os.environ.get("MEMORIES_POLL_INTERVAL", "30"))
# Airflow connection for an s3:// source prefix; None uses boto3's default credential chain.
AWS_CONN_ID = os.environ.get("MEMORIES_BACKFILL_AWS_CONN_ID") or None

DOC_MD = """
### Backfill: upload every video under a prefix, wait for all, download them elsewhere

**Before the first run** create the upload pool (the service takes about one upload a minute):
`airflow pools set memories_uploads 1 "memories.ai upload rate limit" --include-deferred`

**Trigger with**

* `source_prefix`: a local folder or an `s3://bucket/prefix/` holding `.mp4`, `.mov`, `.mkv`
  or `.avi` files (searched recursively).
* `destination_prefix`: a folder URI ending in `/` (local, `s3://`, `gs://`, `azure://`, `sftp://`).
* `export_prefix`: a folder URI ending in `/` for `<run_id>.jsonl`, the captions and transcripts
  of every `PARSE` video of the scope.

**Produces** one mapped `upload` per video not yet at the destination (XCom: its `video_no`),
one `wait_for_parse` for all of them, and one mapped `download` per video, written to
`destination_prefix` + its path relative to `source_prefix`. Re-running skips what is there.
A `destination_prefix` or `export_prefix` without its final `/` is refused by the *Trigger* form
(and `airflow dags trigger`); a missing `source_prefix` fails `list_new_videos` at once.
"""

with DAG(
    dag_id="memories_backfill",
    description="Upload every video under a prefix to memories.ai and download them to another prefix",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["memories.ai", "example"],
    doc_md=DOC_MD,
    params={
        "source_prefix": Param(
            str(PROJECT / "demo-output" / "backfill-in") + "/",
            type="string",
            description="local folder or s3:// prefix",
        ),
        "destination_prefix": Param(
            str(PROJECT / "demo-output" / "backfill-out") + "/",
            type="string",
            pattern="^.+/$",
            description="folder URI ending in /",
        ),
        "export_prefix": Param(
            str(PROJECT / "demo-output" / "backfill-index") + "/",
            type="string",
            pattern="^.+/$",  # the run's file name is appended to it
            description="folder URI ending in /: one <run>.jsonl of all parsed videos per run",
        ),
    },
) as dag:

    @task
    def list_new_videos(params: dict | None = None) -> list[dict[str, str]]:
        """Videos under the source prefix (recursively) not yet at the destination.

        Returns ``{"source", "destination"}`` pairs: the destination is the source's path relative
        to the prefix, under the destination prefix.
        """
        from memories_provider.storage.destinations import destination_exists

        assert params is not None
        prefix, destination = params["source_prefix"], params["destination_prefix"]
        # Input no retry can fix: fail at once, naming the param.
        if not destination.endswith("/"):
            raise AirflowFailException(f"`destination_prefix` must end with '/', got {destination!r}")
        if prefix.startswith("s3://"):
            from airflow.providers.amazon.aws.hooks.s3 import S3Hook

            bucket, _, key_prefix = prefix[len("s3://") :].partition("/")
            keys = S3Hook(aws_conn_id=AWS_CONN_ID).list_keys(bucket, prefix=key_prefix) or []
            found = {f"s3://{bucket}/{key}": key[len(key_prefix) :].lstrip("/") for key in keys}
        else:
            root = Path(prefix)
            if not root.is_dir():
                raise AirflowFailException(f"`source_prefix` {prefix!r} is not an existing folder")
            found = {str(p): p.relative_to(root).as_posix() for p in sorted(root.rglob("*")) if p.is_file()}
        pairs = [
            {"source": source, "destination": destination + relative}
            for source, relative in found.items()
            if relative and relative.lower().endswith(VIDEO_SUFFIXES)
        ]
        return [pair for pair in pairs if destination_exists(pair["destination"]) is None]

    @task
    def download_targets(pairs: list[dict[str, str]], video_nos: list[str]) -> list[dict[str, str]]:
        """Each uploaded video with the destination of its source (map indexes keep their order)."""
        return [
            {"video_no": video_no, "destination": pair["destination"]}
            for pair, video_no in zip(pairs, video_nos, strict=True)
        ]

    new_videos = list_new_videos()
    uploads = MemoriesUploadOperator.partial(
        task_id="upload",
        pool=POOL,
        deferrable=True,
        retries=3,
        source_conn_id=AWS_CONN_ID,  # ignored for local files
    ).expand(source=new_videos.map(lambda pair: pair["source"]))

    wait_for_parse = MemoriesVideoStatusSensor(
        task_id="wait_for_parse",
        video_nos=uploads.output,
        deferrable=True,
        poke_interval=POLL_INTERVAL,
        timeout=6 * 60 * 60,
        # Airflow 3.3 can fail a deferred task whose trigger fires before the scheduler has seen the
        # worker leave (apache/airflow#72716); a retry just waits again, at no cost.
        retries=2,
    )

    downloads = MemoriesDownloadOperator.partial(task_id="download", retries=2).expand_kwargs(
        download_targets(new_videos, uploads.output)
    )

    # Every PARSE video of the connection's scope (not only this run's), one dataset per run.
    # none_failed: a run with nothing new to upload (mapped tasks skipped) still exports.
    export = MemoriesExportOperator(
        task_id="export",
        all_parsed=True,
        destination="{{ params.export_prefix }}{{ run_id | replace(':', '-') | replace('+', '-') }}.jsonl",
        trigger_rule="none_failed",
        retries=2,
    )

    wait_for_parse >> downloads >> export
