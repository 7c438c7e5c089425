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
