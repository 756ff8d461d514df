"""The continuous streaming job: Kafka raw topics to every table, in checkpointed micro-batches.

Each poll of the consumer group becomes one bounded Beam run over exactly
those messages (Beam's Python runners cannot run a GroupByKey after an
unbounded source here, and ReadFromKafka needs a Java jar). Every Kafka
partition is its own checkpoint in ``pipeline_state``: the next offset to
read and the generation of the state of the conversations it carries (open
episodes, dedupe sketches). A micro-batch lands its raw rows first (queryable
at once), then the derived rows (idempotent keyed writes), then commits each
partition's checkpoint, then commits the offsets to Kafka. On restart or
rebalance, messages below a partition's stored offset are skipped, so the
store, not Kafka, decides where processing resumes: no loss and no duplicate
rows.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from typing import Any, Callable

import apache_beam as beam

from memtape.connectors.beam_io import RAW, ReadFromLance
from memtape.connectors.lance_store import Store, quote_literal
from memtape.pipelines.derive import land_tables
from memtape.pipelines.episodes import conversation_key
from memtape.pipelines.memory import BuildMemories, StateTarget
from memtape.pipelines.state import (Checkpoint, ReadCarriedState, carried_conversations, carried_where,
                                     commit_checkpoint, load_checkpoint, next_generation, prune_states)

log = logging.getLogger(__name__)

STREAM_TENANT = "_stream"  # checkpoint rows of the stream job belong to no one tenant
DEFAULT_IDLE_TIMEOUT_S = 300.0
PRUNE_EVERY_BATCHES = 50


@dataclasses.dataclass
class StreamStats:
    batches: int = 0
    events: int = 0
    skipped: int = 0
    dead_lettered: int = 0
    flushed: int = 0


def checkpoint_name(group: str, topic: str, partition: int) -> str:
    return f"stream:{group}:{topic}:{partition}"


def _scope_of(checkpoint_of_conversation: dict[str, str]) -> Callable[[dict], str]:
    """Dedupe scope of a row: its tenant within the partition that carries its conversation."""
    def scope(row: dict) -> str:
        return f"{row['tenant']}\x1f{checkpoint_of_conversation.get(conversation_key(row), '')}"

    return scope


@dataclasses.dataclass
class _OpenConversation:
    checkpoint: str  # the partition checkpoint that carries the conversation's state
    arrived: float  # when this process last saw a message of it, or took over its partition (monotonic)


class MicroBatcher:
    """Lands each micro-batch's events and closes idle conversations, advancing their partitions' checkpoints.

    The batcher keeps in memory which conversations of its partitions have an
    open episode, so a micro-batch reads and ships the carried state of only
    the conversations it touches: the cost of a batch follows its size, not
    the history of the stream.
    """

    def __init__(self, store: Store, group: str, options: Any, idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S) -> None:
        self.store = store
        self.group = group
        self.options = options
        self.idle_timeout_s = idle_timeout_s
        self.stats = StreamStats()
        self._open: dict[str, _OpenConversation] = {}  # conversation key -> where and since when it is open
        self._followed: set[str] = set()  # checkpoints whose open conversations are in _open

    def step(self, consumed: list[Any], assigned: list[tuple[str, int]]) -> None:
        """One micro-batch: ``consumed`` events above their partition's stored offset, plus the conversations gone idle.

        Idleness is measured in processing time (since this process last saw the
        conversation, or took over its partition), so replaying a historical
        backlog does not close every episode at each micro-batch.
        """
        self._follow({checkpoint_name(self.group, t, p) for t, p in assigned}
                     | {checkpoint_name(self.group, c.topic, c.partition) for c in consumed})
        checkpoints = {name: load_checkpoint(self.store, STREAM_TENANT, name)
                       for name in {checkpoint_name(self.group, c.topic, c.partition) for c in consumed}}
        rows, owner, next_offsets = [], {}, {}
        for c in consumed:
            name = checkpoint_name(self.group, c.topic, c.partition)
            if c.offset < checkpoints[name].progress.get("next_offset", 0):
                self.stats.skipped += 1  # landed by a run that crashed before committing to Kafka
                continue
            c.event.ingest_path = "stream"
            rows.append(c.event.to_row())
            owner[conversation_key(rows[-1])] = name
            next_offsets[name] = max(next_offsets.get(name, 0), c.offset + 1)
        now = time.monotonic()
        idle = {key: o.checkpoint for key, o in self._open.items()
                if key not in owner and now - o.arrived >= self.idle_timeout_s}
        if rows or idle:
            for name in set(idle.values()) - checkpoints.keys():
                checkpoints[name] = load_checkpoint(self.store, STREAM_TENANT, name)
            involved = sorted(set(next_offsets) | set(idle.values()))
            self._run([checkpoints[n] for n in involved], rows, {**idle, **owner}, next_offsets, frozenset(idle))
            self.stats.batches += 1
        for key in idle:
            del self._open[key]
        self._open.update({key: _OpenConversation(name, now) for key, name in owner.items()})
        self.stats.events += len(rows)
        self.stats.flushed += len(idle)

    def _follow(self, names: set[str]) -> None:
        """Track the open conversations of newly held partitions; forget those of partitions handed away."""
        now = time.monotonic()
        for name in names - self._followed:
            checkpoint = load_checkpoint(self.store, STREAM_TENANT, name)
            if checkpoint.generation:
                for key, payload in carried_conversations(self.store, checkpoint).items():
                    if _has_open_units(payload):
                        self._open[key] = _OpenConversation(name, now)
        for key in [k for k, o in self._open.items() if o.checkpoint not in names]:
            del self._open[key]
        self._followed = set(names)

    def _run(self, checkpoints: list[Checkpoint], rows: list[dict], checkpoint_of: dict[str, str],
             next_offsets: dict[str, int], flush_keys: frozenset[str]) -> None:
        """One bounded Beam run over ``rows`` and the conversations in ``flush_keys``; ``checkpoint_of`` maps every
        conversation key involved to its partition checkpoint."""
        generation = next_generation(max(c.generation for c in checkpoints))
        scope_of = _scope_of(checkpoint_of)
        scopes = {scope_of(r): checkpoint_of[conversation_key(r)] for r in rows}
        target = StateTarget(checkpoints[0].name, generation, {**checkpoint_of, **scopes})
        self.store.upsert(RAW, rows)  # queryable at once; the derived rows follow within this micro-batch
        landed = f"event_id IN ({', '.join(sorted({quote_literal(r['event_id']) for r in rows}))})" if rows else "false"
        with beam.Pipeline(options=self.options) as p:
            raw = p | "Batch" >> ReadFromLance(RAW, self.store.home, self.store.storage_options, landed)
            carried = p | "Carried" >> ReadCarriedState(self.store, carried_where(checkpoints, {*checkpoint_of, *scopes}))
            outputs = {"raw": raw, "carried": carried} | "BuildMemories" >> BuildMemories(
                target, False, None, flush_keys, scope_of)
            land_tables(outputs, self.store)
        for checkpoint in checkpoints:
            commit_checkpoint(self.store, Checkpoint(checkpoint.name, STREAM_TENANT, generation, {
                "next_offset": next_offsets.get(checkpoint.name, checkpoint.progress.get("next_offset", 0))}))
        if self.stats.batches % PRUNE_EVERY_BATCHES == 0:
            for checkpoint in checkpoints:
                prune_states(self.store, Checkpoint(checkpoint.name, STREAM_TENANT, generation))


def _has_open_units(payload: str) -> bool:
    state = json.loads(payload)
    return bool(state.get("units") or state.get("dropped"))


@dataclasses.dataclass
class StreamSettings:
    bootstrap_servers: str
    group: str
    prefix: str = "memtape"
    client_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    max_seconds: float | None = None
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S
    batch_wait_s: float = 1.0  # gather polls this long into one micro-batch: latency against per-run overhead
    batch_max_events: int = 5_000


def run_stream(store: Store, settings: StreamSettings, options: Any, should_stop: Callable[[], bool] = lambda: False,
               progress: Callable[[StreamStats], None] | None = None) -> StreamStats:
    """Consume the raw topics in a consumer group and land everything, until stopped or ``max_seconds``."""
    from memtape.connectors.kafka_io import RawEventConsumer

    batcher = MicroBatcher(store, settings.group, options, settings.idle_timeout_s)
    deadline = None if settings.max_seconds is None else time.monotonic() + settings.max_seconds
    with RawEventConsumer(settings.bootstrap_servers, settings.group, prefix=settings.prefix,
                          options=settings.client_options) as consumer:
        while not should_stop() and (deadline is None or time.monotonic() < deadline):
            events, offsets, dead = _gather(consumer, settings, deadline, should_stop)
            batcher.step(events, sorted((tp.topic, tp.partition) for tp in consumer.assignment()))
            if offsets:
                consumer.commit(offsets)  # only after the rows and checkpoints are durable in Lance
            batcher.stats.dead_lettered += dead
            if progress is not None:
                progress(batcher.stats)
    return batcher.stats


def _gather(consumer: Any, settings: StreamSettings, deadline: float | None,
            should_stop: Callable[[], bool]) -> tuple[list[Any], dict[Any, int], int]:
    """Polls merged into one micro-batch: until batch_wait_s after the first event, or batch_max_events."""
    events: list[Any] = []
    offsets: dict[Any, int] = {}
    dead = 0
    first = None
    while not should_stop():
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            break
        if first is not None and (now - first >= settings.batch_wait_s or len(events) >= settings.batch_max_events):
            break
        batch = consumer.poll()
        if batch is None:
            if first is None:
                break  # nothing waiting: let the caller check idle episodes
            continue
        first = first or time.monotonic()
        events.extend(batch.events)
        offsets.update(batch.offsets)
        dead += batch.dead_lettered
    return events, offsets, dead
