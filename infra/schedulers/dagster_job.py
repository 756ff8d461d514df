"""Dagster jobs and schedules that call ``memtape backfill`` and ``memtape maintain``.

Load with ``dagster dev -f infra/schedulers/dagster_job.py`` (Dagster 1.10+). Each
op runs the command in a subprocess, so Beam and the models stay out of
Dagster's process; incrementality and idempotence live in memtape. Backfill ops
share the ``memtape-store`` pool: set its limit to 1
(``dagster instance concurrency set memtape-store 1``) for one writer at a time.
Not imported by memtape's tests (Dagster is not a dependency).
"""
from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import dagster as dg

MEMTAPE = "/opt/memtape/.venv/bin/memtape"
ENV = {**os.environ, "MEMTAPE_HOME": "/srv/memtape/data", "MEMTAPE_CONFIG": "/etc/memtape/memtape.toml"}


class BackfillConfig(dg.Config):
    tenant: str
    uris: list[str]


def _memtape(context: dg.OpExecutionContext, *args: str) -> Any:
    """Run one memtape command; its JSON result becomes the op's output and log line."""
    done = subprocess.run([MEMTAPE, *args, "--format", "json"], env=ENV, capture_output=True, text=True)
    if done.returncode != 0:
        raise dg.Failure(description=done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "memtape failed")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    context.log.info(json.dumps(result))
    return result


@dg.op(pool="memtape-store", retry_policy=dg.RetryPolicy(max_retries=2, delay=120))
def memtape_backfill(context: dg.OpExecutionContext, config: BackfillConfig) -> dict:
    return _memtape(context, "backfill", *config.uris, "--tenant", config.tenant, "--runner", "DirectRunner")


@dg.op
def memtape_maintain(context: dg.OpExecutionContext) -> list:
    return _memtape(context, "maintain", "--keep-versions-for", "3600")


@dg.job
def backfill_job() -> None:
    memtape_backfill()


@dg.job
def maintain_job() -> None:
    memtape_maintain()


def _backfill_schedule(tenant: str, uris: list[str]) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name=f"memtape_backfill_{tenant}", job=backfill_job, cron_schedule="*/15 * * * *",
        run_config={"ops": {"memtape_backfill": {"config": {"tenant": tenant, "uris": uris}}}},
    )


defs = dg.Definitions(
    jobs=[backfill_job, maintain_job],
    schedules=[
        _backfill_schedule("alice", ["maildir:/srv/mail/alice", "slack:/srv/exports/alice.zip"]),
        _backfill_schedule("bob", ["mbox:/srv/mail/bob.mbox"]),
        dg.ScheduleDefinition(name="memtape_maintain_nightly", job=maintain_job, cron_schedule="17 3 * * *"),
    ],
)
