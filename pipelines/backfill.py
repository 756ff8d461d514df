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
from memtape.connectors.beam_io import DEAD, RAW, ReadSources
from memtape.connectors.lance_store import Store
from memtape.errors import UserError
from memtape.pipelines.cursors import advance_cursors, load_cursors
from memtape.pipelines.derive import _landed, derive, land_tables
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
    derive_memories: bool = True,
    close_open: bool = False,
) -> BackfillResult:
    """Run one bounded backfill of ``uris`` for ``tenant`` into ``store``.

    Raw events land first; then the derived tables are built from what landed.
    Episodes still open stay open (state carried) unless idle by now or ``close_open``.
    """
    check_sources(uris)
    start = time.perf_counter()
    cursors = {u: since for u in uris} if since is not None else load_cursors(store, tenant, uris)
    options = pipeline_options(runner, workers, beam_args)
    with beam.Pipeline(options=options) as p:
        read = p | "ReadSources" >> ReadSources(uris, tenant, cursors)
        land_tables({RAW: read[RAW], DEAD: read[DEAD]}, store)
    landed = _landed(p.result)
    advanced = advance_cursors(store, tenant, uris)
    if derive_memories:
        for table, n in derive(store, tenant, options, "backfill", close_open).landed.items():
            landed[table] = landed.get(table, 0) + n
    return BackfillResult(landed, time.perf_counter() - start, advanced)
