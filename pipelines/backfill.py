"""Bounded backfill: connector URIs and Kafka offset ranges through the Beam pipeline into the Lance store.

The driver validates the sources, reads each source's cursor, runs the Beam
pipeline on the named runner, then advances the cursors from what landed.
A ``kafka://TOPIC?from=N&to=M`` range names its own offsets, so it keeps no
cursor; its events land with the ids they were published with.
Re-running is idempotent: every table is written by keyed merge_insert.
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
from memtape.connectors.beam_io import DEAD, RAW, ReadKafkaRanges, ReadSources
from memtape.connectors.kafka_io import client_options, parse_kafka_uri
from memtape.pipelines.tombstones import Tombstones
from memtape.connectors.lance_store import Store
from memtape.errors import UserError
from memtape.pipelines.cursors import advance_cursors, load_cursors
from memtape.pipelines.derive import _landed, derive, land_tables
from memtape.pipelines.runner import DEFAULT_RUNNER, pipeline_options

_REMOTE_SCHEMES = frozenset({"imap"})
KAFKA_SCHEME = "kafka"


@dataclasses.dataclass
class BackfillResult:
    landed: dict[str, int]
    seconds: float
    cursors: dict[str, datetime | None]
    other_tenant_records: int = 0  # events of Kafka ranges that belong to another tenant, left unlanded


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
    workers: int = 1,
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
    """
    check_sources(uris)
    start = time.perf_counter()
    ranges = [u for u in uris if is_kafka_range(u)]
    sources = [u for u in uris if not is_kafka_range(u)]
    cursors = {u: since for u in sources} if since is not None else load_cursors(store, tenant, sources)
    options = pipeline_options(runner, workers, beam_args)
    with beam.Pipeline(options=options) as p:
        reads = []
        if sources:
            reads.append(p | "ReadSources" >> ReadSources(sources, tenant, cursors))
        if ranges:
            kafka = load_config().kafka
            reads.append(p | "ReadKafkaRanges" >> ReadKafkaRanges(
                ranges, bootstrap_servers or kafka.bootstrap_servers, tenant, since, client_options(kafka),
                Tombstones.load(store, tenant)))
        land_tables({t: tuple(r[t] for r in reads) | f"All_{t}" >> beam.Flatten() for t in (RAW, DEAD)}, store)
    landed = _landed(p.result)
    foreign = _counter(p.result, "other_tenant_records")
    advanced = advance_cursors(store, tenant, sources) if sources else {}
    if derive_memories:
        for table, n in derive(store, tenant, options, "backfill", close_open).landed.items():
            landed[table] = landed.get(table, 0) + n
    return BackfillResult(landed, time.perf_counter() - start, advanced, foreign)


def _counter(result: beam.runners.runner.PipelineResult, name: str) -> int:
    counters = result.metrics().query(MetricsFilter().with_namespace("memtape").with_name(name))["counters"]
    return sum(c.committed for c in counters)
