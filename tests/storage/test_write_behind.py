"""WriteBehindFile: the same bytes as a plain file, written back window by window as it grows."""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

import pytest

from memories_provider.storage import write_behind
from memories_provider.storage.write_behind import WriteBehindFile, open_write_behind

pytestmark = pytest.mark.skipif(write_behind._sync_file_range is None, reason="Linux only")

WINDOW = 64 * 1024


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, int]]:
    """Small windows, and every real sync_file_range call recorded as (offset, length, flags)."""
    real = write_behind._sync_file_range
    assert real is not None
    seen: list[tuple[int, int, int]] = []

    def recording(fd: int, offset: int, length: int, flags: int) -> int:
        seen.append((offset, length, flags))
        return int(real(fd, offset, length, flags))

    monkeypatch.setattr(write_behind, "WINDOW", WINDOW)
    monkeypatch.setattr(write_behind, "LAG", 2)
    monkeypatch.setattr(write_behind, "_sync_file_range", recording)
    return seen


def _data(size: int) -> bytes:
    return os.urandom(size)


def test_bytes_are_written_and_windows_written_back_then_dropped(tmp_path: Path, calls: list[Any]) -> None:
    data = _data(10 * WINDOW + 1234)
    path = tmp_path / "f"
    with open_write_behind(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)) as out:
        for start in range(0, len(data), 50_000):  # writes that straddle the windows
            out.write(memoryview(data)[start : start + 50_000])
    assert path.read_bytes() == data
    started = [(offset, length) for offset, length, flags in calls if flags == 2]
    waited = [(offset, length) for offset, length, flags in calls if flags == 7]
    # Write-back started for every whole window, in order, each exactly once.
    assert started[0][0] == 0
    assert all(a[0] + a[1] == b[0] for a, b in itertools.pairwise(started))
    assert started[-1][0] + started[-1][1] == 10 * WINDOW
    # Waited for (then dropped) only windows LAG behind the last one started.
    assert waited and waited[0][0] == 0
    assert waited[-1][0] + waited[-1][1] == 8 * WINDOW


def test_a_filesystem_that_refuses_is_written_plainly(
    tmp_path: Path, calls: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    refused: list[int] = []

    def refusing(fd: int, offset: int, length: int, flags: int) -> int:
        refused.append(offset)
        return -1

    monkeypatch.setattr(write_behind, "_sync_file_range", refusing)
    data = _data(5 * WINDOW)
    path = tmp_path / "f"
    with open_write_behind(os.open(path, os.O_WRONLY | os.O_CREAT)) as out:
        out.write(data)
        out.write(data)
    assert path.read_bytes() == data + data
    assert refused == [0]  # tried once, then a plain file


def test_after_a_seek_it_is_a_plain_file(tmp_path: Path, calls: list[Any]) -> None:
    path = tmp_path / "f"
    with WriteBehindFile(str(path), "wb") as out:
        out.write(b"a" * WINDOW)
        out.seek(10)
        out.write(b"b" * 3 * WINDOW)
    assert path.read_bytes() == b"a" * 10 + b"b" * 3 * WINDOW
    assert len(calls) == 1  # the first window only
