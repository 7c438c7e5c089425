import pendulum
from airflow.providers.common.compat.sdk import BaseOperator


class _Answer(BaseOperator):
    def execute(self, context):
        return 42


def test_run_dag_fixture_runs_a_dag_defined_in_a_test(run_dag):
    from airflow import DAG

    with DAG("smoke", start_date=pendulum.datetime(2024, 1, 1), schedule=None) as dag:
        _Answer(task_id="t")
    assert run_dag(dag).state == "success"


def test_dag_test_on_a_db_never_migrated_says_to_migrate_it(tmp_path):
    # A user's first DAG test, with a fresh AIRFLOW_HOME: the error names the DB and the command,
    # not SQLAlchemy's "no such table".
    import os
    import subprocess
    import sys

    script = (
        "import pendulum\n"
        "from airflow import DAG\n"
        "from airflow.providers.common.compat.sdk import BaseOperator\n"
        "from memories_provider.testing import dag_test\n"
        "with DAG('fresh', start_date=pendulum.datetime(2024, 1, 1), schedule=None) as dag:\n"
        "    BaseOperator(task_id='t')\n"
        "try:\n"
        "    dag_test(dag)\n"
        "except RuntimeError as e:\n"
        "    print('ERR', e)\n"
    )
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path}/airflow.db",
    }
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=240, check=True
    ).stdout
    (line,) = [line for line in out.splitlines() if line.startswith("ERR ")]
    assert f"sqlite:///{tmp_path}/airflow.db" in line
    assert "run `airflow db migrate` once" in line
    assert "dag_run" not in line


def test_the_metadata_db_check_looks_in_airflows_schema(airflow_db, monkeypatch):
    # With [database] sql_alchemy_schema set (Postgres), the tables are in that schema, not the
    # connection's default one: the check must look there, or it refuses a migrated DB. SQLite's
    # always-present "temp" schema stands for a configured schema that holds no tables.
    import pytest
    from airflow.models.base import metadata

    from memories_provider.testing import require_metadata_db

    require_metadata_db()  # the migrated test DB, default schema
    monkeypatch.setattr(metadata, "schema", "temp")
    with pytest.raises(RuntimeError, match="has no tables"):
        require_metadata_db()
