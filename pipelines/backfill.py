"""Bounded backfill: connector URIs through the Beam pipeline into the Lance store.

The driver validates the sources, reads each source's cursor, runs the Beam
pipeline on the named runner, then advances the cursors from what landed.
Re-running is idempotent: every table is written by keyed merge_insert.
"""
from __future__ import annotations

import dataclasses
import time
from datetime import datetime
from pathlib import Path

import apache_beam as beam

from memtape.connectors.base import connector_for
from memtape.connectors.beam_io import DEAD, RAW, ReadSources, WriteToLance
from memtape.connectors.lance_store import Store
from memtape.errors import UserError
from memtape.pipelines.cursors import advance_cursors, load_cursors
from memtape.pipelines.runner import DEFAULT_RUNNER, pipeline_options

_REMOTE_SCHEMES = frozenset({"imap"})


@dataclasses.dataclass
class BackfillResult:
    landed: dict[str, int]
    seconds: float
    cursors: dict[str, datetime | None]


def check_sources(uris: list[str]) -> None:
    """Fail fast, in one line, on an unknown scheme or a local path that does not exist."""
    if not uris:
        raise UserError("no source URIs given (e.g. slack:export.zip maildir:~/Mail)")
    for uri in uris:
        connector, path = connector_for(uri)
        if connector.scheme not in _REMOTE_SCHEMES and not Path(path).expanduser().exists():
            raise UserError(f"{uri}: no such file or folder {path!r}")


def run_backfill(
    uris: list[str],
    tenant: str,
    store: Store,
    since: datetime | None = None,
    runner: str = DEFAULT_RUNNER,
    workers: int = 1,
    beam_args: tuple[str, ...] = (),
) -> BackfillResult:
    """Run one bounded backfill of ``uris`` for ``tenant`` into ``store``."""
    check_sources(uris)
    start = time.perf_counter()
    cursors = {u: since for u in uris} if since is not None else load_cursors(store, tenant, uris)
    landed: dict[str, int] = {}
    with beam.Pipeline(options=pipeline_options(runner, workers, beam_args)) as p:
        read = p | "ReadSources" >> ReadSources(uris, tenant, cursors)
        for table, rows in ((RAW, read[RAW]), (DEAD, read[DEAD])):
            rows | f"Write_{table}" >> WriteToLance(table, store.home, store.storage_options)
    result = p.result
    for counter in result.metrics().query()["counters"]:
        name = counter.key.metric.name
        if name.startswith("landed_"):
            landed[name.removeprefix("landed_")] = landed.get(name.removeprefix("landed_"), 0) + counter.committed
    return BackfillResult(landed, time.perf_counter() - start, advance_cursors(store, tenant, uris))
