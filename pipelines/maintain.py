"""Store maintenance: compaction, old-version cleanup and index (re)builds.

Safe beside the streaming job: Lance commits are optimistic, so a compaction
that races a writer's commit fails cleanly and is retried on the next round
instead of losing either side. Maintenance never changes what rows a table holds.
"""
from __future__ import annotations

import dataclasses
import logging
from datetime import timedelta

from lancedb.index import BTree

from memtape.connectors.lance_store import Store
from memtape.schemas import TABLES

log = logging.getLogger(__name__)

#: Below this many memories an exact (flat) vector scan is faster than any ANN index.
VECTOR_INDEX_MIN_ROWS = 10_000
#: Scalar indexes that make the per-tenant, per-conversation filters cheap.
SCALAR_INDEXES = {"raw_events": ["tenant", "conversation_id"], "memories": ["tenant"], "triples": ["tenant"],
                  "entities": ["tenant"], "episodes": ["tenant"]}
FTS_COLUMNS = {"memories": "text"}


@dataclasses.dataclass
class TableReport:
    table: str
    fragments_before: int
    fragments_after: int
    versions_removed: int
    indexes: list[str]
    error: str | None = None


def _indexes(store: Store, name: str) -> list[str]:
    tbl = store.table(name)
    rows = tbl.count_rows()
    if rows == 0:
        return []
    existing = {tuple(i.columns) for i in tbl.list_indices()}
    built = []
    for column in SCALAR_INDEXES.get(name, []):
        if (column,) not in existing:
            tbl.create_index(column, config=BTree(), replace=True)
            built.append(f"btree({column})")
    if name in FTS_COLUMNS:
        tbl.create_fts_index(FTS_COLUMNS[name], replace=True)  # rebuilt so new rows are searchable
        built.append(f"fts({FTS_COLUMNS[name]})")
    if name == "memories" and rows >= VECTOR_INDEX_MIN_ROWS:
        tbl.create_index(metric="cosine", vector_column_name="embedding", index_type="IVF_PQ", replace=True)
        built.append("ivf_pq(embedding)")
    return built


def maintain_table(store: Store, name: str, cleanup_older_than: timedelta, indexes: bool) -> TableReport:
    """Build missing indexes, then compact, fold new rows into indexes and drop old versions."""
    tbl = store.table(name)
    before = len(tbl.to_lance().get_fragments())
    versions = len(tbl.list_versions())
    try:
        built = _indexes(store, name) if indexes else []
        tbl.optimize(cleanup_older_than=cleanup_older_than, delete_unverified=cleanup_older_than == timedelta(0))
    except Exception as exc:  # a commit conflict with a concurrent writer: try again next round
        log.warning("maintain %s: %s", name, str(exc).splitlines()[0])
        return TableReport(name, before, before, 0, [], str(exc).splitlines()[0])
    after = len(tbl.to_lance().get_fragments())
    return TableReport(name, before, after, max(0, versions + 1 - len(tbl.list_versions())), built)


def maintain(store: Store, cleanup_older_than: timedelta = timedelta(hours=1), indexes: bool = True,
             tables: list[str] | None = None) -> list[TableReport]:
    """Compact, clean up and index every table (or the ones named)."""
    return [maintain_table(store, name, cleanup_older_than, indexes) for name in (tables or list(TABLES))]
