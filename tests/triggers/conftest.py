"""Fixtures for the trigger tests: the emulator as ``memories_default`` and videos in it."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import requests
from connections import use_emulator_conn


@pytest.fixture
def emu(memories_emulator, monkeypatch):
    """The emulator as ``memories_default``, with client retries off so the poller's back-off is tested."""
    use_emulator_conn(monkeypatch, memories_emulator, max_retries=0)
    return memories_emulator


@pytest.fixture
def new_video(emu) -> Callable[..., str]:
    """``new_video(hold=True)`` uploads a tiny video; ``hold`` keeps it UNPARSE until set otherwise."""
    session = requests.Session()

    def _new(hold: bool = True, name: str = "clip.mp4", unique_id: str = "default") -> str:
        resp = session.post(
            f"{emu.v1_url}/upload",
            headers={"Authorization": emu.api_key},
            files={"file": (name, b"\x00\x00\x00\x18ftypmp42" + b"x" * 64, "video/mp4")},
            data={"unique_id": unique_id},
            timeout=30,
        )
        body = resp.json()
        assert body["code"] == "0000", body
        video_no = str(body["data"]["videoNo"])
        if hold:
            emu.control.set_status(video_no, "UNPARSE")
        return video_no

    yield _new
    session.close()
