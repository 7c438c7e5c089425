"""``make demo``'s program runs end to end, twice in a row, and leaves no emulator behind."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[2]


def test_demo_runs_twice_and_cleans_up(tmp_path: Path) -> None:
    (tmp_path / "dags").symlink_to(REPO / "dags")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "AIRFLOW__"))}
    for _ in range(2):
        proc = subprocess.run(
            [sys.executable, "-m", "memories_provider.demo"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        assert "matches the source" in proc.stdout
        where = re.search(r"The downloaded file is at: (.+)", proc.stdout)
        assert where is not None
        downloaded = Path(where.group(1).strip())
        assert downloaded.read_bytes() == (tmp_path / "demo-output" / "sample.mp4").read_bytes()
        learnt = re.search(r"What memories.ai learnt from it is at: (.+)", proc.stdout)
        assert learnt is not None
        rows = [json.loads(line) for line in Path(learnt.group(1).strip()).read_text().splitlines()]
        assert {row["kind"] for row in rows} == {"visual", "audio"}
        assert {row["video_no"] for row in rows} == {downloaded.name.split(".")[0]}
        pid = int(re.search(r"\(pid (\d+)\)", proc.stdout).group(1))  # type: ignore[union-attr]
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_demo_stops_the_emulator_when_interrupted(tmp_path: Path) -> None:
    (tmp_path / "dags").symlink_to(REPO / "dags")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "AIRFLOW__"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "memories_provider.demo"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        pid = None
        for line in proc.stdout:  # the emulator is up once the demo prints its pid
            found = re.search(r"\(pid (\d+)\)", line)
            if found:
                pid = int(found.group(1))
                break
        assert pid is not None, proc.stderr.read() if proc.stderr else ""
        emulator = psutil.Process(pid)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr[-3000:]
    assert "the emulator was stopped" in stderr
    # psutil.wait_procs raises nothing and returns the survivors: the emulator must not be one.
    _, alive = psutil.wait_procs([emulator], timeout=30)
    assert not alive or emulator.status() == psutil.STATUS_ZOMBIE
