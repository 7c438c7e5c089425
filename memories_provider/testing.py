"""Helpers for running DAGs locally (the demo, and users' own DAG tests against the emulator)."""

from __future__ import annotations

import os
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

    :raises RuntimeError: naming the DB and ``airflow db migrate`` when the DB has no tables yet.
    """
    require_metadata_db()
    register_dag(dag)
    return dag.test(**kwargs)


def require_metadata_db() -> None:
    """Raise, naming the DB and the command that creates it, when Airflow's metadata DB has no tables.

    ``dag.test()`` on a DB never migrated fails deep in SQLAlchemy ("no such table: dag_bundle"),
    which tells a first-time user nothing.
    """
    import sqlalchemy
    from airflow.models.base import metadata
    from airflow.utils.session import create_session

    with create_session() as session:
        bind = session.get_bind()
        # In the schema Airflow's tables live in ([database] sql_alchemy_schema), not the default one.
        if sqlalchemy.inspect(bind).has_table("dag_run", schema=metadata.schema):
            return
        url = bind.engine.url.render_as_string(hide_password=True)
    raise RuntimeError(
        f"Airflow's metadata DB ({url}) has no tables: run `airflow db migrate` once with this "
        f"AIRFLOW_HOME ({os.environ.get('AIRFLOW_HOME', '~/airflow')}) before dag_test()"
    )
