"""A list given where a task takes one value (a source, a destination, an id): the mistake of not
mapping the task. Refused naming the parameter and pointing at ``.expand()``, before any request.

Before, the list was read as one path or id: ``source=['a.mp4', 'b.mp4']`` failed as "`source`
"['a.mp4', 'b.mp4']" does not exist"; a download's ``video_no`` rendered from a list
(``"['VI…']"``) was sent to the service, which refused it; a download or export to
``destination=['/out/']`` went as far as the service before failing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException

from memories_provider.operators.download import MemoriesDownloadOperator
from memories_provider.operators.export import MemoriesExportOperator
from memories_provider.operators.upload import MemoriesUploadOperator

VIDEO_NO = "VI568102998803353600"


def fails_at_once(emu: Any, operator: Any, name: str, count: int) -> None:
    with pytest.raises(AirflowFailException) as info:
        operator.execute(context={})
    assert str(info.value) == (
        f"`{name}` takes one value, got a list of {count}: to run one task per value, map the task, "
        f"e.g. {type(operator).__name__}.partial(task_id=...).expand({name}=<the list>)"
    )
    assert emu.control.request_log() == []


@pytest.mark.parametrize("as_text", [False, True])
def test_upload_source(emu: Any, tmp_path: Path, as_text: bool) -> None:
    sources = [str(tmp_path / "a.mp4"), str(tmp_path / "b.mp4")]
    for source in sources:
        Path(source).write_bytes(b"\0" * 100)
    value: Any = str(sources) if as_text else sources  # as "{{ params.sources }}" renders it
    fails_at_once(emu, MemoriesUploadOperator(task_id="u", source=value, idempotent=False), "source", 2)


@pytest.mark.parametrize("as_text", [False, True])
def test_download_video_no_and_destination(emu: Any, tmp_path: Path, as_text: bool) -> None:
    ids = [VIDEO_NO, "VI568102998803353601", "VI568102998803353602"]
    value: Any = str(ids) if as_text else ids
    if as_text:  # a list given as a list is refused at parse time already ("must be a string")
        operator = MemoriesDownloadOperator(task_id="d", video_no=value, destination=f"{tmp_path}/")
        fails_at_once(emu, operator, "video_no", 3)
    folders = [f"{tmp_path}/x/"]
    destination: Any = str(folders) if as_text else folders
    operator = MemoriesDownloadOperator(task_id="d", video_no=VIDEO_NO, destination=destination)
    fails_at_once(emu, operator, "destination", 1)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("as_text", [False, True])
def test_export_destination(emu: Any, tmp_path: Path, as_text: bool) -> None:
    files = [f"{tmp_path}/a.jsonl", f"{tmp_path}/b.jsonl"]
    destination: Any = str(files) if as_text else files
    fails_at_once(
        emu, MemoriesExportOperator(task_id="e", video_no=VIDEO_NO, destination=destination), "destination", 2
    )


def test_a_path_object_or_a_bracketed_name_is_still_one_value(emu: Any, tmp_path: Path) -> None:
    from memories_provider.storage.destinations import resolve_transport
    from memories_provider.templating import single_value

    assert single_value("source", tmp_path / "clip.mp4", operator="X") == f"{tmp_path}/clip.mp4"
    assert single_value("destination", "/data/[2024] cams/", operator="X") == "/data/[2024] cams/"
    assert resolve_transport(single_value("destination", f"{tmp_path}/[draft]/", operator="X")).params == {}


@pytest.mark.parametrize("value", [b"/data/clip.mp4", 5])
def test_what_is_not_text_is_refused_by_its_type(emu: Any, tmp_path: Path, value: Any) -> None:
    # str() made a name of it: source=b'/data/clip.mp4' was "`source` "b'/data/clip.mp4'" does not
    # exist", a destination of 5 wrote a file named '5' in the worker's working folder.
    operators = [
        MemoriesUploadOperator(task_id="u", source=value, idempotent=False),
        MemoriesExportOperator(task_id="e", video_no=VIDEO_NO, destination=value),
        MemoriesDownloadOperator(task_id="d", video_no=VIDEO_NO, destination=value),
    ]
    for operator in operators:
        name = "source" if isinstance(operator, MemoriesUploadOperator) else "destination"
        with pytest.raises(AirflowFailException, match=f"`{name}` must be text .a path, URI or id., got"):
            operator.execute(context={})
    assert emu.control.request_log() == []
    assert list(tmp_path.iterdir()) == []
