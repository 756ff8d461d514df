"""Beam transform: each conversation's ordered units in, EPISODES rows out.

``SegmentEpisodes`` wraps ``memtape.transforms.segment.EpisodeSegmenter`` for
bounded runs over ``(conversation_key, units)`` pairs, as ``GroupByKey``
yields them. Each worker loads the static embeddings (and the optional causal
LM) once in ``setup()`` and keeps one adaptive tenant model per tenant, so the
tenant's history sharpens the surprise of later conversations. This module
wires the segmenter into Beam; it does not read or write the store.
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator

import apache_beam as beam

from memtape.transforms.segment import EpisodeSegmenter, SegmenterConfig, TenantModel



def _in_time_order(units: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Grouping loses order: sort by event time when every unit has one, else keep the given order."""
    units = list(units)
    if all(u.get("event_time") is not None for u in units):
        units.sort(key=lambda u: (u["event_time"], str(u["event_id"])))
    return units


class _SegmentFn(beam.DoFn):
    def __init__(self, config: SegmenterConfig, causal_lm: str | None) -> None:
        self._config = config
        self._causal_lm = causal_lm

    def setup(self) -> None:
        from memtape.transforms.static_embed import static_embeddings
        from memtape.transforms.surprise import CausalLMSurprise

        self._embeddings = static_embeddings()
        self._predictor = CausalLMSurprise(self._causal_lm) if self._causal_lm else None
        self._tenants: dict[str, TenantModel] = {}
        self._episodes = beam.metrics.Metrics.counter("segment", "episodes")

    def process(self, element: tuple[Any, Iterable[dict[str, Any]]]) -> Iterator[dict[str, Any]]:
        _, units = element
        units = _in_time_order(units)
        if not units:
            return
        tenant = str(units[0].get("tenant"))
        if tenant not in self._tenants:
            self._tenants[tenant] = TenantModel(self._embeddings.vocab_size, self._config, self._predictor)
        segmenter = EpisodeSegmenter(self._embeddings, self._config, self._tenants[tenant])
        for row in segmenter.feed(units) + segmenter.flush():
            self._episodes.inc()
            yield row


class SegmentEpisodes(beam.PTransform):
    """PCollection[(conversation_key, iterable of units)] -> PCollection[EPISODES row]."""

    def __init__(self, config: SegmenterConfig | None = None, causal_lm: str | None = None) -> None:
        super().__init__()
        self._config = config or SegmenterConfig()
        self._causal_lm = causal_lm

    def expand(self, conversations: beam.PCollection) -> beam.PCollection:
        return conversations | "CutAtSurpriseBoundaries" >> beam.ParDo(_SegmentFn(self._config, self._causal_lm))
