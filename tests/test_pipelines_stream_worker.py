"""The streaming job's derivation thread: offsets become committable only after their micro-batch is durable,
a revoke waits for the queued work, and a failure reaches the consumer thread."""
from __future__ import annotations

import threading
import time

import pytest

from memtape.pipelines.stream_batches import Landed
from memtape.pipelines.stream_worker import DeriveWorker, StepClock


class GatedBatcher:
    """Records each derive step's rows; every step waits until the test opens the gate. ``due``: when the next
    conversation goes idle (``next_close_at``), until a ``tend`` at or after it closes it."""

    def __init__(self, fail: bool = False) -> None:
        self.steps: list[list[Landed]] = []
        self.waiting: list[set[str]] = []  # the conversations each tend was told still have rows queued
        self.calls: list[tuple[str, float]] = []  # ("tend" or "derive", when)
        self.gate = threading.Event()
        self.fail = fail
        self.due: float | None = None

    def tend(self, assigned: set[str], waiting: set[str]) -> None:
        now = time.monotonic()
        if waiting:
            self.waiting.append(waiting)
        self.calls.append(("tend", now))
        if self.due is not None and now >= self.due:
            self.due = None

    def next_close_at(self, waiting: set[str]) -> float | None:
        return self.due

    def derive(self, landed: list[Landed], assigned: set[str]) -> None:
        if not landed:
            return
        self.gate.wait(10)
        if self.fail:
            raise RuntimeError("disk full")
        self.calls.append(("derive", time.monotonic()))
        self.steps.append(landed)


def _landed(name: str, first: int, n: int, conversation: str = "c1") -> list[Landed]:
    return [Landed(name, offset, {"event_id": f"{name}-{offset}", "tenant": "acme", "conversation_id": conversation})
            for offset in range(first, first + n)]


def test_offsets_are_committable_only_after_their_micro_batch_ran():
    batcher = GatedBatcher()
    worker = DeriveWorker(batcher, batch_max_events=100, max_queued_events=1_000)
    worker.start()
    try:
        worker.submit(_landed("p0", 0, 3), {"p0": 3}, {"p0"})
        time.sleep(0.3)
        assert worker.durable_offsets() == {}  # the step is still running
        batcher.gate.set()
        deadline = time.monotonic() + 10
        durable: dict = {}
        while not durable and time.monotonic() < deadline:
            durable = worker.durable_offsets()
            time.sleep(0.05)
        assert durable == {"p0": 3}
        assert [[item.offset for item in step] for step in batcher.steps] == [[0, 1, 2]]
    finally:
        worker.stop()


def test_queued_submissions_merge_into_one_step_up_to_the_batch_limit():
    batcher = GatedBatcher()
    worker = DeriveWorker(batcher, batch_max_events=5, max_queued_events=1_000)
    worker.submit(_landed("p0", 0, 2), {"p0": 2}, {"p0"})
    worker.submit(_landed("p0", 2, 2), {"p0": 4}, {"p0"})
    worker.submit(_landed("p0", 4, 2), {"p0": 6}, {"p0"})
    batcher.gate.set()
    worker.start()
    worker.release(set())  # waits until everything queued is derived
    worker.stop()
    assert [len(step) for step in batcher.steps] == [4, 2]
    assert worker.durable_offsets() == {"p0": 6}


def test_tend_is_told_which_conversations_still_have_rows_queued_so_it_does_not_close_them():
    batcher = GatedBatcher()
    worker = DeriveWorker(batcher, batch_max_events=2, max_queued_events=1_000)
    worker.submit(_landed("p0", 0, 2, "standup"), {"p0": 2}, {"p0"})
    worker.submit(_landed("p0", 2, 2, "offsite"), {"p0": 4}, {"p0"})
    batcher.gate.set()
    worker.start()
    worker.release(set())
    worker.stop()
    assert batcher.waiting == [{"acme\x1fstandup", "acme\x1foffsite"}, {"acme\x1foffsite"}]


def _clock(*steps: tuple[int, float]) -> StepClock:
    clock = StepClock()
    for rows, seconds in steps:
        clock.record(rows, seconds)
    return clock


def test_the_step_clock_fits_a_fixed_cost_and_a_cost_per_row():
    assert _clock().rows_within(10.0) is None and _clock((10, 1.0), (10, 1.2)).rows_within(10.0) is None
    clock = _clock((10, 3.0), (20, 4.0), (40, 6.0))  # 2 s a step, 0.1 s a row
    assert clock.fixed_and_per_row() == pytest.approx((2.0, 0.1))
    assert clock.rows_within(3.0) == 10 and clock.rows_within(1.5) == 0


def test_a_step_takes_only_the_rows_it_can_derive_before_the_next_close_and_a_cut_submission_commits_whole():
    batcher = GatedBatcher()
    batcher.gate.set()
    worker = DeriveWorker(batcher, batch_max_events=100, max_queued_events=1_000, clock=_clock((10, 1.0), (20, 2.0)))
    batcher.due = time.monotonic() + 3.0
    worker.submit(_landed("p0", 0, 60), {"p0": 60}, {"p0"})
    worker.start()
    worker.release(set())
    worker.stop()
    first = [item.offset for item in batcher.steps[0]]
    assert first == list(range(len(first))) and 25 <= len(first) <= 35  # about 3.5 s of rows at 0.1 s each
    assert sum(len(step) for step in batcher.steps) == 60
    assert worker.durable_offsets() == {"p0": 60}


def test_when_a_close_is_due_sooner_than_any_step_could_end_the_worker_waits_for_it_then_derives():
    batcher = GatedBatcher()
    batcher.gate.set()
    worker = DeriveWorker(batcher, batch_max_events=100, max_queued_events=1_000, clock=_clock((10, 3.0), (20, 4.0)))
    due = batcher.due = time.monotonic() + 0.5  # a step costs 2 s before its first row
    worker.submit(_landed("p0", 0, 5), {"p0": 5}, {"p0"})
    worker.start()
    worker.release(set())
    worker.stop()
    tends = [at for what, at in batcher.calls if what == "tend"]
    derives = [at for what, at in batcher.calls if what == "derive"]
    assert len(derives) == 1 and derives[0] >= due  # the one step came after the close, not before it
    assert any(at >= due for at in tends) and min(at for at in tends if at >= due) <= derives[0]


def test_release_waits_for_the_step_in_progress():
    batcher = GatedBatcher()
    worker = DeriveWorker(batcher, batch_max_events=100, max_queued_events=1_000)
    worker.start()
    worker.submit(_landed("p1", 0, 2), {"p1": 2}, {"p1"})
    threading.Timer(0.5, batcher.gate.set).start()
    started = time.monotonic()
    worker.release({"p1"})
    assert time.monotonic() - started >= 0.4
    assert len(batcher.steps) == 1 and worker.durable_offsets() == {"p1": 2}
    worker.stop()


def test_a_failed_step_is_raised_in_the_consumer_thread_and_commits_nothing():
    batcher = GatedBatcher(fail=True)
    batcher.gate.set()
    worker = DeriveWorker(batcher, batch_max_events=100, max_queued_events=1_000)
    worker.start()
    worker.submit(_landed("p0", 0, 1), {"p0": 1}, {"p0"})
    worker.join(10)
    with pytest.raises(RuntimeError, match="disk full"):
        worker.raise_if_failed()
    assert worker.durable_offsets() == {}
