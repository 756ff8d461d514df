"""``memtape publish URI...``: stream source connectors into their Kafka topics.

It parses options, builds kafka-python settings from ``[kafka]`` config and
calls ``memtape.connectors.kafka.Publisher``; it parses no source itself.
"""
from __future__ import annotations

import time
from datetime import datetime, timezone

import click

from memtape.errors import UserError


def _since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 time (e.g. 2024-05-01T09:00:00+02:00)", param_hint="--since") from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


@click.command()
@click.argument("uris", nargs=-1, required=True)
@click.option("--bootstrap-servers", default=None, help="HOST:PORT[,HOST:PORT...] (default: [kafka] bootstrap_servers).")
@click.option("--tenant", default=None, help="Tenant the records belong to (default: config tenant).")
@click.option("--since", default=None, help="Only events at or after this ISO 8601 time (naive means UTC).")
@click.option("--topic-prefix", default=None, help="Topic prefix (default: [kafka] topic_prefix, 'memtape').")
@click.option("--partitions", type=click.IntRange(1, 10_000), default=6, show_default=True,
              help="Partitions of topics this run creates (existing topics keep theirs).")
@click.option("--config", "config_path", default=None, help="memtape.toml to read ([kafka] holds SASL/TLS settings).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def command(uris: tuple[str, ...], bootstrap_servers: str | None, tenant: str | None, since: str | None,
            topic_prefix: str | None, partitions: int, config_path: str | None, quiet: bool) -> None:
    """Publish every record of the source URIs (e.g. maildir:PATH slack:export.zip) to Kafka.

    Records go to <prefix>.raw.<im|email|meeting|health>, keyed by tenant and
    conversation; unparseable input goes to <prefix>.deadletter. Delivery is at
    least once: if the broker loses acknowledged records (the embedded broker
    keeps them in memory only) the sources are read and sent again.
    """
    from tqdm import tqdm

    from memtape.config import load_config
    from memtape.connectors.base import connector_for
    from memtape.connectors.kafka import Publisher, SourceRecords, client_options

    try:
        cfg = load_config(config_path)
    except (OSError, ValueError) as exc:
        raise UserError(str(exc)) from exc
    for uri in uris:
        connector_for(uri)  # unknown scheme or bad URI: one line, before anything is sent
    servers = bootstrap_servers or cfg.kafka.bootstrap_servers
    records = SourceRecords(tuple(uris), tenant or cfg.tenant, _since(since))
    started = time.monotonic()
    with tqdm(desc="publish", unit=" rec", disable=quiet, dynamic_ncols=True) as bar, \
            Publisher(servers, prefix=topic_prefix or cfg.kafka.topic_prefix, partitions=partitions,
                      max_message_bytes=cfg.limits.max_message_bytes, options=client_options(cfg.kafka)) as publisher:
        report = publisher.publish(records, progress=bar.update)
    seconds = time.monotonic() - started
    total = report.events + report.dead_letters
    topics = ", ".join(f"{topic} {count}" for topic, count in sorted(report.by_topic.items()))
    replays = f", {report.replays} replays after broker losses" if report.replays else ""
    click.echo(f"published {report.events} events and {report.dead_letters} dead letters to {servers} "
               f"in {seconds:.1f} s ({total / max(seconds, 1e-9):,.0f} records/s{replays}): {topics}")
