"""Storage credentials in URI-valued template fields never show in the rendered template fields.

Airflow renders a task's templates and stores them (the UI's *Rendered Template*) through its
secret masker *before* ``execute`` runs, so the credentials of a ``destination``, a ``source`` or
a ``callback`` must be registered with the masker while the templates are rendered, for a mapped
task too. Each task here fails at once (nothing listens on port 1): only what Airflow stored of
its rendered fields is looked at, in a real ``dag.test()``.
"""

from __future__ import annotations

import datetime
import secrets
from typing import Any

from leaks import leaks

from memories_provider.operators.download import MemoriesDownloadOperator
from memories_provider.operators.export import MemoriesExportOperator
from memories_provider.operators.upload import MemoriesUploadOperator


def fresh(label: str) -> str:
    return f"{label}-{secrets.token_hex(8)}"  # fresh: the masker's registrations outlive a test


def test_credentials_in_uri_template_fields_are_masked_in_the_rendered_fields(emu: Any, run_dag: Any) -> None:
    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.providers.common.compat.sdk import DAG
    from airflow.utils.session import create_session

    download_pw, mapped_pw, export_pw = fresh("dlPASS"), fresh("mapPASS"), fresh("exPASS")
    signature, token = fresh("SIGxAmz"), fresh("cbTOKEN")
    dead = "127.0.0.1:1"
    with DAG(
        "rendered_uri_secrets",
        schedule=None,
        start_date=datetime.datetime(2024, 1, 1),
        params={"pw": download_pw},
    ) as dag:
        MemoriesDownloadOperator(  # rendered from a template: the secret exists only once rendered
            task_id="download",
            destination="sftp://bob:{{ params.pw }}@" + dead + "/out/",
            asset_id="re_1",
            retries=0,
        )
        MemoriesDownloadOperator.partial(task_id="mapped", asset_id="re_1", retries=0).expand(
            destination=[f"sftp://bob:{mapped_pw}@{dead}/out/"]
        )
        MemoriesExportOperator(
            task_id="export",
            destination=f"sftp://bob:{export_pw}@{dead}/out/x.jsonl",
            video_no="VI000000000000000001",
            retries=0,
        )
        MemoriesUploadOperator(
            task_id="upload",
            source=f"http://{dead}/clip.mp4?X-Amz-Signature={signature}",
            callback=f"https://hooks.example.com/memories?token={token}",
            retries=0,
        )
    run_dag(dag)

    with create_session() as session:
        rows = session.query(RenderedTaskInstanceFields).filter_by(dag_id="rendered_uri_secrets").all()
    stored = {(row.task_id, row.map_index): str(row.rendered_fields) for row in rows}
    assert set(stored) == {("download", -1), ("mapped", 0), ("export", -1), ("upload", -1)}
    assert "sftp://bob:***@127.0.0.1:1/out/" in stored[("download", -1)]  # rendered, then masked
    for key, text in stored.items():
        assert leaks(text, download_pw, mapped_pw, export_pw, signature, token) == [], (key, text)
