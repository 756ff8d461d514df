"""The streaming job's derivation thread: micro-batches of landed rows, beside the thread that lands them.

The consumer thread lands raw rows as they arrive (queryable within about a
second) and hands them here; this thread derives everything waiting, in one
``MicroBatcher.step`` at a time, and reports the Kafka offsets whose derived
rows and checkpoints are durable, which only then may be committed. Before a
rebalance takes partitions away, ``release`` finishes their queued work, so a
partition never has two writers. Each step first closes the conversations gone
idle (none with rows still queued here) and prepares the closes coming, then
derives queued rows: no more than it can derive before the next conversation
goes idle (``StepClock``), so a due close is not stuck behind a long step.
"""
from __future__ import annotations

import threading
import time
from collections import Counter, deque
from typing import Any

import numpy as np

from memtape.pipelines.stream_batches import Landed, MicroBatcher
from memtape.transforms.segment_episodes import conversation_key

IDLE_CHECK_EVERY_S = 1.0  # with nothing queued, look for idle conversations at least this often
CLOSE_SLACK_S = 0.5  # a derive step may end this long after the next conversation goes idle
TIMED_STEPS = 16  # the last derive steps whose times predict the next one's


class StepClock:
    """Predicts a derive step's seconds from its rows (fixed cost + per row), fitted to the last ``TIMED_STEPS``.

    Before any step is timed, or when the steps timed cannot separate the two, it
    sets no bound: a step takes what the batch limit allows, as before.
    """

    def __init__(self) -> None:
        self._steps: deque[tuple[int, float]] = deque(maxlen=TIMED_STEPS)

    def record(self, rows: int, seconds: float) -> None:
        if rows:
            self._steps.append((rows, seconds))

    def fixed_and_per_row(self) -> tuple[float, float] | None:
        if len({rows for rows, _ in self._steps}) < 2:
            return None
        rows, seconds = np.array(self._steps, dtype=float).T
        per_row, fixed = np.polyfit(rows, seconds, 1)
        if per_row <= 0:
            return None
        return max(0.0, float(fixed)), float(per_row)

    def rows_within(self, seconds: float) -> int | None:
        """Rows a step can derive in ``seconds``: 0 if not even the fixed cost fits; None when it cannot tell."""
        fit = self.fixed_and_per_row()
        if fit is None:
            return None
        fixed, per_row = fit
        return max(0, int((seconds - fixed) / per_row))


class DeriveWorker(threading.Thread):
    """Derives submitted rows in order, at most ``batch_max_events`` per step (a whole submission at least)."""

    def __init__(self, batcher: MicroBatcher, batch_max_events: int, max_queued_events: int,
                 clock: StepClock | None = None) -> None:
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
        self._clock = clock or StepClock()
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
                        self._cond.wait(self._seconds_to_next_close(set(self._waiting), IDLE_CHECK_EVERY_S))
                    if self._stopping:
                        return
                    assigned, waiting = set(self._assigned), set(self._waiting)
                    self._busy = True
                self._batcher.tend(assigned, waiting)  # closes due now, and closes to prepare
                with self._cond:
                    limit = self._rows_before_next_close(set(self._waiting))
                    if limit == 0:  # the next close is due before any step could end: wait for it instead
                        self._busy = False
                        self._cond.notify_all()
                        self._cond.wait(self._seconds_to_next_close(set(self._waiting), IDLE_CHECK_EVERY_S))
                        continue
                    work = self._take(self._batch_max if limit is None else min(limit, self._batch_max))
                    assigned = set(self._assigned)
                landed = [item for batch, _ in work for item in batch]
                started = time.monotonic()
                self._batcher.derive(landed, assigned)
                self._clock.record(len(landed), time.monotonic() - started)
                with self._cond:
                    for _, offsets in work:
                        if offsets is not None:
                            self._durable.update(offsets)
                    self._busy = False
                    self._cond.notify_all()
        except BaseException as exc:  # handed to the consumer thread, which stops the job with it
            with self._cond:
                self.error = exc
                self._busy = False
                self._cond.notify_all()

    def _seconds_to_next_close(self, waiting: set[str], longest: float) -> float:
        due = self._batcher.next_close_at(waiting)
        return longest if due is None else min(longest, max(0.0, due - time.monotonic()))

    def _rows_before_next_close(self, waiting: set[str]) -> int | None:
        """How many queued rows a step may take so that it ends by the next close (plus ``CLOSE_SLACK_S``); None: no bound.

        Conversations with rows queued are not about to close (their rows come first), so only the others count.
        """
        if not self._queue:
            return None
        due = self._batcher.next_close_at(waiting)
        if due is None:
            return None
        return self._clock.rows_within(due + CLOSE_SLACK_S - time.monotonic())

    def _take(self, limit: int) -> list[tuple[list[Landed], dict[Any, int] | None]]:
        """Queued rows, in order, up to ``limit`` (one at least); a submission cut short stays queued with its
        offsets, which become durable with its last row (its first rows are durable in the store's checkpoints)."""
        work: list[tuple[list[Landed], dict[Any, int] | None]] = []
        events = 0
        while self._queue and events < max(1, limit):
            landed, offsets = self._queue[0]
            room = max(1, limit) - events
            if len(landed) > room and work:
                break  # whole submissions merge; only the first one of a step is ever cut
            if len(landed) > room:
                self._queue[0] = (landed[room:], offsets)
                work.append((landed[:room], None))
            else:
                work.append(self._queue.pop(0))
            events += len(work[-1][0])
        self._queued_events -= events
        self._waiting.subtract(conversation_key(item.row) for landed, _ in work for item in landed)
        self._waiting = +self._waiting  # drop the conversations with nothing left queued
        return work
