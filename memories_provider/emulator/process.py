"""An emulator in a child process (for tests that measure the emulator itself, e.g. its RSS)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from memories_provider.emulator.config import DEFAULT_API_KEY
from memories_provider.emulator.control import EmulatorHandle


@contextlib.contextmanager
def emulator_process(
    *,
    data_dir: str | Path | None = None,
    rate_limits: bool = False,
    parse_delay: float = 0.0,
    extra_args: list[str] | None = None,
    startup_timeout: float = 30.0,
) -> Iterator[EmulatorHandle]:
    """Run ``python -m memories_provider.emulator`` on a free port; yields a handle with ``.pid``.

    Defaults match the pytest fixture (no rate limits, parse delay 0). The child's log goes to
    ``<data_dir>/emulator.log``. The child is terminated (then killed) on exit.
    """
    temp = None
    if data_dir is None:
        temp = tempfile.TemporaryDirectory(prefix="memories-emulator-proc-")
        data_dir = temp.name
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "memories_provider.emulator",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--data-dir",
        str(data_dir / "store"),
        "--parse-delay",
        str(parse_delay),
    ]
    if not rate_limits:
        cmd.append("--no-rate-limits")
    cmd += extra_args or []
    with open(data_dir / "emulator.log", "wb") as log_file:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log_file, text=True)
    try:
        url = _read_url(proc, startup_timeout, data_dir / "emulator.log")
        handle = EmulatorHandle(url, DEFAULT_API_KEY, data_dir / "store", pid=proc.pid)
        yield handle
        handle.control.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        if temp is not None:
            temp.cleanup()


def _read_url(proc: subprocess.Popen[str], timeout: float, log_path: Path) -> str:
    import threading

    found: list[str] = []
    done = threading.Event()

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("MEMORIES_EMULATOR_URL="):
                found.append(line.split("=", 1)[1].strip())
                done.set()
        done.set()  # EOF: the child exited

    threading.Thread(target=reader, daemon=True).start()
    if not done.wait(timeout) or not found:
        proc.kill()
        raise RuntimeError(
            f"emulator did not start; its log:\n{log_path.read_text(errors='replace')[-2000:]}"
        )
    return found[0]
