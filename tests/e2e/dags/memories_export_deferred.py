"""The e2e export that waits deferred: a video not parsed yet, exported once it is.

``not_parsed="wait"`` with ``deferrable=True``: the first status check runs on the worker, the
wait on the triggerer's status trigger, and the export resumes on a worker with its deadline
(handed over in the deferral's kwargs) to fetch the outputs and write the rows.
"""

from __future__ import annotations

import pendulum
from airflow.providers.common.compat.sdk import DAG

from memories_provider.operators.export import MemoriesExportOperator

with DAG(
    dag_id="memories_export_deferred",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
) as dag:
    MemoriesExportOperator(
        task_id="export",
        video_no="{{ dag_run.conf['video_no'] }}",
        destination="{{ dag_run.conf['destination'] }}",
        not_parsed="wait",
        deferrable=True,
        poll_interval=1,
        wait_timeout=600,
    )
