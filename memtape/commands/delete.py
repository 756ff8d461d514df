"""``memtape delete``: remove a tenant's raw data and everything derived from it, from disk too."""
from __future__ import annotations

import json

import click

from memtape.commands._common import home_option, open_store


@click.command()
@click.option("--tenant", required=True, help="Tenant whose data is deleted (required: never implied).")
@click.option("--source-id", "source_ids", multiple=True, help="A raw event's source id (repeatable).")
@click.option("--source", "source_uri", default=None, help="Every event read from this source URI.")
@click.option("--all", "everything", is_flag=True, help="Every event of the tenant.")
@home_option
def command(tenant: str, source_ids: tuple[str, ...], source_uri: str | None, everything: bool, home: str | None) -> None:
    """Delete raw events and their utterances, episodes, triples, memories, embeddings and index entries.

    Old Lance versions are then removed, so the deleted bytes are gone from the store directory.
    """
    from memtape.pipelines.delete import delete_events, select_events

    chosen = sum(bool(x) for x in (source_ids, source_uri, everything))
    if chosen != 1:
        raise click.UsageError("give exactly one of --source-id, --source, --all")
    store = open_store(home)
    ids = select_events(store, tenant, list(source_ids), source_uri, everything)
    report = delete_events(store, tenant, ids, source_uri)
    click.echo(json.dumps({"tenant": tenant, "events": len(ids), "deleted": report.deleted}))
