"""pytest plugin: the ``memories_emulator`` fixture (and ``memories_emulator_process`` for a child process).

Registered through the ``pytest11`` entry point, so any project that installs this provider can use
the fixtures in its own DAG tests without a conftest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack
from typing import Any

import pytest

from memories_provider.emulator.config import fixture_defaults
from memories_provider.emulator.control import EmulatorHandle
from memories_provider.emulator.process import emulator_process
from memories_provider.emulator.server import EmulatorThread


@pytest.fixture(scope="session")
def memories_emulator_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorHandle]:
    """One emulator for the whole session (in a background thread); prefer ``memories_emulator``."""
    server = EmulatorThread("127.0.0.1", 0, tmp_path_factory.mktemp("memories-emulator"), fixture_defaults())
    handle = server.start()
    try:
        yield handle
    finally:
        handle.control.close()
        server.stop()


@pytest.fixture
def memories_emulator(memories_emulator_session: EmulatorHandle) -> EmulatorHandle:
    """The session emulator, reset to the test defaults before the test.

    Test defaults: rate limits off, parse delay 0 (an upload reads as PARSE right after),
    unlimited credits, no indexing cap, no faults, empty store and request log.
    """
    memories_emulator_session.control.reset()
    return memories_emulator_session


@pytest.fixture
def memories_emulator_process(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., EmulatorHandle]]:
    """Factory: ``start(**kwargs)`` runs an emulator in a child process (``handle.pid`` is its pid).

    Keyword arguments are those of :func:`memories_provider.emulator.emulator_process`.
    Every child is stopped at the end of the test.
    """
    with ExitStack() as stack:

        def start(**kwargs: Any) -> EmulatorHandle:
            kwargs.setdefault("data_dir", tmp_path_factory.mktemp("memories-emulator-proc"))
            cm: AbstractContextManager[EmulatorHandle] = emulator_process(**kwargs)
            return stack.enter_context(cm)

        yield start
