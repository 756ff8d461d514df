"""The streaming job's derivation thread: offsets become committable only after their micro-batch is durable,
a revoke waits for the queued work, and a failure reaches the consumer thread."""
from __future__ import annotations

import threading
import time

import pytest

from memtape.pipelines.stream_batches import Landed
from memtape.pipelines.stream_worker import DeriveWorker


class GatedBatcher:
    """Records each step's rows; every step waits until the test opens the gate."""

    def __init__(self, fail: bool = False) -> None:
        self.steps: list[list[Landed]] = []
        self.waiting: list[set[str]] = []  # the conversations each step was told still have rows queued
        self.gate = threading.Event()
        self.fail = fail

    def step(self, landed: list[Landed], assigned: set[str], waiting: set[str]) -> None:
        if not landed:
            return  # an idle check
        self.gate.wait(10)
        if self.fail:
            raise RuntimeError("disk full")
        self.steps.append(landed)
        self.waiting.append(waiting)


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


def test_a_step_is_told_which_conversations_still_have_rows_queued_so_it_does_not_close_them():
    batcher = GatedBatcher()
    worker = DeriveWorker(batcher, batch_max_events=2, max_queued_events=1_000)
    worker.submit(_landed("p0", 0, 2, "standup"), {"p0": 2}, {"p0"})
    worker.submit(_landed("p0", 2, 2, "offsite"), {"p0": 4}, {"p0"})
    batcher.gate.set()
    worker.start()
    worker.release(set())
    worker.stop()
    assert batcher.waiting == [{"acme\x1foffsite"}, set()]


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
