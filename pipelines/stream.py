"""The continuous streaming job: Kafka raw topics to every table, exactly once.

Two threads share the work. The consumer thread polls the consumer group and,
every ``batch_wait_s``, lands the raw rows of what arrived (insert-only, keyed
by event id), so a message is queryable about a second after it is published.
It hands the landed rows to the derivation thread (``stream_worker``), which
runs micro-batches of everything waiting through ``BuildMemories`` (one
bounded Beam run each: Beam's Python runners cannot run a GroupByKey after an
unbounded source here, and ReadFromKafka needs a Java jar) and checkpoints each
partition (``stream_batches``). Kafka offsets are committed only once the
derived rows and checkpoints behind them are durable. After a crash, the
messages above the committed offsets come again: raw rows already landed are
not inserted twice, and rows below a partition's checkpoint are not derived
twice, so the store, not Kafka, decides where processing resumes.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

from memtape.connectors.beam_io import RAW
from memtape.connectors.lance_store import Store
from memtape.pipelines.state import load_checkpoint
from memtape.pipelines.stream_batches import (DEFAULT_IDLE_TIMEOUT_S, STREAM_TENANT, Landed, MicroBatcher, StreamStats,
                                              checkpoint_name)
from memtape.pipelines.stream_worker import DeriveWorker
from memtape.pipelines.tombstones import Tombstones


@dataclasses.dataclass
class StreamSettings:
    bootstrap_servers: str
    group: str
    prefix: str = "memtape"
    client_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    max_seconds: float | None = None
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S
    batch_wait_s: float = 1.0  # gather polls this long before landing their raw rows
    batch_max_events: int = 5_000  # at most this many events per derivation micro-batch
    max_queued_events: int = 100_000  # landed but not yet derived; beyond it the consumer waits


class RawLander:
    """Lands the raw rows of consumed events above their partition's checkpoint; the consumer thread's one write."""

    def __init__(self, store: Store, group: str, stats: StreamStats) -> None:
        self.store = store
        self.group = group
        self.stats = stats

    def land(self, consumed: list[Any]) -> list[Landed]:
        names = {checkpoint_name(self.group, c.topic, c.partition) for c in consumed}
        stored = {name: load_checkpoint(self.store, STREAM_TENANT, name).progress.get("next_offset", 0) for name in names}
        tombstones = Tombstones.load(self.store)  # read per landing: a deletion may happen while the stream runs
        landed, received = [], time.monotonic()
        for c in consumed:
            name = checkpoint_name(self.group, c.topic, c.partition)
            if c.offset < stored[name]:
                self.stats.skipped += 1  # derived by a run that crashed before committing to Kafka
                continue
            if tombstones.buries(c.event):
                self.stats.tombstoned += 1  # read before its tenant or source was deleted: a replay must not land it
                continue
            c.event.ingest_path = "stream"
            landed.append(Landed(name, c.offset, c.event.to_row(), received))
        self.store.upsert(RAW, [item.row for item in landed])
        return landed


def run_stream(store: Store, settings: StreamSettings, options: Any, should_stop: Callable[[], bool] = lambda: False,
               progress: Callable[[StreamStats], None] | None = None) -> StreamStats:
    """Consume the raw topics in a consumer group and land everything, until stopped or ``max_seconds``."""
    from memtape.connectors.kafka import RawEventConsumer

    stats = StreamStats()
    lander = RawLander(Store(store.home, store.storage_options), settings.group, stats)  # its own handle: another thread
    worker = DeriveWorker(MicroBatcher(store, options, settings.idle_timeout_s, stats), settings.batch_max_events,
                          settings.max_queued_events)
    deadline = None if settings.max_seconds is None else time.monotonic() + settings.max_seconds

    def names(partitions: Any) -> set[str]:
        return {checkpoint_name(settings.group, tp.topic, tp.partition) for tp in partitions}

    def before_revoke(revoked: set[Any]) -> None:
        worker.release(names(revoked))
        _commit(consumer, worker)

    with RawEventConsumer(settings.bootstrap_servers, settings.group, prefix=settings.prefix,
                          options=settings.client_options, on_revoke=before_revoke) as consumer:
        worker.start()
        try:
            while not should_stop() and (deadline is None or time.monotonic() < deadline):
                worker.raise_if_failed()
                events, offsets, dead = _gather(consumer, settings, deadline, should_stop)
                worker.submit(lander.land(events), offsets, names(consumer.assignment()))
                _commit(consumer, worker)
                stats.dead_lettered += dead
                if progress is not None:
                    progress(stats)
        finally:
            worker.stop()
        _commit(consumer, worker)
        worker.raise_if_failed()
    return stats


def _commit(consumer: Any, worker: DeriveWorker) -> None:
    """Commit to Kafka the offsets whose rows and checkpoints are durable in Lance."""
    durable = worker.durable_offsets()
    if durable:
        consumer.commit(durable)


def _gather(consumer: Any, settings: StreamSettings, deadline: float | None,
            should_stop: Callable[[], bool]) -> tuple[list[Any], dict[Any, int], int]:
    """Polls merged into one raw landing: until batch_wait_s after the first event, or batch_max_events."""
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
                break  # nothing waiting: hand over what there is (the derivation thread checks idle episodes)
            continue
        first = first or time.monotonic()
        events.extend(batch.events)
        offsets.update(batch.offsets)
        dead += batch.dead_lettered
    return events, offsets, dead
