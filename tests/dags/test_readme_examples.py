"""The README's operator examples, run as written — one DAG, ``dag.test()``, the emulator and
moto S3 standing in for memories.ai and the buckets the examples name.

Only what cannot exist here is provided around them (the buckets, the source object, the
``aws_default``/``aws_lake`` connections); the code blocks themselves are executed verbatim.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pendulum
import pytest
from connections import use_emulator_conn

README = Path(__file__).resolve().parents[2] / "README.md"
SECTIONS = ("## Uploading", "## Waiting", "## Downloading", "## Exporting")


def first_python_block(section: str) -> str:
    text = README.read_text()
    start = text.index(section)
    match = re.compile(r"```python\n(.*?)```", re.S).search(text, start)
    assert match is not None, section
    return match.group(1)


def test_the_operator_examples_run_together_as_written(
    memories_emulator: Any, moto_s3_server: Any, monkeypatch: pytest.MonkeyPatch, run_dag: Any
) -> None:
    from airflow.providers.common.compat.sdk import DAG

    use_emulator_conn(monkeypatch, memories_emulator)
    s3 = moto_s3_server.client()
    for bucket in ("raw-videos", "curated", "lake"):
        s3.create_bucket(Bucket=bucket)
    video = b"\x00\x00\x00\x18ftypmp42" + b"v" * 50_000
    s3.put_object(Bucket="raw-videos", Key="2024/05/cam-3.mp4", Body=video)
    moto = json.dumps(
        {
            "conn_type": "aws",
            "login": "testing",
            "password": "testing",
            "extra": {"endpoint_url": moto_s3_server.endpoint_url, "region_name": "us-east-1"},
        }
    )
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", moto)
    monkeypatch.setenv("AIRFLOW_CONN_AWS_LAKE", moto)

    namespace: dict[str, Any] = {}
    with DAG("readme_examples", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC")) as dag:
        for section in SECTIONS:
            exec(first_python_block(section), namespace)
        namespace["wait"] >> [namespace["download"], namespace["export"]]
    run = run_dag(dag)
    assert run.state == "success"

    [stored] = memories_emulator.control.videos()
    assert stored["unique_id"] == "cameras"
    [downloaded] = s3.list_objects_v2(Bucket="curated", Prefix="videos/")["Contents"]
    # A download by video_no may come without Content-Disposition (the emulator's default, as the
    # spec allows): the file is named by its id and the Content-Type's extension.
    assert downloaded["Key"] == f"videos/{stored['video_no']}.mp4"
    assert s3.get_object(Bucket="curated", Key=downloaded["Key"])["Body"].read() == video
    [exported] = s3.list_objects_v2(Bucket="lake", Prefix="memories/")["Contents"]
    rows = s3.get_object(Bucket="lake", Key=exported["Key"])["Body"].read().decode().splitlines()
    assert {json.loads(row)["video_no"] for row in rows} == {stored["video_no"]}
    assert {json.loads(row)["kind"] for row in rows} == {"visual", "audio"}
