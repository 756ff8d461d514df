"""How a newly derived row combines with the row of the same key already stored, for tables that merge.

Re-running a backfill must not change rows, and a fact repeated over time
must raise its support instead of adding copies; these folds are idempotent
(unions and maxima) so landing the same rows twice leaves them as they were.
Which tables fold is their ``disposition`` in ``memtape.schemas``; this
module only says how.
"""
from __future__ import annotations

from typing import Callable

from memtape.schemas import Disposition, disposition
from memtape.transforms.entities import better_name, better_type

Merge = Callable[[dict, dict], dict]


def _union(a: list | None, b: list | None) -> list:
    return list(dict.fromkeys([*(a or []), *(b or [])]))


def _latest(a, b):
    present = [x for x in (a, b) if x is not None]
    return max(present) if present else None


def _earliest(a, b):
    present = [x for x in (a, b) if x is not None]
    return min(present) if present else None


def merge_triple(old: dict, new: dict) -> dict:
    """One row per fact: provenance of the first statement, support from every statement."""
    first, later = (old, new) if (old.get("event_time") or new.get("event_time")) is None or (
        old.get("event_time") is not None and (new.get("event_time") is None or old["event_time"] <= new["event_time"])) else (new, old)
    support = sorted(_union(old.get("supporting_event_ids"), new.get("supporting_event_ids")))
    return {**first, "supporting_event_ids": support, "support_count": len(support),
            "last_seen": _latest(_latest(old.get("last_seen"), new.get("last_seen")), later.get("event_time")),
            "confidence": _latest(old.get("confidence"), new.get("confidence"))}


def merge_entity(old: dict, new: dict) -> dict:
    """Aliases, identifiers and supporting events accumulate; the name and type improve as the resolver's do
    (a display name over an address, a labelled type over none), so a later run's row folds in as one run's would."""
    return {**new, "canonical_name": better_name(old["canonical_name"], new["canonical_name"]),
            "entity_type": better_type(old.get("entity_type"), new.get("entity_type")),
            "aliases": _union(old.get("aliases"), new.get("aliases")),
            "identifiers": _union(old.get("identifiers"), new.get("identifiers")),
            "raw_event_ids": _union(old.get("raw_event_ids"), new.get("raw_event_ids"))}


def merge_memory(old: dict, new: dict) -> dict:
    """A recomputed memory keeps the recall history (strength, last recall, archive flag) it earned."""
    return {**new, "strength": old.get("strength", new.get("strength")),
            "last_recalled": old.get("last_recalled"), "archived": old.get("archived", new.get("archived"))}


MERGES: dict[str, Merge] = {"triples": merge_triple, "entities": merge_entity, "memories": merge_memory}


def fold_of(table: str) -> Merge | None:
    """The fold a writer applies to ``table`` (None unless its disposition is ``merge``)."""
    return MERGES[table] if disposition(table) is Disposition.MERGE else None
