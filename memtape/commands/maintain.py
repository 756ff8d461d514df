"""``memtape maintain``: compaction, version cleanup and index builds, once or on a schedule."""
from __future__ import annotations

import json
import time
from datetime import timedelta

import click

from memtape.commands._common import home_option, open_store


@click.command()
@home_option
@click.option("--keep-versions-for", "keep_seconds", type=click.IntRange(min=0), default=3600, show_default=True,
              help="Seconds of old Lance versions to keep (readers in flight use them).")
@click.option("--no-index", is_flag=True, help="Skip index builds.")
@click.option("--interval", type=click.IntRange(min=1), default=None,
              help="Run forever, every INTERVAL seconds (for a scheduler-less deployment).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def command(home: str | None, keep_seconds: int, no_index: bool, interval: int | None, fmt: str) -> None:
    """Compact fragments, remove old versions and (re)build the vector, full-text and scalar indexes.

    Safe to run beside `memtape stream`: a round that races a writer is retried on the next one.
    """
    from memtape.pipelines.maintain import maintain

    store = open_store(home, create=False)
    while True:
        reports = maintain(store, timedelta(seconds=keep_seconds), indexes=not no_index)
        if fmt == "json":
            click.echo(json.dumps([r.__dict__ for r in reports]))
        else:
            for r in reports:
                status = f"error: {r.error}" if r.error else (
                    f"fragments {r.fragments_before}->{r.fragments_after}, "
                    f"{r.versions_removed} old versions removed, indexes: {', '.join(r.indexes) or '-'}")
                click.echo(f"{r.table}: {status}")
        if interval is None:
            return
        time.sleep(interval)
