"""Beam I/O at the pipeline's edges: read connector URIs, land rows in Lance.

``ReadSources`` turns source URIs into raw_events rows and dead_letters rows,
``ReadKafkaRanges`` does the same for ``kafka://`` offset ranges;
``WriteToLance`` lands rows into one table through a single writer (a
GroupByKey on the table name), since Lance does not serialise concurrent
inserts of the same new keys. Store and connector handles are opened in
``setup``, so the transforms stay portable to remote runners.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Callable, Iterable, Iterator

import apache_beam as beam
from apache_beam import pvalue

from memtape.schemas.records import RawEvent

RAW = "raw_events"
DEAD = "dead_letters"
WRITE_CHUNK_ROWS = 5_000
NEW_ROWS_PREFIX = "new_"  # counter of rows whose key was not stored yet, beside ``landed_`` (every row offered)


class _ReadSourceFn(beam.DoFn):
    def __init__(self, tenant: str, since: dict[str, datetime | None]) -> None:
        self.tenant = tenant
        self.since = since

    def process(self, uri: str) -> Iterator:
        from memtape.connectors.base import read_source

        read = beam.metrics.Metrics.counter("memtape", "records_read")
        dead = beam.metrics.Metrics.counter("memtape", "dead_letters")
        for record in read_source(uri, self.tenant, self.since.get(uri)):
            if isinstance(record, RawEvent):
                read.inc()
                yield record.to_row()
            else:
                dead.inc()
                yield pvalue.TaggedOutput(DEAD, record.to_row())


class ReadSources(beam.PTransform):
    """Source URIs -> raw_events rows (main output) and dead_letters rows (tag ``dead_letters``)."""

    def __init__(self, uris: list[str], tenant: str, since: dict[str, datetime | None] | None = None) -> None:
        super().__init__()
        self.uris = list(uris)
        self.tenant = tenant
        self.since = dict(since or {})

    def expand(self, pbegin: beam.pvalue.PBegin) -> pvalue.DoOutputsTuple:
        return (
            pbegin
            | "SourceURIs" >> beam.Create(self.uris)
            | "Read" >> beam.ParDo(_ReadSourceFn(self.tenant, self.since)).with_outputs(DEAD, main=RAW)
        )


class _ReadKafkaRangeFn(beam.DoFn):
    def __init__(self, bootstrap_servers: str, client_options: dict[str, str], tenant: str,
                 since: datetime | None, tombstones: Any) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.client_options = client_options
        self.tenant = tenant
        self.since = since
        self.tombstones = tombstones

    def process(self, uri: str) -> Iterator:
        from memtape.connectors.kafka_io import Consumed, read_range
        from memtape.schemas.records import utcnow

        read = beam.metrics.Metrics.counter("memtape", "records_read")
        dead = beam.metrics.Metrics.counter("memtape", "dead_letters")
        foreign = beam.metrics.Metrics.counter("memtape", "other_tenant_records")
        buried = beam.metrics.Metrics.counter("memtape", "tombstoned_records")
        for record in read_range(uri, self.bootstrap_servers, self.tenant, self.client_options):
            if not isinstance(record, Consumed):
                dead.inc()
                yield pvalue.TaggedOutput(DEAD, record.to_row())
                continue
            event = record.event
            if event.tenant != self.tenant:
                foreign.inc()  # left for that tenant's own backfill, whose derive step will see it
                continue
            if self.since is not None and event.event_time is not None and event.event_time < self.since:
                continue
            if self.tombstones is not None and self.tombstones.buries(event):
                buried.inc()  # read before its tenant or source was deleted: a replay must not bring it back
                continue
            event.ingest_path, event.ingest_time = "backfill", utcnow()  # ingested now, as by a direct backfill
            read.inc()
            yield event.to_row()


class ReadKafkaRanges(beam.PTransform):
    """``kafka://TOPIC?from=N&to=M`` ranges -> the tenant's raw_events rows and dead_letters rows, like ``ReadSources``.

    Events keep the ids they were published with; messages that do not decode
    become dead letters with the reason; events ``tombstones`` bury
    (``pipelines.tombstones.Tombstones``) are skipped.
    """

    def __init__(self, uris: list[str], bootstrap_servers: str, tenant: str, since: datetime | None = None,
                 client_options: dict[str, str] | None = None, tombstones: Any = None) -> None:
        super().__init__()
        self.uris = list(uris)
        self.fn = _ReadKafkaRangeFn(bootstrap_servers, dict(client_options or {}), tenant, since, tombstones)

    def expand(self, pbegin: beam.pvalue.PBegin) -> pvalue.DoOutputsTuple:
        return (
            pbegin
            | "Ranges" >> beam.Create(self.uris)
            | "Read" >> beam.ParDo(self.fn).with_outputs(DEAD, main=RAW)
        )


class _ReadTableFn(beam.DoFn):
    def __init__(self, home: str, storage_options: dict[str, str], where: Any) -> None:
        self.home = home
        self.storage_options = storage_options
        self.where = where

    def setup(self) -> None:
        from memtape.connectors.lance_store import Store

        self.store = Store(self.home, self.storage_options)

    def process(self, table: str) -> Iterator[dict]:
        for batch in self.store.dataset(table).to_batches(filter=self.where):
            yield from batch.to_pylist()


class ReadFromLance(beam.PTransform):
    """Rows of one table matching a filter (a pyarrow expression; every row when None), streamed batch by batch."""

    def __init__(self, table: str, home: str, storage_options: dict[str, str] | None = None, where: Any = None) -> None:
        super().__init__()
        self.table = table
        self.home = home
        self.storage_options = dict(storage_options or {})
        self.where = where

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        return (
            pbegin
            | "Table" >> beam.Create([self.table])
            | "Scan" >> beam.ParDo(_ReadTableFn(self.home, self.storage_options, self.where))
            | "Spread" >> beam.Reshuffle()
        )


class _MergeInsertFn(beam.DoFn):
    def __init__(self, home: str, storage_options: dict[str, str], merge: Callable[[dict, dict], dict] | None) -> None:
        self.home = home
        self.storage_options = storage_options
        self.merge = merge

    def setup(self) -> None:
        from memtape.connectors.lance_store import Store

        self.store = Store(self.home, self.storage_options)

    def process(self, keyed: tuple[str, Iterable[dict]]) -> Iterator[tuple[str, int]]:
        table, rows = keyed
        landed = inserted = 0
        for chunk in _chunks(rows, WRITE_CHUNK_ROWS):
            if self.merge is not None:
                chunk = self.store.fold_with_stored(table, chunk, self.merge)
            merged = self.store.merge(table, chunk)
            landed, inserted = landed + merged.offered, inserted + merged.inserted
        beam.metrics.Metrics.counter("memtape", f"landed_{table}").inc(landed)
        beam.metrics.Metrics.counter("memtape", f"{NEW_ROWS_PREFIX}{table}").inc(inserted)
        yield table, landed


def _chunks(rows: Iterable[dict], size: int) -> Iterator[list[dict]]:
    chunk: list[dict] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class WriteToLance(beam.PTransform):
    """Land rows of one table into the store at ``home``, through one writer; emits (table, rows landed).

    With ``merge``, rows sharing a key (in the input or already stored) are
    folded with it first, so repeated facts accumulate instead of overwriting.
    """

    def __init__(self, table: str, home: str, storage_options: dict[str, str] | None = None,
                 merge: Callable[[dict, dict], dict] | None = None) -> None:
        super().__init__()
        self.table = table
        self.home = home
        self.storage_options = dict(storage_options or {})
        self.merge = merge

    def expand(self, rows: beam.PCollection) -> beam.PCollection:
        return (
            rows
            | "KeyByTable" >> beam.WithKeys(lambda _row, t=self.table: t)
            | "OneWriter" >> beam.GroupByKey()
            | "MergeInsert" >> beam.ParDo(_MergeInsertFn(self.home, self.storage_options, self.merge))
        )
