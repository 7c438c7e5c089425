"""Test-wide setup: a throw-away AIRFLOW_HOME with its own SQLite metadata DB.

The environment is set at import time, before any test module imports Airflow,
so every Airflow component in this process (and its subprocesses) uses it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

import pytest

# Storage services (moto S3, sshd, Azurite) shared by the storage and operator tests.
pytest_plugins = ["services"]

REPO_ROOT = Path(__file__).resolve().parent.parent
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="memories-airflow-home-"))

os.environ["AIRFLOW_HOME"] = str(_AIRFLOW_HOME)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "True"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO_ROOT / "dags")
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_AIRFLOW_HOME}/airflow.db"
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "INFO")
if version("apache-airflow").startswith("2."):
    # Airflow 2 checks the executor against the DB when a sensor reschedules; SQLite needs this one.
    os.environ["AIRFLOW__CORE__EXECUTOR"] = "SequentialExecutor"


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated Airflow metadata DB (for ``dag.test()`` and anything touching the ORM)."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
    )
    return _AIRFLOW_HOME


@pytest.fixture
def in_ci() -> bool:
    """True under CI, where a missing service is a failure rather than a skip."""
    return os.environ.get("CI", "").lower() == "true"


@pytest.fixture
def run_dag(airflow_db):  # type: ignore[no-untyped-def]
    """``run_dag(dag, **kwargs)`` runs ``dag.test(**kwargs)`` on Airflow 2 and 3 and returns the DagRun."""

    from memories_provider.testing import dag_test

    def _run(dag, **kwargs):  # type: ignore[no-untyped-def]
        return dag_test(dag, **kwargs)

    return _run
