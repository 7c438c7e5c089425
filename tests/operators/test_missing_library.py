"""A storage library that is not installed: the task names the parameter and the extra to install.

Before, each scheme failed its own way: s3 said "pip install 'airflow-provider-memories[s3]'" but
named no parameter; azure:// asked for credentials (as if they were the problem); sftp:// relayed
smart-open's "pip install smart_open[ssh]"; gs:// ended in a raw ModuleNotFoundError.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException

from memories_provider.operators.download import MemoriesDownloadOperator
from memories_provider.operators.export import MemoriesExportOperator
from memories_provider.operators.upload import MemoriesUploadOperator

VIDEO_NO = "VI568102998803353600"
CASES = [
    ("boto3", "s3://bucket/in", "boto3", "s3"),
    ("google.cloud.storage", "gs://bucket/in", "google-cloud-storage", "gcs"),
    ("azure.storage.blob", "azure://container/in", "azure-storage-blob", "azure"),
    ("paramiko", "sftp://127.0.0.1/srv/in", "paramiko", "sftp"),
]


@pytest.mark.parametrize(("module", "prefix", "package", "extra"), CASES)
@pytest.mark.parametrize("kind", ["upload", "download", "export"])
def test_a_missing_storage_library_names_the_parameter_and_the_extra(
    emu: Any, monkeypatch: pytest.MonkeyPatch, kind: str, module: str, prefix: str, package: str, extra: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed: importing it fails
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    param = "source" if kind == "upload" else "destination"
    uri = {"upload": f"{prefix}/clip.mp4", "download": f"{prefix}/", "export": f"{prefix}/x.jsonl"}[kind]
    operator: Any = {
        "upload": lambda: MemoriesUploadOperator(task_id="t", source=uri, idempotent=False),
        "download": lambda: MemoriesDownloadOperator(task_id="t", video_no=VIDEO_NO, destination=uri),
        "export": lambda: MemoriesExportOperator(task_id="t", video_no=VIDEO_NO, destination=uri),
    }[kind]()
    with pytest.raises(AirflowFailException) as info:  # installing it takes a deploy, not a retry
        operator.execute(context={})
    assert str(info.value) == (
        f"`{param}` {uri!r} needs {package} for {uri.split(':')[0]}:// URIs, which is not installed: "
        f"pip install 'airflow-provider-memories[{extra}]'"
    )
    assert emu.control.request_log() == []


def test_local_paths_need_no_storage_library(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from memories_provider.storage.destinations import resolve_transport
    from memories_provider.storage.files import stat_storage_file

    for module, *_ in CASES:
        monkeypatch.setitem(sys.modules, module, None)
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"\0" * 4096)
    assert stat_storage_file(str(video)).size == 4096
    assert resolve_transport(str(tmp_path) + "/").params == {}
