"""``memtape delete``: remove a tenant's raw data and everything derived from it, from disk too."""
from __future__ import annotations

import json
from datetime import timedelta

import click

from memtape.commands._common import home_option, open_store


@click.command()
@click.option("--tenant", required=True, help="Tenant whose data is deleted (required: never implied).")
@click.option("--source-id", "source_ids", multiple=True, help="A raw event's source id (repeatable).")
@click.option("--source", "source_uri", default=None, help="Every event read from this source URI.")
@click.option("--all", "everything", is_flag=True, help="Every row of the tenant, in every table.")
@click.option("--bootstrap-servers", envvar="MEMTAPE_KAFKA_BOOTSTRAP_SERVERS", default=None,
              help="Kafka HOST:PORT: also say which raw topics may still hold the deleted records, and until when "
                   "[env MEMTAPE_KAFKA_BOOTSTRAP_SERVERS].")
@home_option
def command(tenant: str, source_ids: tuple[str, ...], source_uri: str | None, everything: bool,
            bootstrap_servers: str | None, home: str | None) -> None:
    """Delete raw events and their utterances, episodes, triples, memories, embeddings, state and index entries.

    Old Lance versions are then removed, so the deleted bytes are gone from the store directory. --all and
    --source leave a tombstone, so a Kafka replay of the records read before the deletion does not land them again.
    """
    from memtape.pipelines.delete import delete_events, select_events

    chosen = sum(bool(x) for x in (source_ids, source_uri, everything))
    if chosen != 1:
        raise click.UsageError("give exactly one of --source-id, --source, --all")
    store = open_store(home)
    ids = select_events(store, tenant, list(source_ids), source_uri, everything)
    report = delete_events(store, tenant, ids, source_uri, everything)
    out = {"tenant": tenant, "events": len(ids), "deleted": report.deleted,
           "tombstone": {"source_uri": source_uri, "deleted_time": report.deleted_time.isoformat()}
           if everything or source_uri else None}
    if bootstrap_servers:
        out["kafka"] = _topics_holding(bootstrap_servers, report.source_kinds, report.deleted_time)
    click.echo(json.dumps(out))


def _topics_holding(bootstrap_servers: str, kinds: list[str], deleted_time) -> list[dict]:
    """The raw topics of the deleted events' kinds that exist, with the time their retention lets those records go."""
    from memtape.config import load_config
    from memtape.connectors.kafka import client_options, raw_topic, topic_retention

    kafka = load_config().kafka
    topics = [raw_topic(kind, kafka.topic_prefix) for kind in kinds]
    retention = topic_retention(bootstrap_servers, topics, client_options(kafka))
    return [{"topic": topic, "retention_ms": ms,
             "until": None if ms is None or ms < 0 else (deleted_time + timedelta(milliseconds=ms)).isoformat(),
             "note": "kept forever" if ms is not None and ms < 0 else
                     "the broker does not report retention.ms" if ms is None else "records expire by then"}
            for topic, ms in retention.items()]
