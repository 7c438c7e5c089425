"""Durations: every waiting parameter takes seconds or a ``timedelta``, as Airflow's sensors do.

Before, the upload operator raised a bare ``TypeError`` ("'>' not supported between instances of
'datetime.timedelta' and 'int'") for ``poll_interval=timedelta(seconds=30)`` — and for a string —
naming no parameter, and the export refused a ``timedelta`` that the sensor next to it accepted.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from memories_provider.operators.export import MemoriesExportOperator
from memories_provider.operators.upload import MemoriesUploadOperator
from memories_provider.sensors.video_status import MemoriesVideoStatusSensor

VIDEO_NO = "VI568102998803353600"


def upload(**kwargs: Any) -> MemoriesUploadOperator:
    return MemoriesUploadOperator(task_id="u", source="/data/clip.mp4", **kwargs)


def export(**kwargs: Any) -> MemoriesExportOperator:
    return MemoriesExportOperator(task_id="e", video_no=VIDEO_NO, destination="/data/x.jsonl", **kwargs)


def test_timedeltas_are_taken_as_their_seconds_like_the_sensors() -> None:
    up = upload(
        poll_interval=timedelta(seconds=30), timeout=timedelta(hours=2), lost_answer_grace=timedelta(0)
    )
    assert (up.poll_interval, up.timeout, up.lost_answer_grace) == (30.0, 7200.0, 0.0)
    ex = export(poll_interval=timedelta(seconds=5), wait_timeout=timedelta(minutes=10))
    assert (ex.poll_interval, ex.wait_timeout) == (5.0, 600.0)
    sensor = MemoriesVideoStatusSensor(
        task_id="s", video_no=VIDEO_NO, poke_interval=timedelta(seconds=30), timeout=timedelta(hours=1)
    )
    assert (sensor.poke_interval, sensor.timeout) == (30.0, 3600.0)


@pytest.mark.parametrize(
    "value", ["30", None, True, float("inf"), float("nan"), -1, 0, timedelta(seconds=-1)]
)
@pytest.mark.parametrize(
    ("build", "name"),
    [
        (upload, "poll_interval"),
        (upload, "timeout"),
        (export, "poll_interval"),
        (export, "wait_timeout"),
    ],
)
def test_anything_else_is_refused_naming_the_parameter(build: Any, name: str, value: Any) -> None:
    with pytest.raises(
        ValueError, match=f"^`{name}` must be a finite number of seconds > 0 \\(or a timedelta\\)"
    ):
        build(**{name: value})


@pytest.mark.parametrize("value", ["120", -1, float("nan"), True])
def test_lost_answer_grace_may_be_zero_but_nothing_else(value: Any) -> None:
    with pytest.raises(ValueError, match=r"^`lost_answer_grace` must be a finite number of seconds >= 0"):
        upload(lost_answer_grace=value)
