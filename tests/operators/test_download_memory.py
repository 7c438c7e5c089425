"""A 1 GiB download keeps peak memory flat: measured in a fresh subprocess (its own peak RSS)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
from peak_memory import run_measuring_script

GIB = 1024**3
MIB = 1024**2
S3_PART = 16 * MIB

# Everything heavy is imported (and one tiny download done) before the baseline is taken, so the
# growth measured is what streaming 1 GiB costs, not import or connection set-up.
_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import boto3, psutil, smart_open, smart_open.s3
    from memories_provider.operators.download import MemoriesDownloadOperator

    args = json.loads(sys.argv[1])

    def run(asset_id, destination):
        return MemoriesDownloadOperator(
            task_id="t", asset_id=asset_id, destination=destination, overwrite=True,
            destination_conn_id=args["conn_id"], transport_params=args["transport_params"],
        ).execute(context={})

    run(args["warm_asset"], args["warm_destination"])
    base = psutil.Process().memory_info().rss
    result = run(args["asset"], args["destination"])
    peak = vm_hwm()
    print(json.dumps({"base": base, "peak": peak, "result": result}))
    """
)


@pytest.fixture(scope="module")
def one_gib_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1 GiB file (sparse: costs no disk until the emulator copies it)."""
    path = tmp_path_factory.mktemp("big") / "big.mp4"
    with open(path, "wb") as fh:
        fh.truncate(GIB)
    return path


def _measure(emu: Any, big: Path, destination: str, warm: str, conn_id: str | None, tp: dict | None) -> dict:
    asset = emu.control.add_asset(str(big), "big.mp4", "video/mp4")
    warm_asset = emu.control.add_asset(b"warm-up", "w.mp4", "video/mp4")
    args = {
        "asset": asset["asset_id"],
        "destination": destination,
        "warm_asset": warm_asset["asset_id"],
        "warm_destination": warm,
        "conn_id": conn_id,
        "transport_params": tp,
    }
    out = run_measuring_script(_SCRIPT, args)
    assert out["result"]["bytes"] == GIB
    growth = out["peak"] - out["base"]
    print(f"\n{destination}: base RSS {out['base'] / MIB:.0f} MiB, growth {growth / MIB:.1f} MiB")
    return {**out, "growth": growth}


def test_one_gib_to_local_file_keeps_rss_flat(emu: Any, one_gib_file: Path, tmp_path: Path) -> None:
    out = _measure(emu, one_gib_file, str(tmp_path / "big.mp4"), str(tmp_path / "w.mp4"), None, None)
    assert (tmp_path / "big.mp4").stat().st_size == GIB
    assert out["growth"] <= 64 * MIB


def test_one_gib_to_s3_keeps_rss_to_about_one_part(
    emu: Any, one_gib_file: Path, moto_s3_server: Any, s3_bucket: str
) -> None:
    out = _measure(
        emu,
        one_gib_file,
        f"s3://{s3_bucket}/big.mp4",
        f"s3://{s3_bucket}/w.mp4",
        moto_s3_server.conn_id,
        {"min_part_size": S3_PART},
    )
    head = moto_s3_server.client().head_object(Bucket=s3_bucket, Key="big.mp4")
    assert head["ContentLength"] == GIB
    assert out["growth"] <= S3_PART + 50 * MIB
