"""Services under the distributed deployment: Postgres (metadata DB) and Redis (Celery broker),
one of each per session, on loopback ports of their own. Missing binaries skip locally and fail
under CI (``.ci/install-services.sh`` installs them)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import pytest
from airflow_stack import (
    Postgres,
    Redis,
    ServiceMissing,
    find_postgres,
    find_redis,
    postgres_server,
    redis_server,
)

_IN_CI = os.environ.get("CI", "").lower() == "true"


def _required(find: Callable[[], Any]) -> Any:
    try:
        return find()
    except ServiceMissing as err:
        _missing(str(err))


def _missing(reason: str) -> NoReturn:
    if _IN_CI:
        pytest.fail(f"{reason} (required in CI)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A throw-away Postgres with an ``airflow`` database (trust auth, loopback only)."""
    with postgres_server(_required(find_postgres)) as server:
        yield server


@pytest.fixture(scope="session")
def redis() -> Iterator[Redis]:
    """A throw-away Redis (no persistence, loopback only)."""
    with redis_server(_required(find_redis)) as server:
        yield server
