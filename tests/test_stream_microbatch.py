"""A streaming micro-batch's fixed cost: Beam's introspection memoised, with the same answers and the same rows."""
from __future__ import annotations

import copy
import gc
import inspect
import time
import weakref
from datetime import datetime, timedelta, timezone

import apache_beam as beam
import pytest
from apache_beam.coders import VarIntCoder
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import core, userstate
from apache_beam.transforms.userstate import BagStateSpec

from memtape.connectors.beam_io import RAW
from memtape.connectors.lance_store import Store
from memtape.pipelines.beam_introspection import memoise_introspection, with_reused_views
from memtape.pipelines.runner import pipeline_options
from memtape.pipelines.stream_batches import Landed, MicroBatcher, StreamStats
from memtape.schemas.records import RawEvent
from memtape.transforms import encode

CHECKPOINT = "stream:g:memtape.raw.im:0"


class _RunningTotal(beam.DoFn):
    """A stateful DoFn: its state spec is found only through the introspection being memoised."""

    SEEN = BagStateSpec("seen", VarIntCoder())

    def process(self, element, seen=beam.DoFn.StateParam(SEEN)):
        key, value = element
        seen.add(value)
        yield key, sum(seen.read())


def _shipped_and_memoised(question, subject):
    memoise_introspection(False)
    try:
        shipped = question(subject)
    finally:
        memoise_introspection()
    return shipped, question(subject), question(subject)


def test_memoised_introspection_answers_what_beam_answers():
    plain = lambda x, y=3: x + y  # noqa: E731
    for fn in (plain, _RunningTotal().process, beam.Map(plain).fn.process):
        shipped, first, cached = _shipped_and_memoised(core.get_function_args_defaults, fn)
        assert shipped == first == cached
    specs = _shipped_and_memoised(userstate.get_dofn_specs, _RunningTotal())
    assert specs[0] == specs[1] == specs[2] and [s.name for s in specs[2][0]] == ["seen"]
    assert _shipped_and_memoised(userstate.is_stateful_dofn, beam.Map(plain).fn) == (False, False, False)


def test_a_function_memoised_for_one_run_is_not_kept_after_it():
    memoise_introspection()
    fn = lambda row, bonus=1: row  # noqa: E731
    assert core.get_function_args_defaults(fn) == (["row", "bonus"], [1])
    gone = weakref.ref(fn)
    del fn
    gc.collect()
    assert gone() is None


def test_a_stateful_pipeline_runs_with_memoised_introspection_and_reused_views():
    memoise_introspection()
    options = with_reused_views(pipeline_options())
    assert options.view_as(StandardOptions) is options.view_as(StandardOptions)
    assert copy.deepcopy(options).view_as(StandardOptions).runner.endswith("DirectRunner")
    with beam.Pipeline(options=options) as p:
        totals = p | beam.Create([("a", 1), ("a", 2), ("b", 5)]) | beam.ParDo(_RunningTotal())
        assert_that(totals, equal_to([("a", 1), ("a", 3), ("b", 5)]))


def test_a_one_row_micro_batch_asks_beam_for_few_signatures(tmp_path, monkeypatch):
    """Before the memo a one-row micro-batch took about 32,800 ``inspect.signature`` calls (most of its fixed cost)."""
    store = Store(str(tmp_path / "home"))
    batcher = MicroBatcher(store, pipeline_options(), idle_timeout_s=3600.0, stats=StreamStats())
    shipped_signature, calls = inspect.signature, []
    monkeypatch.setattr(inspect, "signature", lambda *a, **k: calls.append(1) or shipped_signature(*a, **k))
    start = datetime(2024, 5, 1, tzinfo=timezone.utc)
    for offset in range(2):
        calls.clear()
        event = RawEvent("acme", "im", "jsonl", f"m{offset}", f"Dana moved the budget review to Friday ({offset}).",
                         start + timedelta(seconds=offset), conversation_id="standup", sender="dana")
        event.ingest_path = "stream"
        store.upsert(RAW, [event.to_row()])
        batcher.step([Landed(CHECKPOINT, offset, event.to_row())], {CHECKPOINT})
    assert batcher.stats.batches == 2 and batcher.stats.events == 2
    assert len(calls) < 2_000
    state = store.read("pipeline_state", columns=["kind", "scope"]).to_pylist()
    assert {"kind": "segmenter", "scope": "acme\x1fstandup"} in state  # the conversation's open episode is carried


def _chat(conversation: str, n: int) -> list[RawEvent]:
    start = datetime(2024, 5, 1, tzinfo=timezone.utc)
    return [RawEvent("acme", "im", "jsonl", f"{conversation}-{i}", f"Dana moved the {conversation} review to Friday ({i}).",
                     start + timedelta(seconds=i), conversation_id=conversation, sender="dana") for i in range(n)]


@pytest.mark.slow
def test_an_idle_conversation_closes_in_a_micro_batch_of_its_own_and_one_with_rows_waiting_stays_open(tmp_path):
    store = Store(str(tmp_path / "home"))
    standup, offsite, launch = _chat("standup", 3), _chat("offsite", 2), _chat("launch", 1)
    store.upsert(RAW, [e.to_row() for e in standup + offsite + launch])
    landed = [Landed(CHECKPOINT, n, e.to_row(), time.monotonic() - 120.0) for n, e in enumerate(standup + offsite)]
    batcher = MicroBatcher(store, pipeline_options(), idle_timeout_s=60.0, stats=StreamStats())
    batcher.step(landed, {CHECKPOINT})  # both conversations were received two minutes ago: idle once derived
    assert store.count("memories") == 0

    # offsite has a new row still queued in the derive thread: it is not idle, and only standup closes
    batcher.step([Landed(CHECKPOINT, 5, launch[0].to_row())], {CHECKPOINT}, waiting={"acme\x1foffsite"})

    memories = store.read("memories", columns=["raw_event_ids"]).to_pylist()
    assert [sorted(m["raw_event_ids"]) for m in memories] == [sorted(e.event_id for e in standup)]
    assert (batcher.stats.batches, batcher.stats.close_batches, batcher.stats.flushed) == (3, 1, 1)
    carried = store.read("pipeline_state", columns=["kind", "scope"]).to_pylist()
    assert {"kind": "segmenter", "scope": "acme\x1flaunch"} in carried  # derived in the batch after the close, still open


@pytest.mark.slow
def test_a_prepared_close_lands_nothing_early_and_the_close_at_the_deadline_encodes_nothing(tmp_path, monkeypatch):
    store = Store(str(tmp_path / "home"))
    standup = _chat("standup", 4)
    store.upsert(RAW, [e.to_row() for e in standup])
    landed = [Landed(CHECKPOINT, n, e.to_row(), time.monotonic() - 45.0) for n, e in enumerate(standup)]
    batcher = MicroBatcher(store, pipeline_options(), idle_timeout_s=80.0, stats=StreamStats())
    batcher.step(landed, {CHECKPOINT})  # received 45 s ago: past half the timeout, so its close is prepared, not landed
    state = sorted(store.read("pipeline_state", columns=["state_id", "generation"]).to_pylist(), key=str)
    batcher.tend({CHECKPOINT})
    assert batcher.stats.prepare_batches == 1 and batcher.stats.close_batches == 0
    assert store.count("memories") == 0 and store.count("episodes") == 0
    assert sorted(store.read("pipeline_state", columns=["state_id", "generation"]).to_pylist(), key=str) == state

    encoded: list[str] = []
    shipped = encode._encode
    monkeypatch.setattr(encode, "_encode", lambda texts, *a, **k: encoded.extend(texts) or shipped(texts, *a, **k))
    batcher.idle_timeout_s = 40.0  # its deadline reached
    batcher.tend({CHECKPOINT})
    memories = store.read("memories", columns=["raw_event_ids", "embedding"]).to_pylist()
    assert [sorted(m["raw_event_ids"]) for m in memories] == [sorted(e.event_id for e in standup)]
    assert encoded == []  # the memory's and its pieces' vectors came from the rehearsal
    assert batcher.stats.close_batches == 1 and batcher.stats.prepare_batches == 1
