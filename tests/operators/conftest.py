"""Fixtures for the operator tests: the memories connection pointed at the emulator.

Storage services (moto S3, sshd, Azurite) come from ``tests/services.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import requests
from connections import use_emulator_conn


@pytest.fixture
def set_memories_conn(memories_emulator: Any, monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """``set_memories_conn(**extra)``: point ``memories_default`` at the emulator with these extras."""

    def _set(**extra: Any) -> None:
        use_emulator_conn(monkeypatch, memories_emulator, **extra)

    return _set


@pytest.fixture
def emu(memories_emulator: Any, set_memories_conn: Callable[..., None]) -> Any:
    """The emulator, with ``memories_default`` pointing at it (3 retries)."""
    set_memories_conn(max_retries=3)
    return memories_emulator


@pytest.fixture
def upload_video(memories_emulator: Any) -> Callable[..., str]:
    """``upload_video(data, name="clip.mp4") -> video_no`` through the emulator's public upload endpoint."""

    def _upload(data: bytes, name: str = "clip.mp4", unique_id: str = "default") -> str:
        resp = requests.post(
            f"{memories_emulator.v1_url}/upload",
            headers={"Authorization": memories_emulator.api_key},
            files={"file": (name, data, "video/mp4")},
            data={"unique_id": unique_id},
            timeout=60,
        )
        resp.raise_for_status()
        body = resp.json()
        assert body["code"] == "0000", body
        return str(body["data"]["videoNo"])

    return _upload


@pytest.fixture
def after_first_look(monkeypatch: pytest.MonkeyPatch) -> Callable[[Callable[[], None]], list[int]]:
    """``after_first_look(action)``: run ``action`` right after a retry's first look at the scope.

    The look — a full listing, ``MemoriesHook.iter_videos`` without a tag filter — is real; the
    action runs once its last page has been read, so that round saw the scope as it was before.
    Returns a one-item list counting such listings. Works in ``dag.test()``, which runs tasks in
    this process.
    """
    from memories_provider.hooks.memories import MemoriesHook

    real = MemoriesHook.iter_videos

    def install(action: Callable[[], None]) -> list[int]:
        looks = [0]

        def iter_videos(self: MemoriesHook, **kwargs: Any) -> Any:
            yield from real(self, **kwargs)
            if "tag" not in kwargs:
                looks[0] += 1
                if looks[0] == 1:
                    action()

        monkeypatch.setattr(MemoriesHook, "iter_videos", iter_videos)
        return looks

    return install
