"""A 1 GiB upload keeps the worker's peak memory flat: measured in a fresh subprocess."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
from peak_memory import run_measuring_script

GIB = 1024**3
MIB = 1024**2

# Imports and one tiny upload happen before the baseline, so the growth measured is the 1 GiB's.
_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import boto3, psutil, smart_open, smart_open.s3
    from memories_provider.operators.upload import MemoriesUploadOperator

    args = json.loads(sys.argv[1])

    class TI:
        dag_id, task_id, run_id, map_index = "d", "t", "r", -1
        def xcom_push(self, key, value):
            pass

    def run(source):
        return MemoriesUploadOperator(
            task_id="t", source=source, source_conn_id=args["conn_id"], idempotent=False
        ).execute({"ti": TI()})

    run(args["warm"])
    base = psutil.Process().memory_info().rss
    peak_before = vm_hwm()
    video_no = run(args["source"])
    peak = vm_hwm()
    print(json.dumps({"base": base, "peak": peak, "peak_before": peak_before, "video_no": video_no}))
    """
)


@pytest.fixture(scope="module")
def one_gib_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("big-upload") / "big.mp4"
    with open(path, "wb") as fh:
        fh.truncate(GIB)  # sparse
    return path


def _measure(emu: Any, source: str, warm: str, conn_id: str | None) -> dict:
    args = {"source": source, "warm": warm, "conn_id": conn_id}
    out = run_measuring_script(_SCRIPT, args)
    sizes = {v["video_no"]: v["size"] for v in emu.control.videos()}
    assert sizes[out["video_no"]] == GIB
    growth = out["peak"] - out["base"]
    base, before = out["base"] / MIB, out["peak_before"] / MIB
    print(f"\n{source}: base {base:.0f} MiB, peak before {before:.0f} MiB, growth {growth / MIB:.1f} MiB")
    return {**out, "growth": growth}


def test_one_gib_from_a_local_file_keeps_rss_flat(emu: Any, one_gib_file: Path, tmp_path: Path) -> None:
    warm = tmp_path / "warm.mp4"
    warm.write_bytes(b"warm-up")
    assert _measure(emu, str(one_gib_file), str(warm), None)["growth"] <= 64 * MIB


def test_one_gib_from_s3_keeps_rss_flat(
    emu: Any, one_gib_file: Path, moto_s3_server: Any, s3_bucket: str
) -> None:
    client = moto_s3_server.client()
    client.upload_file(str(one_gib_file), s3_bucket, "big.mp4")
    client.put_object(Bucket=s3_bucket, Key="warm.mp4", Body=b"warm-up")
    out = _measure(emu, f"s3://{s3_bucket}/big.mp4", f"s3://{s3_bucket}/warm.mp4", moto_s3_server.conn_id)
    assert out["growth"] <= 64 * MIB
