"""Helpers for running DAGs locally (the demo, and users' own DAG tests against the emulator)."""

from __future__ import annotations

from typing import Any


def register_dag(dag: Any) -> None:
    """Write ``dag`` to the metadata DB as the dag processor would (Airflow 3's ``dag.test()`` needs it).

    A no-op on Airflow 2, whose ``dag.test()`` runs DAG objects directly.
    """
    try:
        from airflow.dag_processing.bundles.manager import DagBundlesManager
        from airflow.dag_processing.collection import update_dag_parsing_results_in_db
        from airflow.serialization.serialized_objects import LazyDeserializedDAG  # type: ignore[attr-defined]  # Airflow 3 only
    except ImportError:
        return
    from airflow.utils.session import create_session

    DagBundlesManager().sync_bundles_to_db()
    with create_session() as session:
        update_dag_parsing_results_in_db(
            "dags-folder", None, [LazyDeserializedDAG.from_dag(dag)], {}, None, set(), session=session
        )


def dag_test(dag: Any, **kwargs: Any) -> Any:
    """``dag.test(**kwargs)`` on Airflow 2.11 and 3.x (deferred tasks run their triggers inline).

    The metadata DB must exist (``airflow db migrate``). Returns the finished DagRun.
    """
    register_dag(dag)
    return dag.test(**kwargs)
