"""The e2e canary: one asset downloaded twice to the test sshd, the SFTP password a canary.

``to_sftp_conn`` takes the password from the ``canary_sftp`` connection (``destination_conn_id``);
``to_sftp_uri`` has it inside the destination URI (rendered from the same connection), the
issue's ``sftp://alice:HUNTER2pw@host/x.mp4``. The key file authenticates in both; the password
is only there to be looked for afterwards. ``to_sftp_conn`` runs first and meets the injected 401:
a key refusal fails it at once, its retry unused; its error text, echoing the key, is looked
through too. ``to_sftp_uri`` runs after it whatever its end (``all_done``), meets a 500 that its
client retries, and succeeds: its XCom holds the URI, password masked.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from airflow.providers.common.compat.sdk import DAG

from memories_provider.operators.download import MemoriesDownloadOperator

KEY_FILE = os.environ.get("CANARY_SFTP_KEY_FILE", "")
CONN = "conn.canary_sftp"
SFTP = f"sftp://{{{{ {CONN}.login }}}}:{{{{ {CONN}.password }}}}@127.0.0.1:{{{{ {CONN}.port }}}}"

with DAG(
    dag_id="memories_canary_sftp",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    default_args={"retries": 1, "retry_delay": timedelta(seconds=1)},
) as dag:
    to_sftp_conn = MemoriesDownloadOperator(
        task_id="to_sftp_conn",
        asset_id="{{ dag_run.conf['asset_id'] }}",
        destination="sftp://127.0.0.1:{{ conn.canary_sftp.port }}{{ dag_run.conf['folder'] }}conn/",
        destination_conn_id="canary_sftp",
    )
    to_sftp_uri = MemoriesDownloadOperator(
        task_id="to_sftp_uri",
        asset_id="{{ dag_run.conf['asset_id'] }}",
        destination=SFTP + "{{ dag_run.conf['folder'] }}uri/",
        transport_params={"connect_kwargs": {"key_filename": KEY_FILE, "look_for_keys": False}},
        trigger_rule="all_done",
    )
    to_sftp_conn >> to_sftp_uri
