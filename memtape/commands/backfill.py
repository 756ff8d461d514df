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
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes for the direct runner [default: one per core for deriving memories "
                   "from many new events, one otherwise].")
@click.option("--dask-address", envvar="MEMTAPE_DASK_ADDRESS", default=None,
              help="Dask scheduler for --runner DaskRunner, e.g. tcp://10.0.0.5:8786 "
                   "[env MEMTAPE_DASK_ADDRESS; default: a local cluster per run]. Source paths must be visible to its workers.")
@click.option("--beam-arg", "beam_args", multiple=True, help="Extra Beam pipeline option, e.g. --beam-arg=--dask_npartitions=8")
@click.option("--bootstrap-servers", default=None,
              help="Kafka HOST:PORT for kafka:// ranges [default: [kafka] bootstrap_servers, env MEMTAPE_KAFKA_BOOTSTRAP_SERVERS].")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def command(uris: tuple[str, ...], tenant: str, home: str | None, since, runner: str, workers: int | None,
            dask_address: str | None, beam_args: tuple[str, ...], bootstrap_servers: str | None, fmt: str) -> None:
    """Backfill URIS (slack:PATH, mbox:PATH, maildir:PATH, fhir:PATH, audio:PATH, jsonl:PATH, ...) into the store.

    Re-running is idempotent; without --since each source resumes from its stored cursor.
    kafka://TOPIC?from=N&to=M[&partition=P] lands the tenant's records of offsets [N, M) of a topic.
    """
    from memtape.pipelines.backfill import run_backfill
    from memtape.pipelines.progress import Progress

    if dask_address and runner == "DaskRunner":
        beam_args += (f"--dask_client_address={dask_address}",)
    store = open_store(home)
    with Progress("memtape backfill", counted_here=runner == "DirectRunner" and (workers or 1) == 1):
        result = run_backfill(list(uris), tenant, store, since, runner, workers, beam_args,
                              bootstrap_servers=bootstrap_servers)
    dead = result.landed.get("dead_letters", 0)
    see_dead = dead_letters_command(tenant, home) if dead else None
    if fmt == "json":
        click.echo(json.dumps({"landed": result.landed, "new": result.new, "updated": result.updated,
                               "already_stored": result.already_stored,
                               "dead_letters": dead, "dead_letters_command": see_dead,
                               "seconds": round(result.seconds, 3), "cursors": result.cursors,
                               "other_tenant_records": result.other_tenant_records}, default=str))
        return
    def rows(counts: dict[str, int]) -> str:
        return ", ".join(f"{n:,} {t}" for t, n in sorted(counts.items()) if n)

    parts = [f"new rows: {rows(result.new) or 'none'}"]
    parts += [f"{what}: {text}" for what, text in (("updated", rows(result.updated)),
                                                   ("re-offered rows already stored", rows(result.already_stored))) if text]
    skipped = f" (skipped {result.other_tenant_records} Kafka records of other tenants)" if result.other_tenant_records else ""
    click.echo(f"backfill: {'; '.join(parts)}; {result.seconds:.1f}s{skipped}")
    if see_dead:
        fresh = result.new.get("dead_letters", 0)
        click.echo(f"backfill: {dead} dead letter{'s' if dead != 1 else ''} ({fresh} new): input that could not be read, "
                   f"with the reason; see them with: {see_dead}")


def dead_letters_command(tenant: str, home: str | None) -> str:
    """The ``memtape sql`` command line that lists the tenant's dead letters, newest first."""
    import shlex

    from memtape.connectors.lance_store import sql_literal

    query = (f"SELECT created_time, source_uri, position, stage, error FROM dead_letters "
             f"WHERE tenant = {sql_literal(tenant)} ORDER BY created_time DESC LIMIT 20")
    # Double quotes read best around SQL's single quotes; shlex quoting when the shell would expand something inside.
    quoted = f'"{query}"' if not set(query) & set('"$`\\!') else shlex.quote(query)
    return f"memtape sql {quoted}" + (f" --home {shlex.quote(home)}" if home else "")
