"""Fixtures for client tests: clients pointed at the emulator with a fast retry policy."""

from __future__ import annotations

import os

import pytest

from memories_provider.client import AsyncMemoriesClient, MemoriesClient, RetryPolicy

#: Tiny delays so retry tests run fast but still go through the real retry loop.
FAST_RETRY = RetryPolicy(
    max_retries=3, initial_delay=0.01, max_delay=0.05, jitter=False, documented_limits=False
)


@pytest.fixture
def make_video(tmp_path):
    """Factory: write a small video-named file of random bytes; returns ``(path, bytes)``."""

    def make(name: str = "clip.mp4", size: int = 200_000) -> tuple[str, bytes]:
        data = os.urandom(size)
        path = tmp_path / name
        path.write_bytes(data)
        return str(path), data

    return make


def _emulator_settings(emulator):
    """The client settings of the ``client`` and ``aclient`` fixtures: the emulator, 10 s, fast retries."""
    return {"base_url": emulator.v1_url, "v2_base_url": emulator.v2_url, "timeout": 10, "retry": FAST_RETRY}


@pytest.fixture
def client(memories_emulator):
    """A sync client of the emulator (closed after the test)."""
    with MemoriesClient(memories_emulator.api_key, **_emulator_settings(memories_emulator)) as c:
        yield c


@pytest.fixture
async def aclient(memories_emulator):
    """An async client of the emulator (closed after the test)."""
    async with AsyncMemoriesClient(memories_emulator.api_key, **_emulator_settings(memories_emulator)) as c:
        yield c


@pytest.fixture
def unused_port() -> int:
    """A local TCP port with nothing listening on it (connections are refused)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
