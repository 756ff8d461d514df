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
@click.option("--runner", default="DirectRunner", show_default=True, help="Beam runner, passed straight to Beam.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes for the direct runner.")
@click.option("--beam-arg", "beam_args", multiple=True, help="Extra Beam pipeline option, e.g. --beam-arg=--dask_client_address=...")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def command(uris: tuple[str, ...], tenant: str, home: str | None, since, runner: str, workers: int,
            beam_args: tuple[str, ...], fmt: str) -> None:
    """Backfill URIS (slack:PATH, mbox:PATH, maildir:PATH, fhir:PATH, audio:PATH, jsonl:PATH, ...) into the store.

    Re-running is idempotent; without --since each source resumes from its stored cursor.
    """
    from memtape.pipelines.backfill import run_backfill

    result = run_backfill(list(uris), tenant, open_store(home), since, runner, workers, beam_args)
    if fmt == "json":
        click.echo(json.dumps({"landed": result.landed, "seconds": round(result.seconds, 3),
                               "cursors": result.cursors}, default=str))
    else:
        landed = ", ".join(f"{n} {t}" for t, n in sorted(result.landed.items())) or "nothing new"
        click.echo(f"backfill: landed {landed} in {result.seconds:.1f}s")
