"""The example DAGs load cleanly and run end to end (``dag.test()``) against the emulator."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from connections import use_emulator_conn

REPO = Path(__file__).resolve().parents[2]


def load_dags() -> Any:
    try:
        from airflow.dag_processing.dagbag import DagBag  # Airflow >= 3.1
    except ImportError:
        from airflow.models.dagbag import DagBag
    return DagBag(dag_folder=str(REPO / "dags"))  # examples are off (AIRFLOW__CORE__LOAD_EXAMPLES)


@pytest.fixture(scope="module")
def dagbag() -> Any:
    os.environ["MEMORIES_POLL_INTERVAL"] = "0.5"  # read by the DAG files at parse time
    try:
        return load_dags()
    finally:
        del os.environ["MEMORIES_POLL_INTERVAL"]


def test_dags_import_without_errors(dagbag: Any) -> None:
    assert dagbag.import_errors == {}
    assert {"memories_video_pipeline", "memories_backfill"} <= set(dagbag.dag_ids)


def test_dags_make_no_api_calls_at_parse_time(memories_emulator: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_MEMORIES_DEFAULT", memories_emulator.conn_uri)
    load_dags()
    assert memories_emulator.control.request_log() == []


@pytest.fixture
def emu(memories_emulator: Any, monkeypatch: Any) -> Any:
    use_emulator_conn(monkeypatch, memories_emulator, max_retries=1)
    memories_emulator.control.configure(parse_delay=0.5)
    return memories_emulator


def test_video_pipeline_round_trips_a_file(emu: Any, dagbag: Any, run_dag: Any, tmp_path: Path) -> None:
    source = tmp_path / "clip.mp4"
    source.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"p" * 10_000)
    out = tmp_path / "out"
    run = run_dag(
        dagbag.get_dag("memories_video_pipeline"),
        run_conf={"source": str(source), "destination": f"{out}/", "export_folder": f"{tmp_path}/idx/"},
    )
    assert run.state == "success"
    (exported,) = (tmp_path / "idx").iterdir()
    rows = [json.loads(line) for line in exported.read_text().splitlines()]
    assert [(r["kind"], r["index"], r["text"]) for r in rows] == [
        *(("visual", i, f"Scene {i} of clip.mp4") for i in range(3)),
        *(("audio", i, f"Words {i} spoken in clip.mp4") for i in range(3)),
    ]
    # Into a folder, the file is named after its video: <video_no>.<original name>, or, as here
    # (a download by video_no may come without Content-Disposition; the emulator leaves it out),
    # <video_no>.<extension of its Content-Type>.
    (downloaded,) = (p for p in out.iterdir() if not p.name.startswith("."))
    assert re.fullmatch(r"VI[0-9]{18}\.mp4", downloaded.name), downloaded.name
    assert downloaded.read_bytes() == source.read_bytes()


def test_backfill_uploads_each_file_once_and_skips_done_ones(
    emu: Any, dagbag: Any, run_dag: Any, tmp_path: Path
) -> None:
    src, dst = tmp_path / "in", tmp_path / "out"
    (src / "cam-2").mkdir(parents=True)
    # Two files with the same name in different folders keep their relative paths.
    files = {**{f"v{i}.mp4": f"video {i}".encode() * 500 for i in range(2)}, "cam-2/v0.mp4": b"cam 2" * 500}
    for name, data in files.items():
        (src / name).write_bytes(data)
    (src / "notes.txt").write_text("not a video")
    idx = tmp_path / "idx"
    conf = {"source_prefix": f"{src}/", "destination_prefix": f"{dst}/", "export_prefix": f"{idx}/"}
    assert run_dag(dagbag.get_dag("memories_backfill"), run_conf=conf).state == "success"
    for name, data in files.items():
        assert hashlib.sha256((dst / name).read_bytes()).digest() == hashlib.sha256(data).digest()
    assert emu.control.count("upload") == 3
    (exported,) = idx.iterdir()
    rows = [json.loads(line) for line in exported.read_text().splitlines()]
    assert len({r["video_no"] for r in rows}) == 3 and len(rows) == 3 * 6

    (src / "v3.mp4").write_bytes(b"new one" * 100)
    assert run_dag(dagbag.get_dag("memories_backfill"), run_conf=conf).state == "success"
    assert emu.control.count("upload") == 4  # only the new file
    assert (dst / "v3.mp4").read_bytes() == b"new one" * 100
    assert len(list(idx.iterdir())) == 2  # one dataset per run, the second with all four videos


def test_video_pipeline_refuses_an_export_folder_without_its_slash(
    emu: Any, dagbag: Any, run_dag: Any, tmp_path: Path
) -> None:
    # Before, "<tmp>/idx" was accepted and the export went to a file "<tmp>/idxVI….jsonl" beside
    # the folder the user named.
    source = tmp_path / "clip.mp4"
    source.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"p" * 1000)
    with pytest.raises(Exception, match="export_folder") as info:
        run_dag(
            dagbag.get_dag("memories_video_pipeline"),
            run_conf={
                "source": str(source),
                "destination": f"{tmp_path}/out/",
                "export_folder": f"{tmp_path}/idx",
            },
        )
    assert "ParamValidationError" in type(info.value).__name__ or "Param" in str(info.value)
    assert emu.control.request_log() == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]
