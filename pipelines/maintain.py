"""Store maintenance: compaction, old-version cleanup and index (re)builds.

Safe beside the streaming job: Lance commits are optimistic, so a compaction
that races a writer's commit fails cleanly and is retried on the next round
instead of losing either side. Maintenance never changes what rows a table holds.
"""
from __future__ import annotations

import dataclasses
import logging
from datetime import timedelta

from lancedb.index import FTS, BTree, IvfHnswSq

from memtape.connectors.lance_store import Store
from memtape.schemas import TABLES

log = logging.getLogger(__name__)

#: Below this many memories an exact (flat) vector scan is faster than any ANN index.
VECTOR_INDEX_MIN_ROWS = 10_000
#: BTree indexes: per-tenant and per-conversation filters, and recall's lookups by memory and raw event id.
# raw_events.ingest_time: recall's working memory reads what landed since its last read by it.
SCALAR_INDEXES = {"raw_events": ["tenant", "conversation_id", "event_id", "ingest_time"], "memories": ["tenant", "memory_id"],
                  "triples": ["tenant"], "entities": ["tenant"], "episodes": ["tenant"]}
FTS_COLUMNS = {"memories": "text"}
VECTOR_COLUMNS = {"memories": "embedding"}
#: On 100,000 benchmark memories (benchmarks/bench_recall.py) IVF-HNSW-SQ's top 100 shared 96% with an
#: exact search at ~12 ms CPU; IVF-PQ's shared 40% at the same CPU, 80% with refine_factor 5 at 1.5-2.5x.
VECTOR_INDEX = IvfHnswSq(distance_type="cosine")


@dataclasses.dataclass
class TableReport:
    table: str
    fragments_before: int
    fragments_after: int
    versions_removed: int
    indexes: list[str]
    error: str | None = None


def build_indexes(store: Store, name: str, refresh: bool = True, scalar: bool = False) -> list[str]:
    """Build the table's missing indexes; with ``refresh`` also rebuild its BM25 and vector indexes, with ``scalar``
    its BTree indexes too (their pages hold every value ever indexed, deleted rows' ids included).

    A rebuild retrains the vector partitions on the rows the table holds now
    and drops deleted rows' text and vectors from the index files; without it
    (recall's first query on a store) only absent indexes are built, and rows
    written since are still searched (Lance scans the unindexed tail).
    """
    tbl = store.table(name)
    rows = tbl.count_rows()
    if rows == 0:
        return []
    existing = {tuple(i.columns) for i in tbl.list_indices()}
    built = []
    for column in SCALAR_INDEXES.get(name, []):
        if scalar or (column,) not in existing:
            tbl.create_index(column, config=BTree(), replace=True)
            built.append(f"btree({column})")
    fts_column = FTS_COLUMNS.get(name)
    if fts_column and (refresh or (fts_column,) not in existing):
        tbl.create_index(fts_column, config=FTS(), replace=True)
        built.append(f"fts({fts_column})")
    vector_column = VECTOR_COLUMNS.get(name)
    if vector_column and rows >= VECTOR_INDEX_MIN_ROWS and (refresh or (vector_column,) not in existing):
        tbl.create_index(vector_column, config=VECTOR_INDEX, replace=True)
        built.append(f"ivf_hnsw_sq({column})")
    return built


def maintain_table(store: Store, name: str, cleanup_older_than: timedelta, indexes: bool) -> TableReport:
    """Build missing indexes, then compact, fold new rows into indexes and drop old versions."""
    tbl = store.table(name)
    before = len(tbl.to_lance().get_fragments())
    versions = len(tbl.list_versions())
    try:
        built = build_indexes(store, name) if indexes else []
        tbl.optimize(cleanup_older_than=cleanup_older_than, delete_unverified=cleanup_older_than == timedelta(0))
    except Exception as exc:  # a commit conflict with a concurrent writer: try again next round
        log.warning("maintain %s: %s", name, str(exc).splitlines()[0])
        return TableReport(name, before, before, 0, [], str(exc).splitlines()[0])
    after = len(tbl.to_lance().get_fragments())
    return TableReport(name, before, after, max(0, versions + 1 - len(tbl.list_versions())), built)


def purge_table(store: Store, name: str) -> TableReport:
    """Leave no file from before on disk: compact every deleted row away, rebuild every index from the rows left,
    and only then drop every old version (``optimize`` cleans up before it rebuilds indexes, so old index files
    outlived it). An emptied table loses its indexes, which would otherwise still hold the deleted values."""
    tbl = store.table(name)
    before = len(tbl.to_lance().get_fragments())
    versions = len(tbl.list_versions())
    tbl.to_lance().optimize.compact_files(materialize_deletions=True, materialize_deletions_threshold=0.0)
    if tbl.count_rows():
        built = build_indexes(store, name, refresh=True, scalar=True)
    else:
        built = []
        for index in tbl.list_indices():
            tbl.drop_index(index.name)
    tbl.to_lance().cleanup_old_versions(older_than=timedelta(0), delete_unverified=True)
    after = len(tbl.to_lance().get_fragments())
    return TableReport(name, before, after, max(0, versions + 1 - len(tbl.list_versions())), built)


def maintain(store: Store, cleanup_older_than: timedelta = timedelta(hours=1), indexes: bool = True,
             tables: list[str] | None = None) -> list[TableReport]:
    """Compact, clean up and index every table (or the ones named)."""
    return [maintain_table(store, name, cleanup_older_than, indexes) for name in (tables or list(TABLES))]
