"""``memtape topics``: list topics, partitions, end offsets and consumer-group lag.

It calls ``memtape.connectors.kafka.describe_topics`` and prints a table;
it never writes to the broker.
"""
from __future__ import annotations

import json

import click

from memtape.errors import UserError


@click.command()
@click.option("--bootstrap-servers", default=None, help="HOST:PORT[,HOST:PORT...] (default: [kafka] bootstrap_servers).")
@click.option("--config", "config_path", default=None, help="memtape.toml to read ([kafka] holds SASL/TLS settings).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def command(bootstrap_servers: str | None, config_path: str | None, fmt: str) -> None:
    """Show every topic's partitions with end offsets, and each consumer group's committed offset and lag.

    End offsets come from the broker's fetch high watermark, which is exact
    on Tansu (its ListOffsets answer is not).
    """
    from memtape.config import load_config
    from memtape.connectors.kafka import client_options, describe_topics

    try:
        cfg = load_config(config_path)
    except (OSError, ValueError) as exc:
        raise UserError(str(exc)) from exc
    servers = bootstrap_servers or cfg.kafka.bootstrap_servers
    parts = describe_topics(servers, client_options(cfg.kafka))
    if fmt == "json":
        click.echo(json.dumps([{"topic": p.topic, "partition": p.partition, "end_offset": p.end_offset,
                                "groups": {g: {"committed": c, "lag": p.lag(g)} for g, c in p.committed.items()}}
                               for p in parts], indent=2))
        return
    if not parts:
        click.echo(f"no topics on {servers}")
        return
    click.echo(f"{'TOPIC':<32} {'PART':>4} {'END':>10}  {'GROUP':<24} {'COMMITTED':>10} {'LAG':>8}")
    for p in parts:
        rows = sorted(p.committed.items()) or [("-", None)]
        for group, committed in rows:
            lag = p.lag(group)
            click.echo(f"{p.topic:<32} {p.partition:>4} {p.end_offset:>10}  {group:<24} "
                       f"{'-' if committed is None else committed:>10} {'-' if lag is None else lag:>8}")
