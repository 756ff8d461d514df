"""SegmentConversations: keyed units and carried state in, episode bundles and new state out, through a real Beam pipeline."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import apache_beam as beam
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that

from memtape.config import load_config
from memtape.schemas import conform
from memtape.transforms.segment_episodes import ConversationAssembler, SegmentConversations, conversation_key, with_sentence_vectors

FIXTURE = Path(__file__).parent / "fixtures" / "segment" / "topics.json"
T0 = datetime(2024, 1, 8, 14, 0, tzinfo=timezone.utc)


def _units(conversation: str) -> list[dict]:
    items = json.loads(FIXTURE.read_text())
    return [{"event_id": f"{conversation}-{i:02d}", "tenant": "t", "conversation_id": conversation, "source_kind": "im",
             "sender": it["sender"], "text": it["text"], "event_time": T0 + timedelta(minutes=i)}
            for i, it in enumerate(items)]


def _run(tmp: Path, kept: list[dict], state: list[tuple[str, str]], close: list[str],
         surprise: str = "static") -> tuple[list, list]:
    """One pipeline run; its bundles and state come back through files, as the runner pickles the matchers."""

    def keep(name: str):
        def write(rows):
            (tmp / name).write_text(json.dumps(list(rows), default=str))
        return write

    with test_pipeline.TestPipeline() as p:
        segmented = (
            {"kept": p | "Kept" >> beam.Create([(conversation_key(u), u) for u in kept]),
             "dropped": p | "Dropped" >> beam.Create([]),
             "state": p | "State" >> beam.Create(state),
             "close": p | "Close" >> beam.Create([(k, None) for k in close])}
            | SegmentConversations(surprise=surprise)
        )
        assert_that(segmented["bundles"], keep("bundles.json"), label="Bundles")
        assert_that(segmented["state"], keep("state.json"), label="State")
    return json.loads((tmp / "bundles.json").read_text()), [tuple(s) for s in json.loads((tmp / "state.json").read_text())]


def test_each_conversation_is_segmented_in_time_order_and_closed_where_asked(tmp_path):
    shuffled = list(reversed(_units("a")))  # grouping loses order; the transform restores it by event time
    bundles, state = _run(tmp_path, shuffled + _units("b"), [], close=["t\x1fa"])
    conform("episodes", [dict(b["episode"], start_time=datetime.fromisoformat(b["episode"]["start_time"]),
                              end_time=datetime.fromisoformat(b["episode"]["end_time"])) for b in bundles])
    closed = sorted((b for b in bundles if b["episode"]["conversation_id"] == "a"), key=lambda b: b["episode"]["start_time"])
    assert [u["event_id"] for b in closed for u in b["units"]] == [u["event_id"] for u in _units("a")]
    assert closed[-1]["episode"]["boundary_signal"] == "end"  # the close key closed it
    open_b = json.loads(dict(state)["t\x1fb"])["units"]  # b was not closed: its last episode waits in the state
    assert open_b and {u["conversation_id"] for u in open_b} == {"b"}
    assert {k for k, _ in state} == {"t\x1fa", "t\x1fb"}


def test_a_conversation_split_across_two_runs_ends_in_the_same_episodes_as_one_run(tmp_path):
    units = _units("a")
    whole, _ = _run(tmp_path, units, [], close=["t\x1fa"])
    first, state = _run(tmp_path, units[:10], [], close=[])
    second, _ = _run(tmp_path, units[10:], state, close=["t\x1fa"])
    members = lambda bundles: sorted(b["episode"]["member_ids"] for b in bundles)  # noqa: E731
    assert members(first + second) == members(whole)


def test_the_surprise_predictor_comes_from_the_models_section_of_the_config(tmp_path):
    config = tmp_path / "memtape.toml"
    config.write_text('[models]\nsurprise = "minilm"\n')
    assert load_config(str(config), env={}).models.surprise == "minilm"
    assert load_config(env={"MEMTAPE_CONFIG": str(config)}).models.surprise == "minilm"
    assert SegmentConversations().surprise == load_config().models.surprise


def test_minilm_sentence_vectors_reach_the_segmenter():
    import numpy as np

    from memtape.transforms.static_embed import static_embeddings

    seen: list[list[str]] = []

    def encode(texts):
        seen.append(texts)
        return np.eye(384, dtype="float32")[[i % 3 for i in range(len(texts))]]

    units = _units("a")[:6]
    assembler = ConversationAssembler(static_embeddings())
    assembler.feed(with_sentence_vectors(units, encode), [])
    assert seen == [[u["text"] for u in units]]
    recent = json.loads(assembler.state_json())["segmenter"]["recent"]
    assert [r["unit"]["vector"].index(1.0) for r in recent] == [0, 1, 2, 0, 1, 2]  # the given vectors, not static ones


def test_minilm_encodes_many_conversations_in_one_call_and_cuts_each_as_alone(tmp_path, monkeypatch):
    from memtape.transforms import encode, segment_episodes

    calls: list[int] = []
    real = encode.embed_texts
    monkeypatch.setattr(encode, "embed_texts", lambda texts, *a, **k: calls.append(len(texts)) or real(texts, *a, **k))
    units, close = _units("a") + _units("b"), ["t\x1fa", "t\x1fb"]
    together, _ = _run(tmp_path, units, [], close=close, surprise="minilm")
    assert calls == [36]  # 18 messages of each conversation, one call (the direct runner runs the test in-process)
    calls.clear()
    monkeypatch.setattr(segment_episodes, "ENCODE_BATCH", 10)  # a full batch is encoded before the bundle ends
    apart, _ = _run(tmp_path, units, [], close=close, surprise="minilm")
    assert calls == [18, 18]
    episodes = lambda bundles: sorted(b["episode"]["member_ids"] for b in bundles)  # noqa: E731
    assert episodes(together) == episodes(apart) and sorted(m for e in episodes(apart) for m in e) == sorted(
        u["event_id"] for u in units)
