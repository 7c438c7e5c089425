"""Airflow connections the tests point at a server: the emulator, or any local stand-in."""

from __future__ import annotations

import json
from typing import Any

import pytest


def emulator_conn(emulator: Any, *, password: str | None = None, **extra: Any) -> str:
    """``emulator``'s memories connection in Airflow's JSON form, with these ``extra`` settings added
    (and ``password`` as the API key, if given)."""
    conn = json.loads(emulator.conn_json)
    if isinstance(conn.get("extra"), str):
        conn["extra"] = json.loads(conn["extra"])
    conn.setdefault("extra", {}).update(extra)
    if password is not None:
        conn["password"] = password
    return json.dumps(conn)


def use_emulator_conn(
    monkeypatch: pytest.MonkeyPatch,
    emulator: Any,
    conn_id: str = "memories_default",
    *,
    password: str | None = None,
    **extra: Any,
) -> None:
    """Make the connection ``conn_id`` the emulator's, with :func:`emulator_conn`'s changes."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", emulator_conn(emulator, password=password, **extra))


def point_memories_default_at(
    monkeypatch: pytest.MonkeyPatch, url: str, *, key: str = "test-key", **extra: Any
) -> None:
    """Make the ``memories_default`` connection send both API versions to ``url`` with ``key``."""
    conn = {"conn_type": "memories", "password": key, "host": url, "extra": {"v2_host": url, **extra}}
    monkeypatch.setenv("AIRFLOW_CONN_MEMORIES_DEFAULT", json.dumps(conn))
