"""A ``memories_conn_id`` that names no connection: every task says which parameter and how to fix it.

Before, the task failed with Airflow's "The conn_id `x` isn't defined" (no parameter named), and
spent its retries on it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException

from memories_provider.hooks.memories import MemoriesHook
from memories_provider.operators.download import MemoriesDownloadOperator
from memories_provider.operators.export import MemoriesExportOperator
from memories_provider.operators.upload import MemoriesUploadOperator

VIDEO_NO = "VI568102998803353600"
MESSAGE = (
    "Connection 'memories_prod' is not defined (parameter `memories_conn_id`): create it in "
    "Admin > Connections with type memories.ai, or set AIRFLOW_CONN_MEMORIES_PROD"
)


@pytest.mark.parametrize("kind", ["upload", "download", "export"])
def test_each_operator_names_memories_conn_id_and_fails_at_once(emu: Any, tmp_path: Path, kind: str) -> None:
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"\0" * 1024)
    common = {"task_id": kind, "memories_conn_id": "memories_prod"}
    operator: Any = {
        "upload": lambda: MemoriesUploadOperator(source=str(video), idempotent=False, **common),
        "download": lambda: MemoriesDownloadOperator(
            video_no=VIDEO_NO, destination=str(tmp_path / "out") + "/", **common
        ),
        "export": lambda: MemoriesExportOperator(
            video_no=VIDEO_NO, destination=str(tmp_path / "x.jsonl"), **common
        ),
    }[kind]()
    with pytest.raises(AirflowFailException) as info:  # no retries: a retry finds it missing too
        operator.execute(context={})
    assert str(info.value) == MESSAGE
    assert emu.control.request_log() == []


def test_hook_and_its_test_button_say_the_same(emu: Any) -> None:
    hook = MemoriesHook("memories_prod")
    with pytest.raises(ValueError) as info:
        hook.config  # noqa: B018
    assert str(info.value) == MESSAGE
    assert hook.test_connection() == (False, MESSAGE)


async def test_the_trigger_side_lookup_says_the_same(emu: Any) -> None:
    with pytest.raises(ValueError) as info:
        await MemoriesHook("memories_prod").aget_config()
    assert str(info.value) == MESSAGE


@pytest.mark.parametrize("deferrable", [False, True])
def test_the_sensor_fails_at_once_too(emu: Any, deferrable: bool) -> None:
    from memories_provider.sensors.video_status import MemoriesVideoStatusSensor

    sensor = MemoriesVideoStatusSensor(
        task_id="wait",
        video_no=VIDEO_NO,
        memories_conn_id="memories_prod",
        deferrable=deferrable,
        poke_interval=0.1,
        timeout=30,
    )
    with pytest.raises(AirflowFailException) as info:
        sensor.execute(context={})
    assert str(info.value) == MESSAGE
    assert emu.control.request_log() == []
