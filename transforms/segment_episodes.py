"""Segmentation's one Beam stage: each conversation's kept and dropped units, with its carried state, in; episode bundles and new state out.

``SegmentConversations`` groups the keyed inputs by conversation and feeds
each conversation's ``ConversationAssembler``, which runs the incremental
``EpisodeSegmenter`` (``memtape.transforms.segment``) and turns every closed
episode into a bundle: ``{"episode", "units", "dropped"}``, the episode's kept
units in order and the dropped units that fell inside it. Everything an open
episode needs to finish later (the segmenter's state, its kept units, its
dropped units) is one JSON state per conversation, so a conversation split
across runs or micro-batches ends in the same episodes as one run. The
surprise predictor is chosen by name (``[models] surprise`` in memtape's
config): ``static`` token vectors, ``minilm`` sentence vectors, or a local
causal LM directory. Models load once per worker in ``setup()``. This module
segments only; it never reads or writes the store.
"""
from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Iterable, Iterator, Mapping

import apache_beam as beam

from memtape.schemas.records import STRUCTURED_KINDS, UNIT_FIELDS, ConversationKey, EpisodeBundle, Unit, stable_id, unit_of
from memtape.transforms.dedupe import event_order
from memtape.transforms.segment import EpisodeSegmenter

STATIC, MINILM = "static", "minilm"  # the two built-in unit vectors; any other name is a local causal LM directory
STATE = "state"  # tag of the (conversation key, state JSON) output


def conversation_key(row: Mapping[str, Any]) -> str:
    return ConversationKey.of(row).encode()


def _encode(unit: Mapping[str, Any]) -> dict:
    out = {k: unit.get(k) for k in UNIT_FIELDS}
    if isinstance(out["event_time"], datetime):
        out["event_time"] = out["event_time"].isoformat()
    if "reason" in unit:
        out["reason"] = unit["reason"]
        out["duplicate_of"] = unit.get("duplicate_of")
    return out


def _decode(unit: dict) -> Any:
    when = unit.get("event_time")
    return {**unit, "event_time": datetime.fromisoformat(when) if isinstance(when, str) else when}


class ConversationAssembler:
    """Feeds one conversation's units to its segmenter and turns closed episodes into bundles.

    ``encode``, when given, turns texts into sentence vectors for the segmenter (MiniLM);
    ``predictor`` replaces the tenant's n-gram model (a causal LM).
    """

    def __init__(self, embeddings: Any, state_json: str | None = None, predictor: Any = None, encode: Any = None) -> None:
        state = json.loads(state_json) if state_json else {}
        self.segmenter = EpisodeSegmenter(embeddings, state=state.get("segmenter"), predictor=predictor)
        self.encode = encode
        self.open_units: dict[str, Unit] = {u["event_id"]: _decode(u) for u in state.get("units", [])}
        self.open_dropped: list[Any] = [_decode(u) for u in state.get("dropped", [])]

    def feed(self, kept: Iterable[Unit], dropped: Iterable[dict]) -> list[EpisodeBundle]:
        """Add units (any order; sorted here by event time) and return bundles of the episodes they closed."""
        ordered: list[Any] = sorted(kept, key=event_order)  # units, then the same units with their vectors
        for unit in ordered:
            self.open_units[unit["event_id"]] = unit_of(unit)
        self.open_dropped.extend(dropped)
        # Rendered records (health) are cut by time and kind, not by topic: sentence vectors would cost a model pass
        # per resource and tell the segmenter nothing its static vectors do not, so they keep the static ones.
        if self.encode is not None and ordered and ordered[0].get("source_kind") not in STRUCTURED_KINDS:
            vectors = self.encode([u.get("text") or "" for u in ordered])
            ordered = [dict(u, embedding=v) for u, v in zip(ordered, vectors)]
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
        bundles: list[EpisodeBundle] = []
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
        dropped, self.open_dropped = sorted(self.open_dropped, key=event_order), []
        times = [d["event_time"] for d in dropped if d.get("event_time") is not None]
        first = dropped[0]
        return {"episode": {
            "tenant": first["tenant"], "episode_id": stable_id(first["tenant"], first.get("conversation_id"), first["event_id"]),
            "conversation_id": first.get("conversation_id"), "source_kind": first.get("source_kind"),
            "start_time": min(times, default=None), "end_time": max(times, default=None),
            "member_ids": [], "surprise": [], "boundary_score": None, "boundary_signal": "end",
            "dropped_ids": [], "dropped_summary": None}, "units": [], "dropped": dropped}


def configured_surprise() -> str:
    """The surprise predictor named by ``[models] surprise`` in memtape's config."""
    from memtape.config import load_config

    return load_config().models.surprise


def surprise_models(surprise: str, threads: int | None = None) -> tuple[Any, Any, Any]:
    """(static vectors, causal LM predictor or None, MiniLM encode or None): what ``ConversationAssembler``
    takes for the predictor ``surprise`` names, loaded once per process; ``threads`` caps torch's threads."""
    from memtape.transforms.static_embed import static_embeddings

    predictor, encode = None, None
    if surprise == MINILM:
        from memtape.transforms.encode import embed_texts
        from memtape.transforms.models import embedder, limit_model_threads

        limit_model_threads(threads)
        model = embedder()
        # float32 (exact): a message's vector must not hang on which messages shared its batch, or a
        # conversation split across runs or workers could cut its episodes elsewhere.
        encode = lambda texts: embed_texts(texts, model, exact=True, cached=True)  # noqa: E731
    elif surprise != STATIC:
        from memtape.transforms.surprise import CausalLMSurprise

        predictor = CausalLMSurprise(surprise)
    return static_embeddings(), predictor, encode


class _SegmentConversationFn(beam.DoFn):
    """Segments one conversation (its kept and dropped units) from its carried state; emits bundles and the new state."""

    def __init__(self, close_open: bool, now: datetime | None, surprise: str, threads: int | None) -> None:
        self._close_open = close_open
        self._now = now
        self._surprise = surprise
        self._threads = threads

    def setup(self) -> None:
        self._embeddings, self._predictor, self._encode = surprise_models(self._surprise, self._threads)
        self._episodes = beam.metrics.Metrics.counter("segment", "episodes")

    def process(self, element: tuple[str, dict[str, Iterable[Any]]]) -> Iterator[Any]:
        key, grouped = element
        kept, dropped, close = (list(grouped[tag]) for tag in ("kept", "dropped", "close"))
        if not (kept or dropped or close):  # the carried state of a conversation not touched stays as it is
            return
        assembler = ConversationAssembler(self._embeddings, next(iter(grouped["state"]), None), self._predictor, self._encode)
        bundles = assembler.feed(kept, dropped)
        if self._close_open or close:
            bundles += assembler.flush()
        elif self._now is not None:
            bundles += assembler.close_idle(self._now)
        for bundle in bundles:
            self._episodes.inc()
            yield bundle
        yield beam.pvalue.TaggedOutput(STATE, (key, assembler.state_json()))


class SegmentConversations(beam.PTransform):
    """``{"kept", "dropped", "state", "close"}`` keyed by ``conversation_key`` -> ``{"bundles", "state"}``.

    ``kept`` and ``dropped`` hold ``(key, unit)``, ``state`` the carried ``(key, state JSON)``
    and ``close`` ``(key, anything)`` for each conversation whose open episode must close in
    this run (a recording that ended, a conversation the caller flushes). ``close_open``
    closes every open episode (a final backfill); otherwise those idle at ``now`` (event
    time, when given) close and the rest stay open in the new state. ``surprise`` names the
    predictor (``static``, ``minilm`` or a causal LM directory; the config's by default);
    ``threads`` caps torch's threads in each worker process (``models.limit_model_threads``).
    """

    def __init__(self, close_open: bool = False, now: datetime | None = None, surprise: str | None = None,
                 threads: int | None = None) -> None:
        super().__init__()
        self.close_open = close_open
        self.now = now
        self.surprise = surprise or configured_surprise()
        self.threads = threads

    def expand(self, inputs: dict[str, beam.PCollection]) -> dict[str, beam.PCollection]:
        segmented = (
            inputs | "ByConversation" >> beam.CoGroupByKey()
            | "CutAtSurpriseBoundaries" >> beam.ParDo(
                _SegmentConversationFn(self.close_open, self.now, self.surprise, self.threads)).with_outputs(STATE, main="bundles")
        )
        return {"bundles": segmented["bundles"], "state": segmented[STATE]}
