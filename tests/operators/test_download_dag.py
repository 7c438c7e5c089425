"""``dag.test()`` of a DAG that chains an id through XCom into MemoriesDownloadOperator."""

from __future__ import annotations

import datetime
import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
from downloads import run_download

DATA = os.urandom(256 * 1024 + 1)


def _asset_events(uri: str) -> list[dict[str, Any]]:
    """Asset (Airflow 3) or dataset (Airflow 2) events recorded for ``uri``."""
    from airflow.utils.session import create_session

    try:
        from airflow.models.asset import AssetEvent as Event
        from airflow.models.asset import AssetModel as Model

        key = "asset_id"
    except ImportError:  # Airflow 2: datasets
        from airflow.models.dataset import DatasetEvent as Event  # type: ignore[no-redef]
        from airflow.models.dataset import DatasetModel as Model  # type: ignore[no-redef]

        key = "dataset_id"
    with create_session() as session:
        query = session.query(Event).join(Model, getattr(Event, key) == Model.id)
        rows = query.filter(Model.uri == uri).all()
        return [dict(row.extra or {}) for row in rows]


def _register_datasets_on_airflow2(dag: Any) -> None:
    """Airflow 2 records a dataset event only for a dataset known to the DB (a parsed DAG's outlets);
    ``dag.test()`` does not parse, so sync the DAG first (Airflow 3's run_dag already serialises it)."""
    try:
        import airflow.models.dataset  # noqa: F401  (Airflow 2 only)
    except ImportError:
        return
    dag.sync_to_db()


def test_dag_test_downloads_templated_id_and_emits_asset_event(
    emu: Any, upload_video: Any, run_dag: Any, tmp_path: Path
) -> None:
    from airflow.providers.common.compat.sdk import DAG, Asset, task

    from memories_provider.operators.download import MemoriesDownloadOperator

    video_no = upload_video(DATA, "dagclip.mp4")
    target = tmp_path / "dag" / f"{video_no}.mp4"
    uri = f"file://{target}"
    dag_id = f"download_dag_{os.getpid()}_{video_no[-6:]}"
    with DAG(dag_id, schedule=None, start_date=datetime.datetime(2025, 1, 1), catchup=False) as dag:

        @task
        def pick() -> str:
            return video_no

        download = MemoriesDownloadOperator(
            task_id="download",
            video_no="{{ ti.xcom_pull(task_ids='pick') }}",
            destination=str(tmp_path) + "/dag/{{ ti.xcom_pull(task_ids='pick') }}.mp4",
            outlets=[Asset(uri)],
        )
        pick() >> download

    _register_datasets_on_airflow2(dag)
    dagrun = run_dag(dag)
    assert str(dagrun.state).endswith("success"), dagrun.state
    assert target.read_bytes() == DATA
    events = _asset_events(uri)
    assert len(events) == 1
    assert events[0]["bytes"] == len(DATA)
    assert events[0]["sha256"] == hashlib.sha256(DATA).hexdigest()
    assert events[0]["source"] == f"video {video_no}"


def test_dag_test_fails_cleanly_on_unknown_video(emu: Any, run_dag: Any, tmp_path: Path) -> None:
    from airflow.providers.common.compat.sdk import DAG

    from memories_provider.operators.download import MemoriesDownloadOperator

    dag_id = f"download_dag_fail_{os.getpid()}"
    retry = {"retries": 2, "retry_delay": datetime.timedelta(0)}
    with DAG(dag_id, schedule=None, start_date=datetime.datetime(2025, 1, 1), catchup=False) as dag:
        MemoriesDownloadOperator(
            task_id="unknown", video_no="VI000000000000000001", destination=str(tmp_path / "x.mp4"), **retry
        )
        # A malformed id, known once rendered: refused before any request (before, the client let
        # it through and the service refused it with 0001, after a get_metadata call).
        MemoriesDownloadOperator(
            task_id="malformed", video_no="{{ 'VI0' }}", destination=f"{tmp_path}/", **retry
        )
    dagrun = run_dag(dag)
    assert str(dagrun.state).endswith("failed"), dagrun.state
    # No retries spent on a refusal that cannot change: no download; the unknown id costs one
    # metadata call, the malformed one none.
    for ti in dagrun.get_task_instances():
        assert str(ti.state).endswith("failed") and ti.try_number == 1, (ti.task_id, ti.state, ti.try_number)
    assert [r["endpoint"] for r in emu.control.request_log()] == ["get_metadata"]
    assert emu.control.count("download") == 0
    assert list(tmp_path.iterdir()) == []


def test_a_refusal_names_the_source_and_keeps_the_service_code(emu: Any, tmp_path: Path) -> None:
    import pytest
    from airflow.providers.common.compat.sdk import AirflowFailException
    from downloads import run_download

    from memories_provider.client import MemoriesNotFoundError

    with pytest.raises(AirflowFailException) as info:
        run_download(video_no="VI000000000000000001", destination=f"{tmp_path}/")
    assert str(info.value).startswith("memories.ai refused video VI000000000000000001: video not found;")
    assert info.value.code == "0001" and info.value.endpoint == "get_metadata"
    assert isinstance(info.value.__cause__, MemoriesNotFoundError)


def _run_failing_once_after_the_commit(run_dag: Any, dag_id: str, **download: Any) -> tuple[Any, list[int]]:
    """Run a DAG whose download (``overwrite=True``, one retry; ``download``: its other settings)
    fails its first try after the commit (post_execute; a worker lost or an XCom push failing
    alike): the run and the failures seen."""
    from datetime import timedelta

    from airflow import DAG

    from memories_provider.operators.download import MemoriesDownloadOperator

    failures: list[int] = []

    def fail_once_after_the_commit(context: Any, result: Any = None) -> None:
        if not failures:
            failures.append(1)
            raise RuntimeError("lost after the commit")

    with DAG(dag_id, schedule=None, start_date=datetime.datetime(2025, 1, 1), catchup=False) as dag:
        MemoriesDownloadOperator(
            task_id="download",
            overwrite=True,
            retries=1,
            retry_delay=timedelta(seconds=0),
            post_execute=fail_once_after_the_commit,
            **download,
        )
    return run_dag(dag), failures


@pytest.mark.parametrize("folder", [False, True], ids=["file", "folder"])
def test_overwrite_retry_after_a_commit_keeps_its_own_download_and_pays_once(
    emu: Any, upload_video: Any, run_dag: Any, tmp_path: Path, folder: bool
) -> None:
    # overwrite=True replaces what another run wrote there, even the same video's proven bytes;
    # then the try fails after its commit (here post_execute; a worker lost or an XCom push
    # failing alike). The Airflow retry found its own file and downloaded it again: billed twice.
    video_no = upload_video(DATA, "clip.mp4")
    destination = str(tmp_path / "out") + ("/" if folder else ".mp4")
    earlier = run_download(video_no=video_no, destination=destination)  # another run's copy
    dag_id = f"download_overwrite_retry_{os.getpid()}_{int(folder)}"
    run, failures = _run_failing_once_after_the_commit(
        run_dag, dag_id, video_no=video_no, destination=destination
    )
    assert str(run.state).endswith("success"), run.state
    assert failures == [1]
    assert emu.control.count("download") == 2  # the other run's and try 1's; try 2 kept try 1's file
    assert Path(earlier["uri"].removeprefix("file://")).read_bytes() == DATA
    [ti] = run.get_task_instances()
    assert ti.try_number == 2


class _WriteOnly:
    """A boto3 S3 client whose credential may write but not read (a write-only bucket policy):
    HeadObject and ListObjectsV2 are denied, as S3 denies them. moto enforces no IAM policies
    by default, so the denial is played here; every other call goes to moto."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def _denied(self, operation: str) -> Any:
        from botocore.exceptions import ClientError

        error = {"Code": "AccessDenied", "Message": "Access Denied"}
        raise ClientError({"Error": error, "ResponseMetadata": {"HTTPStatusCode": 403}}, operation)

    def head_object(self, **kwargs: Any) -> Any:
        return self._denied("HeadObject")

    def list_objects_v2(self, **kwargs: Any) -> Any:
        return self._denied("ListObjectsV2")


def test_overwrite_retry_with_a_write_only_credential_still_downloads(
    emu: Any, upload_video: Any, run_dag: Any, moto_s3_server: Any, s3_bucket: str
) -> None:
    # Looking for an earlier try's file is a saving, not a precondition: a credential that may
    # not read the destination replaces it as overwrite=True always did (it failed for good).
    video_no = upload_video(DATA, "clip.mp4")
    run, _ = _run_failing_once_after_the_commit(
        run_dag,
        f"download_overwrite_write_only_{os.getpid()}",
        video_no=video_no,
        destination=f"s3://{s3_bucket}/out/clip.mp4",
        transport_params={"client": _WriteOnly(moto_s3_server.client())},
    )
    assert str(run.state).endswith("success"), run.state
    assert emu.control.count("download") == 2  # nothing could be looked at: downloaded again
    body = moto_s3_server.client().get_object(Bucket=s3_bucket, Key="out/clip.mp4")["Body"].read()
    assert body == DATA
