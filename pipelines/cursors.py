"""Per-source incremental cursors: the newest event time that landed from each source URI.

A scheduled backfill reads only records at or after its source's cursor; the
cursor is taken from what is durable in raw_events after a run, never from
what was merely read, so a failed run cannot skip data.
"""
from __future__ import annotations

from datetime import datetime

from memtape.connectors.lance_store import Store, quote_literal
from memtape.schemas.records import stable_id, utcnow


def load_cursors(store: Store, tenant: str, uris: list[str]) -> dict[str, datetime | None]:
    rows = store.read("cursors", where=f"tenant = {quote_literal(tenant)}").to_pylist()
    found = {r["source_uri"]: r["last_event_time"] for r in rows}
    return {uri: found.get(uri) for uri in uris}


def advance_cursors(store: Store, tenant: str, uris: list[str]) -> dict[str, datetime | None]:
    """Set each URI's cursor to the newest event time now in raw_events for it."""
    from memtape.query import sql

    listed = ", ".join(quote_literal(u) for u in uris)
    newest = sql(
        f"SELECT source_uri, max(event_time) AS t FROM raw_events "
        f"WHERE tenant = {quote_literal(tenant)} AND source_uri IN ({listed}) GROUP BY 1",
        store,
    ).to_pylist()
    now = utcnow()
    rows = [
        {"tenant": tenant, "cursor_id": stable_id(tenant, r["source_uri"]), "source_uri": r["source_uri"],
         "last_event_time": r["t"], "updated_time": now}
        for r in newest
        if r["t"] is not None
    ]
    store.upsert("cursors", rows)
    return {r["source_uri"]: r["last_event_time"] for r in rows}
