"""The one pipeline definition: raw_events rows in, every derived table out.

``BuildMemories`` wires the stages in order: transcribe recordings, dedupe,
segment each conversation into episodes, compress episodes into memories,
extract triples from the sentences the memories kept, resolve their entities,
embed the memories. It returns a PCollection per table, plus the carried state
(dedupe sketches and entity mappings per scope, open episodes per conversation)
for the next run. Backfill and the streaming job both use it;
neither runs a stage outside it. No I/O happens here: the caller lands the outputs.
"""
from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any, Callable, Iterator

import apache_beam as beam

from memtape.schemas.records import ConversationKey, StateRow, stable_id, utcnow
from memtape.transforms.compress import EPISODES_TAG, SELECTED_TAG, CompressEpisodes, fact_key
from memtape.transforms.dedupe import DROPPED, KEPT, STATE, Dedupe
from memtape.transforms.embed import EmbedMemories
from memtape.transforms.segment_episodes import SegmentConversations, conversation_key
from memtape.transforms.transcribe import (
    DEAD_LETTERS_TAG, TranscribeRecordings, UtterancesAsUnits, closes_recording, needs_transcription,
)
from memtape.transforms.entities import ENTITIES, ResolveEntities
from memtape.transforms.entities import STATE as ENTITY_STATE_TAG
from memtape.transforms.triples import ExtractTriples

DEDUPE_STATE = "dedupe"
SEGMENTER_STATE = "segmenter"
ENTITIES_STATE = "entities"


@dataclasses.dataclass(frozen=True)
class StateTarget:
    """Where new state rows go: the checkpoint of each scope (``default`` unless mapped) and the generation."""

    default: str
    generation: int
    checkpoint_of: dict[str, str] = dataclasses.field(default_factory=dict)

    def row(self, tenant: str, kind: str, scope: str, payload: str) -> StateRow:
        checkpoint = self.checkpoint_of.get(scope, self.default)
        return StateRow(tenant=tenant, state_id=stable_id(tenant, kind, scope, checkpoint, self.generation),
                        kind=kind, scope=scope, checkpoint=checkpoint, generation=self.generation,
                        payload=payload, updated_time=utcnow())

    def rows_of(self, kind: str) -> Callable[[str, str], StateRow]:
        """``(scope, payload)`` -> the state row of ``kind``; the scope (a tenant-first key) names the tenant."""
        return lambda scope, payload: self.row(ConversationKey.decode(scope).tenant, kind, scope, payload)


def _by_fact(triple: dict) -> dict:
    """Key a triple by the fact it states, so repeats merge into one row with more support."""
    return {**triple, "triple_id": stable_id(*fact_key(triple)), "supporting_event_ids": [triple["raw_event_id"]],
            "support_count": 1, "last_seen": triple.get("event_time")}


def _attach_triple_ids(element: tuple[str, dict[str, list]]) -> Iterator[dict]:
    _episode_id, grouped = element
    for memory in grouped["memory"]:
        yield {**memory, "triple_ids": sorted({t["triple_id"] for t in grouped["triples"]})}


class BuildMemories(beam.PTransform):
    """``{"raw": raw_events rows, "carried": state}`` -> a dict of PCollections, one per derived table plus ``pipeline_state``.

    ``carried`` holds ``(kind, scope, payload)`` state rows of the previous run
    (see ``pipelines.state.ReadCarriedState``): dedupe state per scope and open
    episodes per conversation, joined to the new rows by key in the pipeline.
    ``close_open`` closes every open episode at the end (a final backfill);
    otherwise the open episodes of conversations in ``flush_keys`` close, so do
    those of recordings transcribed in this run or whose last caption cue is in
    it (a recording is whole: nothing more will join it) and those idle at ``now`` (when given, in event time);
    the rest stay open in the carried state for the next run.
    ``scope_of`` picks the dedupe state scope of a row (the tenant by default).
    ``model_threads`` caps torch's threads per worker process (None: torch's default, every core).
    """

    def __init__(self, target: StateTarget, close_open: bool = False, now: datetime | None = None,
                 flush_keys: frozenset[str] = frozenset(), scope_of: Callable[[dict], str] | None = None,
                 transcribe_options: Any = None, model_threads: int | None = None) -> None:
        super().__init__()
        self.target = target
        self.close_open = close_open
        self.now = now
        self.flush_keys = flush_keys
        self.scope_of = scope_of
        self.transcribe_options = transcribe_options
        self.model_threads = model_threads

    def expand(self, inputs: dict[str, beam.PCollection]) -> dict[str, beam.PCollection]:
        raw, carried = inputs["raw"], inputs["carried"]
        heard = raw | "Transcribe" >> TranscribeRecordings(self.transcribe_options)
        spoken = heard["utterances"] | "UtterancesAsUnits" >> UtterancesAsUnits()
        written = raw | "TextUnits" >> beam.Filter(lambda r: not needs_transcription(r) and bool(r.get("text")))
        units = (written, spoken) | "AllUnits" >> beam.Flatten()

        dedupe_state = carried | "CarriedDedupe" >> beam.FlatMap(lambda s: [(s[1], s[2])] if s[0] == DEDUPE_STATE else [])
        segmenter_state = carried | "CarriedSegmenter" >> beam.FlatMap(lambda s: [(s[1], s[2])] if s[0] == SEGMENTER_STATE else [])
        entity_state = carried | "CarriedEntities" >> beam.FlatMap(lambda s: [(s[1], s[2])] if s[0] == ENTITIES_STATE else [])
        deduped = {"rows": units, "state": dedupe_state} | "Dedupe" >> Dedupe(self.scope_of)
        visits = raw.pipeline | "FlushedConversations" >> beam.Create(sorted((k, None) for k in self.flush_keys))
        finished = (raw | "RecordingsThatEnd" >> beam.Filter(closes_recording)
                    | "FinishedRecordings" >> beam.Map(lambda r: (conversation_key(r), None)))
        segmented = (
            {"kept": deduped[KEPT] | "KeyKept" >> beam.Map(lambda u: (conversation_key(u), u)),
             "dropped": deduped[DROPPED] | "KeyDropped" >> beam.Map(lambda u: (conversation_key(u), u)),
             "close": (visits, finished) | "ConversationsToClose" >> beam.Flatten(), "state": segmenter_state}
            | "Segment" >> SegmentConversations(self.close_open, self.now, threads=self.model_threads)
        )
        bundles = segmented["bundles"]

        compressed = bundles | "Compress" >> CompressEpisodes()
        extracted = compressed[SELECTED_TAG] | "ExtractTriples" >> ExtractTriples()
        resolved = {"episodes": extracted, "state": entity_state} | "ResolveEntities" >> ResolveEntities(self.scope_of)
        triples = resolved["triples"] | "KeyTriplesByFact" >> beam.Map(_by_fact)
        memories = (
            {"memory": compressed["memories"] | "KeyMemory" >> beam.Map(lambda m: (m["episode_id"], m)),
             "triples": triples | "KeyTriple" >> beam.Map(lambda t: (t["episode_id"], t))}
            | "JoinTriples" >> beam.CoGroupByKey()
            | "AttachTripleIds" >> beam.FlatMap(_attach_triple_ids)
            | "Embed" >> EmbedMemories(threads=self.model_threads)
        )

        dedupe_rows = deduped[STATE] | "DedupeStateRows" >> beam.MapTuple(self.target.rows_of(DEDUPE_STATE))
        entity_rows = resolved[ENTITY_STATE_TAG] | "EntityStateRows" >> beam.MapTuple(self.target.rows_of(ENTITIES_STATE))
        segmenter_rows = segmented["state"] | "SegmenterStateRows" >> beam.MapTuple(self.target.rows_of(SEGMENTER_STATE))
        return {
            "utterances": heard["utterances"],
            "dead_letters": heard[DEAD_LETTERS_TAG],
            "episodes": compressed[EPISODES_TAG],
            "triples": triples,
            "entities": resolved[ENTITIES],
            "memories": memories,
            "pipeline_state": (dedupe_rows, entity_rows, segmenter_rows) | "StateRows" >> beam.Flatten(),
        }
