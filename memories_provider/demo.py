"""``make demo``: the example pipeline end to end on the local emulator and the local filesystem.

Generates a small sample video, starts the emulator in a child process, runs the
``memories_video_pipeline`` DAG (upload → deferrable wait for ``PARSE`` → download → export) with
``dag.test()`` in a throw-away Airflow home under ``demo-output/``, prints a summary, and always
stops the emulator — also on Ctrl-C or a failure.

Run from the project root: ``python -m memories_provider.demo``.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SAMPLE_BYTES = 512 * 1024


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def write_sample_video(path: Path, size: int = SAMPLE_BYTES) -> None:
    """A small MP4 container (``ftyp``, ``moov``/``mvhd``, ``mdat``), generated locally — no download."""
    ftyp = _box(b"ftyp", b"isom" + struct.pack(">I", 512) + b"isomiso2mp41")
    # mvhd v0: times, timescale 1000, duration 1 s, rate 1.0, volume 1.0, identity matrix, next track 2
    matrix = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
    mvhd = _box(
        b"mvhd",
        struct.pack(">IIIII", 0, 0, 0, 1000, 1000)
        + struct.pack(">IH", 0x10000, 0x100)
        + b"\x00" * 10
        + matrix
        + b"\x00" * 24
        + struct.pack(">I", 2),
    )
    moov = _box(b"moov", mvhd)
    rng = random.Random(20241122)  # deterministic content: the same sha256 every run
    payload = rng.randbytes(max(size - len(ftyp) - len(moov) - 8, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(ftyp + moov + _box(b"mdat", payload))


def _prepare_airflow(home: Path, dags: Path) -> None:
    """Environment of the demo's Airflow (set before Airflow is imported) and its metadata DB."""
    from importlib.metadata import version

    os.environ["AIRFLOW_HOME"] = str(home)
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(dags)
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{home}/airflow.db"
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
    os.environ["MEMORIES_POLL_INTERVAL"] = "1"  # the emulator indexes in seconds, not minutes
    if version("apache-airflow").startswith("2."):
        os.environ["AIRFLOW__CORE__EXECUTOR"] = "SequentialExecutor"
    home.mkdir(parents=True, exist_ok=True)
    print("• preparing a local Airflow metadata DB ...", flush=True)
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _load_dag(dags: Path, dag_id: str) -> Any:
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow < 3.1
        from airflow.models.dagbag import DagBag  # type: ignore[no-redef]
    bag = DagBag(dag_folder=str(dags))
    if bag.import_errors:
        raise RuntimeError(f"DAG import errors: {bag.import_errors}")
    return bag.get_dag(dag_id)


def _stop_on_signals() -> None:
    # SIGTERM (make, a CI timeout) and SIGHUP (a closed terminal) unwind like Ctrl-C, so the
    # emulator is stopped.
    def handler(signum: int, frame: Any) -> None:
        _ignore_interrupts()  # a second one would cut short the unwinding that stops the emulator
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGHUP, handler)


def _ignore_interrupts() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)


def main() -> int:
    """Run the demo; returns the process exit code."""
    project = Path.cwd()
    dags = project / "dags"
    if not (dags / "memories_video_pipeline.py").exists():
        print("Run the demo from the project root (where dags/ is): make demo", file=sys.stderr)
        return 2
    _stop_on_signals()
    out = project / "demo-output"
    started = time.monotonic()
    sample = out / "sample.mp4"
    write_sample_video(sample)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    conf = {
        "source": str(sample),
        "destination": f"{out / 'downloads' / stamp}/",
        "export_folder": f"{out / 'exports' / stamp}/",
    }
    _prepare_airflow(out / "airflow-home", dags)

    from memories_provider.emulator.process import emulator_process
    from memories_provider.testing import dag_test

    print("• starting the memories.ai emulator ...", flush=True)
    with emulator_process(data_dir=out / "emulator", rate_limits=True, parse_delay=3.0) as emu:
        os.environ["AIRFLOW_CONN_MEMORIES_DEFAULT"] = emu.conn_uri
        print(f"  emulator at {emu.url} (pid {emu.pid}); indexing takes 3 s", flush=True)
        print(
            "• running memories_video_pipeline: upload → wait for PARSE (deferred) → download → export ...",
            flush=True,
        )
        run = dag_test(_load_dag(dags, "memories_video_pipeline"), run_conf=conf)
        tis = {ti.task_id: ti for ti in run.get_task_instances()}
        if str(run.state) != "success":
            states = {task_id: str(ti.state) for task_id, ti in tis.items()}
            print(f"\n✗ the pipeline failed: {states}", file=sys.stderr)
            return 1
        results = {
            task_id: tis[task_id].xcom_pull(task_ids=task_id) for task_id in ("upload", "download", "export")
        }
        video_no = results["upload"]
        status = next((v["status"] for v in emu.control.videos() if v["video_no"] == video_no), "?")
        uploads, checks = emu.control.count("upload"), emu.control.count("list_videos")
        activity = f"{status}; {uploads} upload, {checks} status checks"
    return _report(sample, video_no, activity, results, time.monotonic() - started)


def _report(sample: Path, video_no: str, activity: str, results: dict[str, Any], seconds: float) -> int:
    """Print what the pipeline did and where its results are; 0 when the bytes came back intact."""
    result, exported = results["download"], results["export"]
    downloaded = Path(result["uri"])
    same = (
        hashlib.sha256(downloaded.read_bytes()).hexdigest() == hashlib.sha256(sample.read_bytes()).hexdigest()
    )
    print(
        "\n✓ memories_video_pipeline succeeded\n"
        f"  video          {video_no} ({activity})\n"
        f"  source         {sample}\n"
        f"  destination    {downloaded}\n"
        f"  bytes          {result['bytes']}\n"
        f"  sha256         {result['sha256']} ({'matches' if same else 'DIFFERS FROM'} the source)\n"
        f"  index outputs  {exported['rows']} rows (captions, transcript) in {exported['uri']}\n"
        f"  time taken     {seconds:.1f} s\n"
        f"\nThe downloaded file is at: {downloaded}\nWhat memories.ai learnt from it is at: {exported['uri']}"
    )
    return 0 if same else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as stop:
        _ignore_interrupts()
        print(f"\ndemo interrupted ({stop}); the emulator was stopped", file=sys.stderr, flush=True)
        # At once: the interpreter's shutdown after an interrupted dag.test() sometimes ends the
        # process by SIGINT (exit -2, about 1 run in 10), and the exit status is to say 130.
        sys.stdout.flush()
        os._exit(130)
