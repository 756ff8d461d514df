"""``memtape backfill``: a bounded Beam run from source URIs into the store."""
from __future__ import annotations

import json

import click

from memtape.commands._common import home_option, open_store, parse_time, tenant_option


@click.command(context_settings={"ignore_unknown_options": False})
@click.argument("uris", nargs=-1, required=True)
@tenant_option
@home_option
@click.option("--since", callback=parse_time, default=None,
              help="Only records at or after this ISO time (default: each source's stored cursor).")
@click.option("--runner", default="DirectRunner", show_default=True,
              help="Beam runner, passed straight to Beam; DaskRunner runs on a dask.distributed cluster (batch only).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes for the direct runner.")
@click.option("--dask-address", envvar="MEMTAPE_DASK_ADDRESS", default=None,
              help="Dask scheduler for --runner DaskRunner, e.g. tcp://10.0.0.5:8786 "
                   "[env MEMTAPE_DASK_ADDRESS; default: a local cluster per run]. Source paths must be visible to its workers.")
@click.option("--beam-arg", "beam_args", multiple=True, help="Extra Beam pipeline option, e.g. --beam-arg=--dask_npartitions=8")
@click.option("--bootstrap-servers", default=None,
              help="Kafka HOST:PORT for kafka:// ranges [default: [kafka] bootstrap_servers, env MEMTAPE_KAFKA_BOOTSTRAP_SERVERS].")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def command(uris: tuple[str, ...], tenant: str, home: str | None, since, runner: str, workers: int,
            dask_address: str | None, beam_args: tuple[str, ...], bootstrap_servers: str | None, fmt: str) -> None:
    """Backfill URIS (slack:PATH, mbox:PATH, maildir:PATH, fhir:PATH, audio:PATH, jsonl:PATH, ...) into the store.

    Re-running is idempotent; without --since each source resumes from its stored cursor.
    kafka://TOPIC?from=N&to=M[&partition=P] lands the tenant's records of offsets [N, M) of a topic.
    """
    from memtape.pipelines.backfill import run_backfill

    if dask_address and runner == "DaskRunner":
        beam_args += (f"--dask_client_address={dask_address}",)
    result = run_backfill(list(uris), tenant, open_store(home), since, runner, workers, beam_args,
                          bootstrap_servers=bootstrap_servers)
    if fmt == "json":
        click.echo(json.dumps({"landed": result.landed, "seconds": round(result.seconds, 3),
                               "cursors": result.cursors, "other_tenant_records": result.other_tenant_records},
                              default=str))
    else:
        landed = ", ".join(f"{n} {t}" for t, n in sorted(result.landed.items())) or "nothing new"
        skipped = f" (skipped {result.other_tenant_records} Kafka records of other tenants)" if result.other_tenant_records else ""
        click.echo(f"backfill: landed {landed} in {result.seconds:.1f}s{skipped}")
