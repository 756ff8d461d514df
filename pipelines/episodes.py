"""Per-conversation episode assembly: segment kept units and bundle each closed episode.

A bundle is what the later stages consume: ``{"episode", "units", "dropped"}``
with the kept units of the episode in order and the dropped units that fell
inside it. Everything an open episode needs to finish later (the segmenter's
state, its kept units, its dropped units) is carried as one JSON state per
conversation, so a conversation split across runs or micro-batches ends in
the same episodes as one run. This module computes; it never writes.
"""
from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Iterable

from memtape.schemas.records import UNIT_FIELDS, ConversationKey, EpisodeBundle, Unit, unit_of
from memtape.transforms.dedupe import event_order
from memtape.transforms.segment import EpisodeSegmenter


def conversation_key(row: dict) -> str:
    return ConversationKey.of(row).encode()


def _encode(unit: dict) -> dict:
    out = {k: unit.get(k) for k in UNIT_FIELDS}
    if isinstance(out["event_time"], datetime):
        out["event_time"] = out["event_time"].isoformat()
    if "reason" in unit:
        out["reason"] = unit["reason"]
        out["duplicate_of"] = unit.get("duplicate_of")
    return out


def _decode(unit: dict) -> dict:
    when = unit.get("event_time")
    return {**unit, "event_time": datetime.fromisoformat(when) if isinstance(when, str) else when}


class ConversationAssembler:
    """Feeds one conversation's units to its segmenter and turns closed episodes into bundles."""

    def __init__(self, embeddings: Any, state_json: str | None = None) -> None:
        state = json.loads(state_json) if state_json else {}
        self.segmenter = EpisodeSegmenter(embeddings, state=state.get("segmenter"))
        self.open_units: dict[str, dict] = {u["event_id"]: _decode(u) for u in state.get("units", [])}
        self.open_dropped: list[dict] = [_decode(u) for u in state.get("dropped", [])]

    def feed(self, kept: Iterable[Unit], dropped: Iterable[dict]) -> list[EpisodeBundle]:
        """Add units (any order; sorted here by event time) and return bundles of the episodes they closed."""
        ordered = sorted(kept, key=event_order)
        for unit in ordered:
            self.open_units[unit["event_id"]] = unit_of(unit)
        self.open_dropped.extend(dropped)
        return self._bundles(self.segmenter.feed(ordered))

    def close_idle(self, now: datetime) -> list[EpisodeBundle]:
        return self._bundles(self.segmenter.close_idle(now))

    def flush(self) -> list[EpisodeBundle]:
        """Close the open episode; dropped units with no kept neighbour still get an episode of their own."""
        bundles = self._bundles(self.segmenter.flush())
        if self.open_dropped:
            bundles.append(self._dropped_only_bundle())
        return bundles

    def state_json(self) -> str:
        return json.dumps({"segmenter": self.segmenter.state(),
                           "units": [_encode(u) for u in self.open_units.values()],
                           "dropped": [_encode(u) for u in self.open_dropped]})

    def _bundles(self, episodes: list[dict]) -> list[EpisodeBundle]:
        bundles = []
        for i, episode in enumerate(episodes):
            units = [self.open_units.pop(eid) for eid in episode["member_ids"] if eid in self.open_units]
            last = i == len(episodes) - 1 and not self.open_units
            end = episode.get("end_time")
            inside = [d for d in self.open_dropped
                      if last or end is None or d.get("event_time") is None or d["event_time"] <= end]
            taken = {d["event_id"] for d in inside}
            self.open_dropped = [d for d in self.open_dropped if d["event_id"] not in taken]
            bundles.append({"episode": episode, "units": units, "dropped": inside})
        return bundles

    def _dropped_only_bundle(self) -> EpisodeBundle:
        from memtape.schemas.records import stable_id

        dropped, self.open_dropped = sorted(self.open_dropped, key=event_order), []
        times = [d["event_time"] for d in dropped if d.get("event_time") is not None]
        first = dropped[0]
        return {"episode": {
            "tenant": first["tenant"], "episode_id": stable_id(first["tenant"], first.get("conversation_id"), first["event_id"]),
            "conversation_id": first.get("conversation_id"), "source_kind": first.get("source_kind"),
            "start_time": min(times, default=None), "end_time": max(times, default=None),
            "member_ids": [], "surprise": [], "boundary_score": None, "boundary_signal": "end",
            "dropped_ids": [], "dropped_summary": None}, "units": [], "dropped": dropped}
