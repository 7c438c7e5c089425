"""Boolean arguments refuse strings and other non-bools when the DAG is parsed, naming the argument."""

from __future__ import annotations

from typing import Any

import pytest

from memories_provider.operators.download import MemoriesDownloadOperator
from memories_provider.operators.export import MemoriesExportOperator
from memories_provider.operators.upload import MemoriesUploadOperator

BASE: dict[type, dict[str, Any]] = {
    MemoriesUploadOperator: {"source": "/data/clip.mp4"},
    MemoriesDownloadOperator: {"video_no": "VI000000000000000001", "destination": "/data/out/"},
    MemoriesExportOperator: {"video_no": "VI000000000000000001", "destination": "/data/index.jsonl"},
}
FLAGS = [
    (MemoriesUploadOperator, "stream_http"),
    (MemoriesUploadOperator, "idempotent"),
    (MemoriesUploadOperator, "wait_for_parse"),
    (MemoriesUploadOperator, "deferrable"),
    (MemoriesDownloadOperator, "overwrite"),
    (MemoriesDownloadOperator, "verify_size"),
    (MemoriesExportOperator, "all_parsed"),
    (MemoriesExportOperator, "overwrite"),
    (MemoriesExportOperator, "deferrable"),
]


@pytest.mark.parametrize(("operator", "flag"), FLAGS, ids=[f"{o.__name__}.{f}" for o, f in FLAGS])
@pytest.mark.parametrize("value", ["false", "True", None, 1])
def test_a_flag_that_is_not_a_bool_is_refused_naming_it(operator: type, flag: str, value: Any) -> None:
    # "false" is truthy: taken as is, overwrite="false" would overwrite.
    kwargs = dict(BASE[operator])
    if operator is MemoriesExportOperator and flag == "all_parsed":
        kwargs.pop("video_no")
    with pytest.raises(ValueError, match=f"`{flag}` must be True or False"):
        operator(task_id="t", **kwargs, **{flag: value})


@pytest.mark.parametrize(("operator", "flag"), FLAGS, ids=[f"{o.__name__}.{f}" for o, f in FLAGS])
def test_a_bool_flag_is_taken(operator: type, flag: str) -> None:
    kwargs = dict(BASE[operator])
    if operator is MemoriesExportOperator and flag == "all_parsed":
        kwargs.pop("video_no")
    assert getattr(operator(task_id="t", **kwargs, **{flag: True}), flag) is True
