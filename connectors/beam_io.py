"""Beam I/O at the pipeline's edges: read connector URIs, land rows in Lance.

``ReadSources`` turns source URIs into raw_events rows and dead_letters rows,
``ReadKafkaRanges`` does the same for ``kafka://`` offset ranges;
``LanceWriteConfig(...).create_write_transform()`` lands rows into one table:
append-only tables by parallel writers committed once, keyed tables through a
single writer, since Lance does not serialise concurrent inserts of the same
new keys. Store and connector handles are opened in ``setup``, so the
transforms stay portable to remote runners.
"""
from __future__ import annotations

import dataclasses
import json
import zlib
from datetime import datetime
from typing import Any, Iterable, Iterator

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam import pvalue

from memtape.schemas.records import RawEvent

RAW = "raw_events"
DEAD = "dead_letters"
WRITE_CHUNK_ROWS = 5_000
APPEND_SHARDS = 8  # parallel writers of an append-only table; each writes its own data files
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
        from memtape.connectors.kafka import Consumed, read_range
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


class _AppendShardFn(beam.DoFn):
    """Writes one key shard of an append-only table as new Lance data files (keys already stored are left out); emits
    the fragments' JSON for the single commit, so a run that dies before it leaves the table as it was."""

    def __init__(self, config: LanceWriteConfig) -> None:
        self.config = config

    def setup(self) -> None:
        from memtape.connectors.lance_store import Store

        self.store = Store(self.config.home, self.config.storage_options)

    def process(self, keyed: tuple[int, Iterable[dict]]) -> Iterator[tuple[int, list[str]]]:
        from lance.fragment import write_fragments

        from memtape.connectors.lance_store import WRITE_ERRORS, any_of, cannot_write, last_per_key
        from memtape.schemas import TABLES, conform, key_of

        table, key = self.config.table, key_of(self.config.table)
        dataset = self.store.dataset(table)
        present: set[str] = set()  # keys stored before this run, or written by this shard in an earlier chunk
        landed = 0
        fragments: list[str] = []
        for chunk in _chunks(keyed[1], self.config.batch_rows):
            landed += len(chunk)
            data = last_per_key(conform(table, chunk).cast(TABLES[table]), key)
            keys = [k for k in data.column(key).to_pylist() if k not in present]
            if keys:
                present.update(dataset.to_table(columns=[key], filter=any_of(key, keys)).column(key).to_pylist())
            fresh = data.filter(pc.invert(pc.is_in(data.column(key), pa.array(list(present), pa.string()))))
            if fresh.num_rows:
                try:
                    written_files = write_fragments(fresh, dataset.uri, schema=TABLES[table], storage_options=self.store.storage_options or None)
                except WRITE_ERRORS as exc:
                    raise cannot_write(self.store.home, table, exc) from exc
                fragments += [json.dumps(f.to_json()) for f in written_files]
                present.update(fresh.column(key).to_pylist())
            beam.metrics.Metrics.counter("memtape", f"{NEW_ROWS_PREFIX}{table}").inc(fresh.num_rows)  # 0 too: "nothing new" is news
        beam.metrics.Metrics.counter("memtape", f"landed_{table}").inc(landed)
        yield landed, fragments


class _CommitAppendFn(beam.DoFn):
    """Commits every shard's fragments as one Lance version: the rows of a run appear together or not at all."""

    def __init__(self, config: LanceWriteConfig) -> None:
        self.config = config

    def setup(self) -> None:
        from memtape.connectors.lance_store import Store

        self.store = Store(self.config.home, self.config.storage_options)

    def process(self, shards: list[tuple[int, list[str]]]) -> Iterator[tuple[str, int]]:
        import lance
        from lance.fragment import FragmentMetadata

        from memtape.connectors.lance_store import WRITE_ERRORS, cannot_write

        fragments = [FragmentMetadata.from_json(f) for _, shard in shards for f in shard]
        if fragments:
            dataset = self.store.dataset(self.config.table)
            try:
                lance.LanceDataset.commit(dataset.uri, lance.LanceOperation.Append(fragments), read_version=dataset.version,
                                          storage_options=self.store.storage_options or None)
            except WRITE_ERRORS as exc:
                raise cannot_write(self.store.home, self.config.table, exc) from exc
        yield self.config.table, sum(landed for landed, _ in shards)


class _MergeInsertFn(beam.DoFn):
    """The single writer of a keyed table: folds rows into the stored rows of their keys, then merge-inserts them."""

    def __init__(self, config: LanceWriteConfig) -> None:
        self.config = config

    def setup(self) -> None:
        from memtape.connectors.lance_store import Store
        from memtape.pipelines.merging import fold_of

        self.store = Store(self.config.home, self.config.storage_options)
        self.fold = fold_of(self.config.table)

    def process(self, keyed: tuple[str, Iterable[dict]]) -> Iterator[tuple[str, int]]:
        table, rows = keyed
        landed = inserted = 0
        for chunk in _chunks(rows, self.config.batch_rows):
            if self.fold is not None:
                chunk = self.store.fold_with_stored(table, chunk, self.fold)
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


def _shard_of(row: dict, key: str, shards: int) -> int:
    """A stable shard for the row's key (``hash`` of a str differs between worker processes; CRC-32 does not)."""
    return zlib.crc32(row[key].encode("utf-8", "surrogatepass")) % shards


@dataclasses.dataclass(frozen=True)
class LanceWriteConfig:
    """Where and how rows of one table land in Lance, in the shape of Beam's ``ml.rag`` write configs.

    ``create_write_transform()`` gives the PTransform. How the table is written
    (insert-only, merge or replace) is the table's ``disposition`` in ``memtape.schemas``.
    """

    table: str
    home: str
    storage_options: dict[str, str] = dataclasses.field(default_factory=dict)
    batch_rows: int = WRITE_CHUNK_ROWS
    append_shards: int = APPEND_SHARDS

    def create_write_transform(self) -> beam.PTransform:
        return WriteToLance(self)


class WriteToLance(beam.PTransform):
    """Land rows of one table into Lance; emits (table, rows landed).

    Append-only tables are written by ``append_shards`` writers in parallel,
    each writing new data files for its share of the keys, then committed once:
    a key lives in one shard, so no two writers insert it. Keyed tables go
    through one writer (Lance does not serialise two merge-inserts of the same
    new key), which folds repeated facts with the stored row first.
    """

    def __init__(self, config: LanceWriteConfig) -> None:
        super().__init__()
        self.config = config

    def expand(self, rows: beam.PCollection) -> beam.PCollection:
        from memtape.connectors.lance_store import Store
        from memtape.schemas import Disposition, disposition, key_of

        cfg = self.config
        if disposition(cfg.table) is Disposition.INSERT:
            Store(cfg.home, cfg.storage_options).table(cfg.table)  # made here, not by several writers at once
            return (
                rows
                | "KeyByShard" >> beam.Map(lambda row, key=key_of(cfg.table), n=cfg.append_shards: (_shard_of(row, key, n), row))
                | "GroupByShard" >> beam.GroupByKey()
                | "WriteFragments" >> beam.ParDo(_AppendShardFn(cfg))
                | "AllShards" >> beam.combiners.ToList()
                | "CommitOnce" >> beam.ParDo(_CommitAppendFn(cfg))
            )
        return (
            rows
            | "KeyByTable" >> beam.WithKeys(lambda _row, t=cfg.table: t)
            | "OneWriter" >> beam.GroupByKey()
            | "MergeInsert" >> beam.ParDo(_MergeInsertFn(cfg))
        )
