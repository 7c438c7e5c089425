"""A 1 GiB upload streams: the uploading process's peak RSS grows by at most 64 MiB over its baseline."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

GIB = 1024**3

CHILD = r"""
import json, sys
from memories_provider.client import MemoriesClient, RetryPolicy

path, url, key = sys.argv[1:4]

def peak_mib():
    # VmHWM, not ru_maxrss: ru_maxrss survives fork+exec, so pytest's own peak would hide ours.
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024

with MemoriesClient(key, base_url=url, retry=RetryPolicy(max_retries=0), timeout=600) as client:
    client.list_unique_ids()  # warm up: every import done, a pooled connection open
    baseline = peak_mib()
    result = client.upload_video(path)
    print(json.dumps({"baseline": baseline, "peak": peak_mib(), "video_no": result.video_no}))
"""


@pytest.mark.timeout(600)
def test_one_gib_upload_keeps_peak_rss_flat(memories_emulator, tmp_path):
    path = tmp_path / "big.mp4"
    with open(path, "wb") as fh:
        fh.truncate(GIB)  # sparse: no disk or memory cost on this side
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), memories_emulator.v1_url, memories_emulator.api_key],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"upload RSS: baseline {report['baseline']:.1f} MiB, peak {report['peak']:.1f} MiB")
    assert report["peak"] - report["baseline"] <= 64, report
    (stored,) = [v for v in memories_emulator.control.videos() if v["video_no"] == report["video_no"]]
    assert stored["size"] == GIB
