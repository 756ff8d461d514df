"""How a newly derived row combines with the row of the same key already stored.

Re-running a backfill must not change rows, and a fact repeated over time
must raise its support instead of adding copies; these folds are idempotent
(unions and maxima) so landing the same rows twice leaves them as they were.
"""
from __future__ import annotations

from typing import Callable

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
    """Aliases, identifiers and supporting events accumulate; the first canonical name stays."""
    return {**new, "canonical_name": old.get("canonical_name") or new.get("canonical_name"),
            "entity_type": old.get("entity_type") or new.get("entity_type"),
            "aliases": _union(old.get("aliases"), new.get("aliases")),
            "identifiers": _union(old.get("identifiers"), new.get("identifiers")),
            "raw_event_ids": _union(old.get("raw_event_ids"), new.get("raw_event_ids"))}


def merge_memory(old: dict, new: dict) -> dict:
    """A recomputed memory keeps the recall history (strength, last recall, archive flag) it earned."""
    return {**new, "strength": old.get("strength", new.get("strength")),
            "last_recalled": old.get("last_recalled"), "archived": old.get("archived", new.get("archived"))}


MERGES: dict[str, Merge] = {"triples": merge_triple, "entities": merge_entity, "memories": merge_memory}
