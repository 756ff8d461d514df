"""Per-source incremental cursors: the newest event time that landed from each source URI.

A scheduled backfill reads only records at or after its source's cursor; the
cursor is taken from what is durable in raw_events after a run, never from
what was merely read, so a failed run cannot skip data.
"""
from __future__ import annotations

from datetime import datetime

import pyarrow.compute as pc

from memtape.connectors.lance_store import Store, any_of, column_is
from memtape.schemas.records import stable_id, utcnow


def load_cursors(store: Store, tenant: str, uris: list[str]) -> dict[str, datetime | None]:
    rows = store.read("cursors", where=column_is("tenant", tenant)).to_pylist()
    found = {r["source_uri"]: r["last_event_time"] for r in rows}
    return {uri: found.get(uri) for uri in uris}


def advance_cursors(store: Store, tenant: str, uris: list[str]) -> dict[str, datetime | None]:
    """Set each URI's cursor to the newest event time now in raw_events for it."""
    landed = store.read("raw_events", where=column_is("tenant", tenant) & any_of("source_uri", uris) & pc.field("event_time").is_valid(),
                        columns=["source_uri", "event_time"])
    newest = landed.group_by("source_uri").aggregate([("event_time", "max")]).to_pylist()
    now = utcnow()
    rows = [
        {"tenant": tenant, "cursor_id": stable_id(tenant, r["source_uri"]), "source_uri": r["source_uri"],
         "last_event_time": r["event_time_max"], "updated_time": now}
        for r in newest
    ]
    store.upsert("cursors", rows)
    return {r["source_uri"]: r["last_event_time"] for r in rows}
