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
causal LM directory. MiniLM encodes the new units of many conversations in
one call (up to ``ENCODE_BATCH``), not one call per conversation, whose few new
messages in a micro-batch made batches of a few texts each. Models load once
per worker in ``setup()``. This module segments only; it never reads or
writes the store.
"""
from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from memtape.schemas.records import STRUCTURED_KINDS, UNIT_FIELDS, ConversationKey, EpisodeBundle, Unit, stable_id, unit_of
from memtape.transforms.dedupe import event_order
from memtape.transforms.segment import EpisodeSegmenter

STATIC, MINILM = "static", "minilm"  # the two built-in unit vectors; any other name is a local causal LM directory
STATE = "state"  # tag of the (conversation key, state JSON) output
ENCODE_BATCH = 1024  # new units, of any conversations, whose sentence vectors one encode call makes (length-grouped inside)


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


def with_sentence_vectors(units: Sequence[Any], encode: Callable[[list[str]], np.ndarray]) -> list[Any]:
    """``units`` with ``embedding``: ``encode``'s vector of each one's text, all in one call.

    Rendered records (health) are cut by time and kind, not by topic: sentence vectors would cost a model pass
    per resource and tell the segmenter nothing its static vectors do not, so they keep the static ones.
    """
    todo = [i for i, u in enumerate(units) if u.get("source_kind") not in STRUCTURED_KINDS]
    out = list(units)
    if todo:
        for i, vector in zip(todo, encode([units[i].get("text") or "" for i in todo])):
            out[i] = {**units[i], "embedding": vector}
    return out


class ConversationAssembler:
    """Feeds one conversation's units to its segmenter and turns closed episodes into bundles.

    A unit that carries an ``embedding`` (``with_sentence_vectors``) is placed by it, else by its static
    vector; ``predictor`` replaces the tenant's n-gram model (a causal LM).
    """

    def __init__(self, embeddings: Any, state_json: str | None = None, predictor: Any = None) -> None:
        state = json.loads(state_json) if state_json else {}
        self.segmenter = EpisodeSegmenter(embeddings, state=state.get("segmenter"), predictor=predictor)
        self.open_units: dict[str, Unit] = {u["event_id"]: _decode(u) for u in state.get("units", [])}
        self.open_dropped: list[Any] = [_decode(u) for u in state.get("dropped", [])]

    def feed(self, kept: Iterable[Any], dropped: Iterable[dict]) -> list[EpisodeBundle]:
        """Add units (any order; sorted here by event time) and return bundles of the episodes they closed."""
        ordered: list[Any] = sorted(kept, key=event_order)
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


def surprise_models(surprise: str) -> tuple[Any, Any]:
    """(static vectors, causal LM predictor or None): what ``ConversationAssembler`` takes for the predictor
    ``surprise`` names, loaded once per process (``minilm`` vectors come with the units: ``sentence_encoder``)."""
    from memtape.transforms.static_embed import static_embeddings

    predictor = None
    if surprise not in (STATIC, MINILM):
        from memtape.transforms.surprise import CausalLMSurprise

        predictor = CausalLMSurprise(surprise)
    return static_embeddings(), predictor


def sentence_encoder(threads: int | None = None) -> Callable[[list[str]], np.ndarray]:
    """The segmenter's MiniLM encode, loaded once per process; ``threads`` caps torch's threads.

    float32 (exact): a message's vector must not hang on which messages shared its batch, or a conversation
    split across runs or workers could cut its episodes elsewhere.
    """
    from memtape.transforms.encode import embed_texts
    from memtape.transforms.models import embedder, limit_model_threads

    limit_model_threads(threads)
    model = embedder()
    return lambda texts: embed_texts(texts, model, exact=True, cached=True)


def _in_global_window(output: Any) -> Any:
    """``finish_bundle`` emits windowed values: ``output`` (maybe tagged) in the global window, as ``process`` would."""
    if isinstance(output, beam.pvalue.TaggedOutput):
        return beam.pvalue.TaggedOutput(output.tag, _in_global_window(output.value))
    return WindowedValue(output, GlobalWindow().max_timestamp(), (GlobalWindow(),))


class _SegmentConversationFn(beam.DoFn):
    """Segments conversations (each one's kept and dropped units) from their carried state; emits bundles and new states.

    Conversations wait in the bundle until ``ENCODE_BATCH`` new units (or the bundle's end) so that MiniLM
    encodes them in one call; each conversation is then segmented alone, so waiting changes no cut.
    """

    def __init__(self, close_open: bool, now: datetime | None, surprise: str, threads: int | None) -> None:
        self._close_open = close_open
        self._now = now
        self._surprise = surprise
        self._threads = threads

    def setup(self) -> None:
        self._embeddings, self._predictor = surprise_models(self._surprise)
        self._encode = sentence_encoder(self._threads) if self._surprise == MINILM else None
        self._episodes = beam.metrics.Metrics.counter("segment", "episodes")

    def start_bundle(self) -> None:
        self._waiting: list[tuple[str, list[Any], list[Any], bool, str | None]] = []
        self._waiting_units = 0

    def process(self, element: tuple[str, dict[str, Iterable[Any]]]) -> Iterator[Any]:
        key, grouped = element
        kept, dropped, close = (list(grouped[tag]) for tag in ("kept", "dropped", "close"))
        if not (kept or dropped or close):  # the carried state of a conversation not touched stays as it is
            return
        self._waiting.append((key, kept, dropped, bool(close), next(iter(grouped["state"]), None)))
        self._waiting_units += len(kept)
        if self._waiting_units >= ENCODE_BATCH:
            yield from self._segment_waiting()

    def finish_bundle(self) -> Iterator[Any]:
        for output in self._segment_waiting():
            yield _in_global_window(output)

    def _segment_waiting(self) -> Iterator[Any]:
        waiting, self._waiting, self._waiting_units = self._waiting, [], 0
        kept = [u for _, units, _, _, _ in waiting for u in units]
        if self._encode is not None:
            kept = with_sentence_vectors(kept, self._encode)
        at = 0
        for key, units, dropped, close, state in waiting:
            assembler = ConversationAssembler(self._embeddings, state, self._predictor)
            bundles = assembler.feed(kept[at:at + len(units)], dropped)
            at += len(units)
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
