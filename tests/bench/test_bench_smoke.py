"""The benchmark scripts still work: a tiny run (1 MiB files, N = 1 and 10) writes a full report."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_smoke_run_writes_the_report(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "run.py"),
            "--smoke",
            "--out",
            str(tmp_path),
            "--results",
            str(results),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = results.read_text()
    sections = (
        "## Machine",
        "## Throughput",
        "## Peak memory",
        "## Status waits",
        "## HA triggerers",
        "## Export",
    )
    for section in sections:
        assert section in report
    for row in (
        "download to local file, 1 MiB",
        "upload from local file, 1 MiB",
        "download to S3 (moto), 1 MiB",
        "download to S3 (moto, HTTPS), 1 MiB",
        "upload from S3",
    ):
        assert row in report
    assert "| 10 |" in report
    assert "| 20 | 5 | jsonl | 200 |" in report  # the export row: 20 videos x 5 segments x 2 kinds
    assert (tmp_path / "results.png").stat().st_size > 1000
