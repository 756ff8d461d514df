"""Airflow DAGs that call ``memtape backfill`` and ``memtape maintain``: copy into the DAGs folder.

Airflow 2.4+ and 3.x. The tasks only run the commands; incrementality lives in
memtape (each source's cursor in the store), so a retried or overlapping run
lands nothing twice. Not imported by memtape's tests (Airflow is not a dependency).
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

try:  # Airflow 3
    from airflow.providers.standard.operators.bash import BashOperator
    from airflow.sdk import DAG
except ImportError:  # Airflow 2
    from airflow import DAG
    from airflow.operators.bash import BashOperator

MEMTAPE = "/opt/memtape/.venv/bin/memtape"
ENV = {"MEMTAPE_HOME": "/srv/memtape/data", "MEMTAPE_CONFIG": "/etc/memtape/memtape.toml"}
SOURCES = {  # tenant -> source URIs
    "alice": ["maildir:/srv/mail/alice", "slack:/srv/exports/alice.zip"],
    "bob": ["mbox:/srv/mail/bob.mbox"],
}
START = datetime(2024, 1, 1, tzinfo=timezone.utc)

with DAG(
    dag_id="memtape_backfill",
    schedule="*/15 * * * *",
    start_date=START,
    catchup=False,  # the cursor already covers missed intervals
    max_active_runs=1,
    max_active_tasks=1,  # one backfill writes the store at a time
    default_args={"retries": 2, "retry_delay": timedelta(minutes=2)},
    tags=["memtape"],
):
    for tenant, uris in SOURCES.items():
        BashOperator(
            task_id=f"backfill_{tenant}",
            bash_command=f"{MEMTAPE} backfill {' '.join(uris)} --tenant {tenant} --runner DirectRunner --format json",
            env=ENV,
            append_env=True,
        )

with DAG(
    dag_id="memtape_maintain",
    schedule="17 3 * * *",
    start_date=START,
    catchup=False,
    max_active_runs=1,
    tags=["memtape"],
):
    BashOperator(
        task_id="maintain",
        bash_command=f"{MEMTAPE} maintain --keep-versions-for 3600 --format json",
        env=ENV,
        append_env=True,
    )
