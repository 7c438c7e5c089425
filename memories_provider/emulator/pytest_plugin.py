"""pytest plugin: the ``memories_emulator`` fixtures.

Registered through the ``pytest11`` entry point, so any project that installs this provider can use
the fixtures in its own DAG tests without a conftest. Emulator modules are imported inside the
fixtures so that merely having the plugin installed costs a pytest run nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from memories_provider.emulator.control import EmulatorHandle


@pytest.fixture(scope="session")
def memories_emulator_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorHandle]:
    """One emulator for the whole session (in a background thread); prefer ``memories_emulator``."""
    from memories_provider.emulator.config import fixture_defaults
    from memories_provider.emulator.server import EmulatorThread

    server = EmulatorThread("127.0.0.1", 0, tmp_path_factory.mktemp("memories-emulator"), fixture_defaults())
    with server.serving() as handle:
        yield handle


@pytest.fixture
def memories_emulator(memories_emulator_session: EmulatorHandle) -> EmulatorHandle:
    """The session emulator, reset to the test defaults before the test.

    Test defaults: rate limits off, parse delay 0 (an upload reads as PARSE right after),
    unlimited credits, no indexing cap, no faults, empty store and request log.
    """
    memories_emulator_session.control.reset()
    return memories_emulator_session


@pytest.fixture
def memories_emulator_conn(
    memories_emulator: EmulatorHandle, monkeypatch: pytest.MonkeyPatch
) -> EmulatorHandle:
    """``memories_emulator`` with ``AIRFLOW_CONN_MEMORIES_DEFAULT`` pointing at it for this test."""
    monkeypatch.setenv("AIRFLOW_CONN_MEMORIES_DEFAULT", memories_emulator.conn_uri)
    return memories_emulator


@pytest.fixture
def memories_emulator_process(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., EmulatorHandle]]:
    """Factory: ``start(**kwargs)`` runs an emulator in a child process (``handle.pid`` is its pid).

    Keyword arguments are those of :func:`memories_provider.emulator.emulator_process`
    (``rate_limits``, ``parse_delay``, ``extra_args`` for further CLI flags, ``data_dir``).
    Every child is stopped at the end of the test.
    """
    from memories_provider.emulator.process import emulator_process

    with ExitStack() as stack:

        def start(**kwargs: Any) -> EmulatorHandle:
            kwargs.setdefault("data_dir", tmp_path_factory.mktemp("memories-emulator-proc"))
            return stack.enter_context(emulator_process(**kwargs))

        yield start
