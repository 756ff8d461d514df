"""The streaming job's derivation thread: micro-batches of landed rows, beside the thread that lands them.

The consumer thread lands raw rows as they arrive (queryable within about a
second) and hands them here; this thread derives everything waiting, in one
``MicroBatcher.step`` at a time, and reports the Kafka offsets whose derived
rows and checkpoints are durable, which only then may be committed. Before a
rebalance takes partitions away, ``release`` finishes their queued work, so a
partition never has two writers. Each step first closes the conversations gone
idle (none with rows still queued here), then derives the rows it took.
"""
from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from memtape.pipelines.stream_batches import Landed, MicroBatcher
from memtape.transforms.segment_episodes import conversation_key

IDLE_CHECK_EVERY_S = 1.0  # with nothing queued, look for idle conversations this often


class DeriveWorker(threading.Thread):
    """Derives submitted rows in order, at most ``batch_max_events`` per step (a whole submission at least)."""

    def __init__(self, batcher: MicroBatcher, batch_max_events: int, max_queued_events: int) -> None:
        super().__init__(name="memtape-derive", daemon=True)
        self._batcher = batcher
        self._batch_max = batch_max_events
        self._max_queued = max_queued_events
        self._cond = threading.Condition()
        self._queue: list[tuple[list[Landed], dict[Any, int]]] = []
        self._queued_events = 0
        self._waiting: Counter[str] = Counter()  # conversation key -> its rows queued here, not handed to a step yet
        self._assigned: set[str] = set()
        self._durable: dict[Any, int] = {}  # Kafka partition -> next offset whose work is durable
        self._busy = False
        self._stopping = False
        self.error: BaseException | None = None

    def submit(self, landed: list[Landed], offsets: dict[Any, int], assigned: set[str]) -> None:
        """Queue one poll's landed rows and Kafka offsets; waits while too much is queued (backpressure)."""
        with self._cond:
            self._assigned = set(assigned)
            if not landed and not offsets:
                return
            while self._queued_events >= self._max_queued and self.error is None and not self._stopping:
                self._cond.wait(IDLE_CHECK_EVERY_S)
            self._queue.append((landed, offsets))
            self._queued_events += len(landed)
            self._waiting.update(conversation_key(item.row) for item in landed)
            self._cond.notify_all()

    def durable_offsets(self) -> dict[Any, int]:
        """Offsets made durable since the last call: safe to commit to Kafka now."""
        with self._cond:
            done, self._durable = self._durable, {}
        return done

    def release(self, checkpoints: set[str]) -> None:
        """Finish all queued work, then stop touching ``checkpoints`` (their partitions are being revoked)."""
        with self._cond:
            while (self._queue or self._busy) and self.error is None and self.is_alive():
                self._cond.wait(IDLE_CHECK_EVERY_S)
            self._assigned -= checkpoints

    def stop(self) -> None:
        """Finish the micro-batch in progress, drop the rest (it is replayed from Kafka), and end the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self.is_alive():
            self.join()

    def raise_if_failed(self) -> None:
        if self.error is not None:
            raise self.error

    def run(self) -> None:
        try:
            while True:
                with self._cond:
                    if not self._queue and not self._stopping:
                        self._cond.wait(IDLE_CHECK_EVERY_S)
                    if self._stopping:
                        return
                    work = self._take()
                    assigned = set(self._assigned)
                    waiting = set(self._waiting)
                    self._busy = True
                self._batcher.step([item for landed, _ in work for item in landed], assigned, waiting)
                with self._cond:
                    for _, offsets in work:
                        self._durable.update(offsets)
                    self._busy = False
                    self._cond.notify_all()
        except BaseException as exc:  # handed to the consumer thread, which stops the job with it
            with self._cond:
                self.error = exc
                self._busy = False
                self._cond.notify_all()

    def _take(self) -> list[tuple[list[Landed], dict[Any, int]]]:
        work: list[tuple[list[Landed], dict[Any, int]]] = []
        events = 0
        while self._queue and (not work or events + len(self._queue[0][0]) <= self._batch_max):
            landed, offsets = self._queue.pop(0)
            work.append((landed, offsets))
            events += len(landed)
        self._queued_events -= events
        self._waiting.subtract(conversation_key(item.row) for landed, _ in work for item in landed)
        self._waiting = +self._waiting  # drop the conversations with nothing left queued
        return work
