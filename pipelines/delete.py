"""Deletion that really deletes: raw rows, everything derived from them, and their bytes on disk.

Given a tenant and a selection of raw events, it removes those raw_events
rows, the utterances of deleted recordings, every episode, triple and memory
whose provenance touches a deleted event (they would still carry its
content), entities left with no supporting event, and dead letters of the
same source. It then rebuilds the full-text index, compacts, and removes all
old Lance versions so the deleted bytes leave the store directory too.
"""
from __future__ import annotations

import dataclasses
from datetime import timedelta

import pyarrow as pa
import pyarrow.compute as pc

from memtape.connectors.lance_store import Store, in_filter, in_lists, quote_literal
from memtape.errors import UserError
from memtape.pipelines.maintain import maintain


@dataclasses.dataclass
class DeleteReport:
    deleted: dict[str, int]


def _delete_where(store: Store, table: str, tenant: str, clauses: list[str]) -> int:
    removed = 0
    for clause in clauses:
        where = f"tenant = {quote_literal(tenant)} AND ({clause})"
        n = store.count(table, where)
        if n:
            store.delete(table, where)
            removed += n
    return removed


def _ids_touching(store: Store, table: str, key: str, list_column: str, tenant: str, doomed: set[str]) -> list[str]:
    rows = store.read(table, where=f"tenant = {quote_literal(tenant)}", columns=[key, list_column])
    if rows.num_rows == 0:
        return []
    flat = pc.list_flatten(rows.column(list_column))
    parents = pc.list_parent_indices(rows.column(list_column))
    hit = pc.is_in(flat, value_set=pa.array(sorted(doomed), pa.string()))
    touched = pc.unique(pc.filter(parents, hit)).to_pylist()
    return [rows.column(key)[i].as_py() for i in touched]


def select_events(store: Store, tenant: str, source_ids: list[str] | None = None, source_uri: str | None = None,
                  everything: bool = False) -> list[str]:
    """The event ids of ``tenant`` chosen by source ids, a source URI, or all of them."""
    where = f"tenant = {quote_literal(tenant)}"
    if source_ids:
        where += f" AND {in_filter('source_id', source_ids)}"
    elif source_uri:
        where += f" AND source_uri = {quote_literal(source_uri)}"
    elif not everything:
        raise UserError("say what to delete: --source-id, --source or --all")
    return store.read("raw_events", where=where, columns=["event_id"]).column("event_id").to_pylist()


def delete_events(store: Store, tenant: str, event_ids: list[str], source_uri: str | None = None) -> DeleteReport:
    """Remove the events and all that derives from them, then purge old versions from disk."""
    doomed = set(event_ids)
    deleted: dict[str, int] = {}
    if doomed:
        ids = sorted(doomed)
        episodes = _ids_touching(store, "episodes", "episode_id", "member_ids", tenant, doomed)
        memories = _ids_touching(store, "memories", "memory_id", "raw_event_ids", tenant, doomed)
        deleted["memories"] = _delete_where(store, "memories", tenant, in_lists("memory_id", memories))
        deleted["triples"] = _delete_where(store, "triples", tenant,
                                           in_lists("raw_event_id", ids) + in_lists("episode_id", episodes))
        deleted["episodes"] = _delete_where(store, "episodes", tenant, in_lists("episode_id", episodes))
        deleted["utterances"] = _delete_where(store, "utterances", tenant, in_lists("recording_event_id", ids))
        deleted["entities"] = _prune_entities(store, tenant, doomed)
        deleted["raw_events"] = _delete_where(store, "raw_events", tenant, in_lists("event_id", ids))
    if source_uri:
        deleted["dead_letters"] = _delete_where(store, "dead_letters", tenant, [f"source_uri = {quote_literal(source_uri)}"])
    maintain(store, cleanup_older_than=timedelta(0), indexes=True)
    return DeleteReport(deleted)


def _prune_entities(store: Store, tenant: str, doomed: set[str]) -> int:
    """Drop entities whose every supporting event is deleted; strip deleted ids from the rest."""
    rows = store.read("entities", where=f"tenant = {quote_literal(tenant)}").to_pylist()
    gone, kept = [], []
    for row in rows:
        support = [i for i in (row["raw_event_ids"] or []) if i not in doomed]
        if len(support) == len(row["raw_event_ids"] or []):
            continue
        if support:
            kept.append({**row, "raw_event_ids": support})
        else:
            gone.append(row["entity_id"])
    store.upsert("entities", kept)
    return _delete_where(store, "entities", tenant, in_lists("entity_id", gone))
