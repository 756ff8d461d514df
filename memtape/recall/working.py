"""Working memory: the raw events that have landed but no memory cites yet, searchable like memory lines.

A message joins a memory only when its episode closes (a topic shift, a time
gap, or the conversation's idle timeout) and derivation has run; until then it
is in ``raw_events`` alone. Recall must still see what was said two minutes
ago, so per tenant this module keeps the events no memory cites (open
episodes, derivation in flight), read incrementally by ingest time, and turns
the ones sharing a word with the query into lines with their own provenance.
It reads ``raw_events`` of one tenant only and never writes.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from datetime import datetime, timezone
from typing import Any, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from memtape.connectors.lance_store import Store, any_of, column_is
from memtape.recall.lines import Line, static_embeddings_cached
from memtape.schemas.records import speaker_label, subjects_of
from memtape.transforms.tokens import match_terms

WORKING_MAX_EVENTS = 20_000  # the newest uncovered events kept per tenant
COLUMNS = ["tenant", "event_id", "source_kind", "source", "source_id", "conversation_id", "sender", "recipients",
           "event_time", "ingest_time", "text", "attrs"]
WORKING_PREFIX = "working:"  # memory id of a working-memory line: no memory holds it yet
REFRESH_EVERY_S = 0.5  # a tenant's new raw rows are read at most this often (recalls in between share the read)


class _Tenant:
    """One tenant's uncovered events, and how far its raw_events have been read."""

    def __init__(self) -> None:
        self.read_until: datetime | None = None
        self.read_at = 0.0  # monotonic time of the last read
        self.events: OrderedDict[str, dict] = OrderedDict()  # event id -> row with its terms and line
        self.lock = threading.Lock()


class WorkingMemory:
    """Per (store, tenant): the events no memory cites, kept current as raw rows land and memories close."""

    def __init__(self) -> None:
        self._tenants: dict[tuple[str, str], _Tenant] = {}
        self._lock = threading.Lock()

    def _tenant(self, store: Store, tenant: str) -> _Tenant:
        with self._lock:
            return self._tenants.setdefault((store.home, tenant), _Tenant())

    def refresh(self, store: Store, tenant: str, covered: set[str]) -> list[dict]:
        """The tenant's uncovered events with text, newest last, after reading what landed since the last call."""
        from memtape.recall.candidates import lookup

        state = self._tenant(store, tenant)
        with state.lock:
            where = column_is("tenant", tenant)
            if state.read_until is not None and time.monotonic() - state.read_at < REFRESH_EVERY_S:
                rows = []
            elif state.read_until is None:  # first call: ids first, text only for the few no memory cites
                ids = lookup(store, "raw_events", where, ["event_id", "ingest_time"], 1 << 62)
                fresh = [r["event_id"] for r in ids if r["event_id"] not in covered]
                rows = lookup(store, "raw_events", where & any_of("event_id", fresh), COLUMNS, 1 << 62) if fresh else []
                state.read_until = max((r["ingest_time"] for r in ids), default=None) or datetime.min.replace(tzinfo=timezone.utc)
            else:
                since = pa.scalar(state.read_until, pa.timestamp("us", "UTC"))
                rows = lookup(store, "raw_events", where & (pc.field("ingest_time") >= since), COLUMNS, 1 << 62)
            if state.read_until is not None and (rows or not state.events):
                state.read_at = time.monotonic()
            for row in sorted(rows, key=lambda r: r["ingest_time"]):
                state.read_until = max(state.read_until, row["ingest_time"])
                if row["text"] and row["event_id"] not in covered and row["event_id"] not in state.events:
                    state.events[row["event_id"]] = {**row, "scope_row": _as_memory_row(row), "terms": None, "line": None}
            for event_id in [e for e in state.events if e in covered]:
                del state.events[event_id]
            while len(state.events) > WORKING_MAX_EVENTS:
                state.events.popitem(last=False)
            return list(state.events.values())

    def lines(self, store: Store, tenant: str, covered: set[str], query: str, admits: Any) -> list[Line]:
        """Lines of the uncovered events that share a word with ``query`` and that ``admits`` (a row test) keeps."""
        wanted = match_terms(query)
        out: list[Line] = []
        for row in self.refresh(store, tenant, covered):
            if row["terms"] is None:
                row["terms"] = match_terms(f"{row['sender'] or ''} {row['text']}")
            if not (row["terms"] & wanted) or not admits(row["scope_row"]):
                continue
            if row["line"] is None:
                row["line"] = _line(row)
            out.append(row["line"])
        return out


def _as_memory_row(row: dict) -> dict:
    """The fields a recall scope tests, as a memory row would hold them."""
    return {"tenant": row["tenant"], "start_time": row["event_time"], "end_time": row["event_time"],
            "source_kind": row["source_kind"], "subjects": subjects_of([row])}


def _line(row: dict) -> Line:
    who = speaker_label(row["sender"]) if row["sender"] else None
    line = Line(WORKING_PREFIX + row["event_id"], who, row["text"].strip(), [row["event_id"]], row["event_time"],
                [row["source"]], [row["source_id"]], source_kind=row["source_kind"], conversation_id=row["conversation_id"],
                subjects=row["scope_row"]["subjects"])
    static = static_embeddings_cached()
    ids = static.token_ids([f"{who}: {line.text}" if who else line.text])[0]
    line.vector = static.vector(ids, np.ones(len(ids), dtype=np.float32))
    return line


def working_row(line: Line) -> dict:
    """A working-memory line as the memory row recall's items are made from: who, when, where, not yet in a memory."""
    when = line.when.strftime("%Y-%m-%d %H:%M") if line.when else "?"
    header = f"who: {line.who or '?'}; when: {when} UTC; where: {line.source_kind or '?'} {line.conversation_id or '?'}; not yet in a memory"
    return {"memory_id": None, "header": header, "end_time": line.when, "source_kind": line.source_kind,
            "conversation_id": line.conversation_id, "subjects": line.subjects}


def covered_ids(memories_raw_event_ids: Iterable[Iterable[str] | None]) -> set[str]:
    """Every raw event some memory cites (archived ones included: a forgotten memory's events are not new)."""
    return {e for ids in memories_raw_event_ids for e in ids or ()}


WORKING = WorkingMemory()
