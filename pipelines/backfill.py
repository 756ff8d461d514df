"""Bounded backfill: connector URIs and Kafka offset ranges through the Beam pipeline into the Lance store.

The driver validates the sources, reads each source's cursor, runs the Beam
pipeline on the named runner, then advances the cursors from what landed.
A ``kafka://TOPIC?from=N&to=M`` range names its own offsets, so it keeps no
cursor; its events land with the ids they were published with.
Re-running is idempotent: every table is written by keyed merge_insert, and
the result tells the rows new to each table from those it already held.
Progress goes to the active ``pipelines.progress.Progress``, if the caller opened one.
Unless ``workers`` is given, reading runs in this process (connectors are
cheap) and the derive step in one process per core once the new events are
many enough to pay for the workers' start (``pipelines.runner.default_workers``).
"""
from __future__ import annotations

import dataclasses
import time
from datetime import datetime
from pathlib import Path

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter

from memtape.config import load_config
from memtape.connectors.base import connector_for
from memtape.connectors.beam_io import DEAD, NEW_ROWS_PREFIX, RAW, ReadKafkaRanges, ReadSources
from memtape.connectors.kafka import client_options, parse_kafka_uri
from memtape.connectors.lance_store import Store
from memtape.errors import UserError
from memtape.pipelines.cursors import advance_cursors, load_cursors
from memtape.pipelines import progress
from memtape.pipelines.derive import _landed, derive, land_tables
from memtape.pipelines.maintain import build_indexes
from memtape.pipelines.progress import RECORDS, CountProgress
from memtape.pipelines.runner import DEFAULT_RUNNER, default_workers, pipeline_options
from memtape.pipelines.tombstones import Tombstones
from memtape.schemas import Disposition, disposition

INDEXED_FOR_RECALL = ("memories", "raw_events")

_REMOTE_SCHEMES = frozenset({"imap"})
KAFKA_SCHEME = "kafka"


@dataclasses.dataclass
class BackfillResult:
    landed: dict[str, int]  # rows offered to each table, new or not
    seconds: float
    cursors: dict[str, datetime | None]
    other_tenant_records: int = 0  # events of Kafka ranges that belong to another tenant, left unlanded
    new: dict[str, int] = dataclasses.field(default_factory=dict)  # of ``landed``, rows whose key was not stored yet

    @property
    def already_stored(self) -> dict[str, int]:
        """Rows of insert-only tables re-offered and left as stored (a re-run's raw events, dead letters seen before)."""
        return {t: n for t, n in self._matched().items() if disposition(t) is Disposition.INSERT}

    @property
    def updated(self) -> dict[str, int]:
        """Rows of derived tables whose key was stored, rewritten (a repeated fact gains support)."""
        return {t: n for t, n in self._matched().items() if disposition(t) is not Disposition.INSERT}

    def _matched(self) -> dict[str, int]:
        return {t: n - self.new.get(t, 0) for t, n in self.landed.items() if n > self.new.get(t, 0)}


def is_kafka_range(uri: str) -> bool:
    return uri.partition(":")[0].lower() == KAFKA_SCHEME


def check_sources(uris: list[str]) -> None:
    """Fail fast, in one line, on an unknown scheme or a local path that does not exist."""
    if not uris:
        raise UserError("no source URIs given (e.g. slack:export.zip maildir:~/Mail)")
    for uri in uris:
        if is_kafka_range(uri):
            parse_kafka_uri(uri)
            continue
        connector, path = connector_for(uri)
        if connector.scheme not in _REMOTE_SCHEMES and not Path(path).expanduser().exists():
            raise UserError(f"{uri}: no such file or folder {path!r}")


def run_backfill(
    uris: list[str],
    tenant: str,
    store: Store,
    since: datetime | None = None,
    runner: str = DEFAULT_RUNNER,
    workers: int | None = None,
    beam_args: tuple[str, ...] = (),
    derive_memories: bool = True,
    close_open: bool = False,
    bootstrap_servers: str | None = None,
) -> BackfillResult:
    """Run one bounded backfill of ``uris`` for ``tenant`` into ``store``.

    Raw events land first; then the derived tables are built from what landed.
    Episodes still open stay open (state carried) unless idle by now or ``close_open``.
    Kafka ranges are read from ``bootstrap_servers``, else the ``[kafka]`` config;
    only ``tenant``'s events of a range land, so its derive step sees all of them.
    ``workers`` (direct runner processes) applies to both steps; None picks them per step.
    """
    check_sources(uris)
    start = time.perf_counter()
    ranges = [u for u in uris if is_kafka_range(u)]
    sources = [u for u in uris if not is_kafka_range(u)]
    cursors: dict[str, datetime | None] = {u: since for u in sources} if since is not None else load_cursors(store, tenant, sources)
    progress.stage("reading sources")
    with beam.Pipeline(options=pipeline_options(runner, workers or 1, beam_args)) as p:
        reads = []
        if sources:
            reads.append(p | "ReadSources" >> ReadSources(sources, tenant, cursors))
        if ranges:
            kafka = load_config().kafka
            reads.append(p | "ReadKafkaRanges" >> ReadKafkaRanges(
                ranges, bootstrap_servers or kafka.bootstrap_servers, tenant, since, client_options(kafka),
                Tombstones.load(store, tenant)))
        raw = tuple(r[RAW] for r in reads) | f"All_{RAW}" >> beam.Flatten() | "ProgressRecords" >> CountProgress(RECORDS)
        land_tables({RAW: raw, DEAD: tuple(r[DEAD] for r in reads) | f"All_{DEAD}" >> beam.Flatten()}, store)
    landed, new = _landed(p.result), _landed(p.result, NEW_ROWS_PREFIX)
    foreign = _counter(p.result, "other_tenant_records")
    advanced = advance_cursors(store, tenant, sources) if sources else {}
    if derive_memories:
        derive_workers = workers or default_workers(new.get(RAW, 0))
        progress.stage("deriving memories", in_workers=derive_workers > 1)
        derived = derive(store, tenant, pipeline_options(runner, derive_workers, beam_args), "backfill", close_open)
        for counts, more in ((landed, derived.landed), (new, derived.new)):
            for table, n in more.items():
                counts[table] = counts.get(table, 0) + n
        for table in INDEXED_FOR_RECALL:  # recall only reads: the indexes it searches through are built here and by maintain
            build_indexes(store, table, refresh=False)
    return BackfillResult(landed, time.perf_counter() - start, advanced, foreign, new)


def _counter(result: beam.runners.runner.PipelineResult, name: str) -> int:
    counters = result.metrics().query(MetricsFilter().with_namespace("memtape").with_name(name))["counters"]
    return sum(c.committed for c in counters)
