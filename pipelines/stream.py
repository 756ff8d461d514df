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

from memtape.connectors.beam_io import RAW
from memtape.connectors.lance_store import Store
from memtape.pipelines.derive import land_tables
from memtape.pipelines.episodes import conversation_key
from memtape.pipelines.memory import BuildMemories, StateTarget
from memtape.pipelines.state import (Checkpoint, commit_checkpoint, load_carried, load_checkpoint, next_generation,
                                     prune_states)

log = logging.getLogger(__name__)

STREAM_TENANT = "_stream"  # checkpoint rows of the stream job belong to no one tenant
DEFAULT_IDLE_TIMEOUT_S = 300.0
IDLE_CHECK_EVERY_S = 2.0
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


class MicroBatcher:
    """Lands one poll's events and advances the checkpoints of the partitions they came from."""

    def __init__(self, store: Store, group: str, options: Any, idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S) -> None:
        self.store = store
        self.group = group
        self.options = options
        self.idle_timeout_s = idle_timeout_s
        self.stats = StreamStats()
        self._started = time.monotonic()
        self._arrived: dict[str, float] = {}  # conversation key -> when its last message arrived (monotonic)

    def land(self, consumed: list[Any]) -> None:
        """Process events (``Consumed`` from the Kafka consumer) above their partition's stored offset."""
        checkpoints = {checkpoint_name(self.group, c.topic, c.partition): None for c in consumed}
        for name in checkpoints:
            checkpoints[name] = load_checkpoint(self.store, STREAM_TENANT, name)
        fresh, next_offsets = [], {}
        for c in consumed:
            name = checkpoint_name(self.group, c.topic, c.partition)
            if c.offset < checkpoints[name].progress.get("next_offset", 0):
                self.stats.skipped += 1  # landed by a run that crashed before committing to Kafka
                continue
            fresh.append((name, c.event))
            next_offsets[name] = max(next_offsets.get(name, 0), c.offset + 1)
        if fresh:
            self._run([checkpoints[n] for n in next_offsets], fresh, next_offsets, frozenset())
        self.stats.batches += 1
        self.stats.events += len(fresh)

    def close_idle(self, assigned: list[tuple[str, int]]) -> int:
        """Close the open episodes of assigned partitions that received no message for the idle timeout.

        Idleness is measured in processing time (since this process last saw the
        conversation, or since it started), so replaying a historical backlog does
        not close every episode at each micro-batch.
        """
        now = time.monotonic()
        checkpoints = [load_checkpoint(self.store, STREAM_TENANT, checkpoint_name(self.group, t, p)) for t, p in assigned]
        checkpoints = [c for c in checkpoints if c.generation]
        carried = load_carried(self.store, checkpoints)
        idle = frozenset(key for key, payload in carried.conversations.items()
                         if _has_open_units(payload) and now - self._arrived.get(key, self._started) >= self.idle_timeout_s)
        if idle:
            keep = {c.name: c.progress.get("next_offset", 0) for c in checkpoints}
            self._run(checkpoints, [], keep, idle)
            self.stats.flushed += len(idle)
        return len(idle)

    def _run(self, checkpoints: list[Checkpoint], fresh: list[tuple[str, Any]], next_offsets: dict[str, int],
             flush_keys: frozenset[str]) -> None:
        generation = next_generation(max(c.generation for c in checkpoints))
        rows, checkpoint_of, arrived = [], {}, time.monotonic()
        for name, event in fresh:
            event.ingest_path = "stream"
            row = event.to_row()
            rows.append(row)
            key = conversation_key(row)
            checkpoint_of[key] = name
            self._arrived[key] = arrived
        carried = load_carried(self.store, checkpoints)
        checkpoint_of = {**carried.checkpoint_of, **checkpoint_of}
        scope_of = _scope_of(checkpoint_of)
        checkpoint_of.update({scope_of(r): checkpoint_of[conversation_key(r)] for r in rows})
        target = StateTarget(checkpoints[0].name, generation, checkpoint_of)
        self.store.upsert(RAW, rows)  # queryable at once; the derived rows follow within this micro-batch
        with beam.Pipeline(options=self.options) as p:
            raw = p | "Batch" >> beam.Create(rows, reshuffle=False)
            outputs = raw | "BuildMemories" >> BuildMemories(target, carried, False, None, flush_keys, scope_of)
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
    last_idle_check = time.monotonic()
    with RawEventConsumer(settings.bootstrap_servers, settings.group, prefix=settings.prefix,
                          options=settings.client_options) as consumer:
        while not should_stop() and (deadline is None or time.monotonic() < deadline):
            events, offsets, dead = _gather(consumer, settings, deadline, should_stop)
            if events:
                batcher.land(events)
            if offsets:
                consumer.commit(offsets)  # only after the rows and checkpoints are durable in Lance
            batcher.stats.dead_lettered += dead
            if time.monotonic() - last_idle_check >= IDLE_CHECK_EVERY_S:
                batcher.close_idle(sorted((tp.topic, tp.partition) for tp in consumer.assignment()))
                last_idle_check = time.monotonic()
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
