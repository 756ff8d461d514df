"""Deletion that really deletes: raw rows, everything derived from them, the carried state, and their bytes on disk.

Given a tenant and a selection of raw events, it removes those raw_events
rows, the utterances of deleted recordings, every episode, triple and memory
whose provenance touches a deleted event (they would still carry its
content), entities left with no supporting event, the cursors of the
deleted events' sources (so a re-import reads them whole), the dead letters
of a deleted source URI, and the tenant's carried dedupe and
segmenter state (it holds Message-IDs and word models of what was read, and
would make a re-import of the same source skip it). ``--all`` removes every
row of the tenant in every table. Then each table is compacted, its indexes
rebuilt, and only then every old Lance version removed, so no deleted byte
stays in the store directory. A tombstone (``pipelines.tombstones``) keeps
Kafka replays of the deleted records from landing them again.
"""
from __future__ import annotations

import dataclasses
from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc

from memtape.connectors.lance_store import Store, any_of, column_is
from memtape.errors import UserError
from memtape.pipelines.maintain import purge_table
from memtape.pipelines.state import CHECKPOINT
from memtape.pipelines.tombstones import bury
from memtape.schemas import TABLES
from memtape.schemas.records import utcnow

_KEPT_ON_DELETE = ("tombstones",)  # what a deletion leaves behind on purpose


@dataclasses.dataclass
class DeleteReport:
    deleted: dict[str, int]
    deleted_time: datetime
    source_kinds: list[str]  # kinds of the deleted events: their raw topics may still hold them


def _delete_where(store: Store, table: str, tenant: str, where: pc.Expression | None = None) -> int:
    """Delete the tenant's rows of ``table`` matching ``where`` (all of them when None); return how many went."""
    mine = column_is("tenant", tenant)
    return store.delete(table, mine if where is None else mine & where)


def _ids_touching(store: Store, table: str, key: str, list_column: str, tenant: str, doomed: set[str]) -> list[str]:
    rows = store.read(table, where=column_is("tenant", tenant), columns=[key, list_column])
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
    where = column_is("tenant", tenant)
    if source_ids:
        where = where & any_of("source_id", source_ids)
    elif source_uri:
        where = where & column_is("source_uri", source_uri)
    elif not everything:
        raise UserError("say what to delete: --source-id, --source or --all")
    return store.read("raw_events", where=where, columns=["event_id"]).column("event_id").to_pylist()


def delete_events(store: Store, tenant: str, event_ids: list[str], source_uri: str | None = None,
                  everything: bool = False) -> DeleteReport:
    """Remove the events and all that derives from them, leave a tombstone, then purge old versions from disk.

    With ``everything`` every row of the tenant goes, whatever table holds it.
    """
    doomed = set(event_ids)
    deleted: dict[str, int] = {}
    deleted_time = utcnow()
    touched = _sources_of(store, tenant, sorted(doomed))
    kinds = sorted({kind for _, kind in touched})
    if everything:
        for name in TABLES:
            if name not in _KEPT_ON_DELETE:
                deleted[name] = _delete_where(store, name, tenant)
    elif doomed:
        ids = sorted(doomed)
        episodes = _ids_touching(store, "episodes", "episode_id", "member_ids", tenant, doomed)
        memories = _ids_touching(store, "memories", "memory_id", "raw_event_ids", tenant, doomed)
        deleted["memories"] = _delete_where(store, "memories", tenant, any_of("memory_id", memories))
        deleted["triples"] = _delete_where(store, "triples", tenant, any_of("raw_event_id", ids) | any_of("episode_id", episodes))
        deleted["episodes"] = _delete_where(store, "episodes", tenant, any_of("episode_id", episodes))
        deleted["utterances"] = _delete_where(store, "utterances", tenant, any_of("recording_event_id", ids))
        deleted["entities"] = _prune_entities(store, tenant, doomed)
        deleted["raw_events"] = _delete_where(store, "raw_events", tenant, any_of("event_id", ids))
    if not everything:
        uris = sorted({uri for uri, _ in touched if uri} | ({source_uri} if source_uri else set()))
        if source_uri:
            deleted["dead_letters"] = _delete_where(store, "dead_letters", tenant, column_is("source_uri", source_uri))
        deleted["cursors"] = _delete_where(store, "cursors", tenant, any_of("source_uri", uris))
        if doomed:
            deleted["pipeline_state"] = _delete_where(store, "pipeline_state", tenant, pc.field("kind") != CHECKPOINT)
    if everything or source_uri:
        bury(store, tenant, None if everything else source_uri, deleted_time)
    for name in TABLES:
        purge_table(store, name)
    return DeleteReport(deleted, deleted_time, kinds)


def _sources_of(store: Store, tenant: str, event_ids: list[str]) -> set[tuple[str | None, str]]:
    """(source URI, source kind) of the chosen events."""
    rows = store.read("raw_events", where=column_is("tenant", tenant) & any_of("event_id", event_ids),
                      columns=["source_uri", "source_kind"])
    return set(zip(rows.column("source_uri").to_pylist(), rows.column("source_kind").to_pylist()))


def _prune_entities(store: Store, tenant: str, doomed: set[str]) -> int:
    """Drop entities whose every supporting event is deleted; strip deleted ids from the rest."""
    rows = store.read("entities", where=column_is("tenant", tenant)).to_pylist()
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
    return _delete_where(store, "entities", tenant, any_of("entity_id", gone))
