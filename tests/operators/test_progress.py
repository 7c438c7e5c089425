"""Progress lines of long transfers."""

from __future__ import annotations

from typing import Any

import pytest


def test_progress_is_logged_at_most_every_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    from memories_provider.operators import _progress

    clock = [100.0]
    monkeypatch.setattr(_progress.time, "monotonic", lambda: clock[0])
    lines: list[tuple[Any, ...]] = []

    class Log:
        def info(self, *args: Any) -> None:
            lines.append(args)

    progress = _progress.TransferProgress(Log(), "video VI1", total=100 * 1024 * 1024)
    for step in range(1, 21):  # 20 chunks, one every second
        clock[0] += 1.0
        progress.update(step * 5 * 1024 * 1024)
    progress.update(100 * 1024 * 1024, final=True)
    assert len(lines) == 5  # at 5, 10, 15, 20 s, plus the final line
    assert lines[0][2] == 25 * 1024 * 1024
    assert "%" in lines[0][0] and "MB/s" in lines[0][0]
    assert lines[0][4] == " (25.0%)"
