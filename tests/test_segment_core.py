"""The incremental episode segmenter: boundaries, forced cuts, idle close and state that survives a restart."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from memtape.schemas import conform
from memtape.schemas.records import stable_id
from memtape.transforms.cues import cue_strength
from memtape.transforms.segment import (COHESION_AFTER, DEPTH_RADIUS, REFINE_RADIUS, EpisodeSegmenter, SegmenterConfig,
                                        TenantModel, conductance, modularity)
from memtape.transforms.static_embed import cache_key, static_embeddings

FIXTURE = Path(__file__).parent / "fixtures" / "segment" / "topics.json"
T0 = datetime(2024, 5, 3, 9, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def emb():
    return static_embeddings()


def _units(conversation: str = "c1", repeats: int = 3, step_s: float = 40.0) -> list[dict]:
    """The fixture's three topics, repeated with fresh ids, one unit every ``step_s`` seconds."""
    base = json.loads(FIXTURE.read_text())
    out = []
    for r in range(repeats):
        for item in base:
            n = len(out)
            out.append({"event_id": f"{conversation}-{n}", "tenant": "t1", "conversation_id": conversation,
                        "source_kind": "im", "sender": item["sender"], "text": item["text"],
                        "event_time": T0 + timedelta(seconds=step_s * n), "topic": f"{r}-{item['topic']}"})
    return out


def _run(emb, units, split: int | None = None) -> list[dict]:
    seg = EpisodeSegmenter(emb)
    if split is None:
        return seg.feed(units) + seg.flush()
    rows = seg.feed(units[:split])
    restored = EpisodeSegmenter(emb, state=json.loads(json.dumps(seg.state())))
    return rows + restored.feed(units[split:]) + restored.flush()


def test_static_embeddings_keep_words_and_drop_punctuation(emb):
    ids = emb.token_ids(["Book a taxi, please!"])[0]
    pieces = [emb.tokenizer.id_to_token(int(i)) for i in ids]
    assert pieces == ["book", "a", "taxi", "please"]
    vec = emb.vector(ids, np.ones(len(ids)))
    assert vec.shape == (384,) and abs(float(np.linalg.norm(vec)) - 1.0) < 1e-5


def test_static_embedding_cache_key_follows_the_weights_not_the_install_path(tmp_path):
    first, second, other = (tmp_path / name / "model.safetensors" for name in ("venv-a", "venv-b", "venv-c"))
    for path, content in ((first, b"same weights"), (second, b"same weights"), (other, b"other weights")):
        path.parent.mkdir()
        path.write_bytes(content)
    assert cache_key(first) == cache_key(second) != cache_key(other)


def test_same_topic_units_are_closer_than_other_topic_units(emb):
    ids = emb.token_ids(["Will it rain tomorrow?", "Showers and wind are forecast.", "Book two train seats."])
    rain, showers, train = (emb.vector(i, np.ones(len(i))) for i in ids)
    assert rain @ showers > rain @ train


def test_topic_switches_become_episode_boundaries(emb):
    units = _units()
    rows = _run(emb, units)
    topic_of = {u["event_id"]: u["topic"] for u in units}
    starts = [units.index(next(u for u in units if u["event_id"] == r["member_ids"][0])) for r in rows]
    gold = [i for i in range(1, len(units)) if units[i]["topic"] != units[i - 1]["topic"]]
    hits = sum(any(abs(s - g) <= 1 for s in starts) for g in gold[2:])  # the first topics fall in the warm-up
    assert hits >= len(gold[2:]) // 2, (starts, gold)
    assert [m for r in rows for m in r["member_ids"]] == [u["event_id"] for u in units]
    majority = [max(set(t := [topic_of[m] for m in r["member_ids"]]), key=t.count) for r in rows]
    assert len(set(majority)) >= 4


@pytest.mark.parametrize("split", [1, 7, 20, 25, 26, 37, 53])
def test_conversation_split_across_two_runs_gets_the_same_episodes(emb, split):
    units = _units()
    one, two = _run(emb, units), _run(emb, units, split)
    assert [r["member_ids"] for r in two] == [r["member_ids"] for r in one]
    assert [r["surprise"] for r in two] == [r["surprise"] for r in one]
    assert [(r["boundary_signal"], r["boundary_score"]) for r in two] == [
        (r["boundary_signal"], r["boundary_score"]) for r in one]


def test_a_surprise_cut_waits_for_its_lookahead_and_matches_the_bulk_result(emb):
    units = _units()
    seg, rows, emitted_at = EpisodeSegmenter(emb), [], []
    for i, unit in enumerate(units):
        closed = seg.feed([unit])
        rows += closed
        emitted_at += [i] * len(closed)
    rows += seg.flush()
    assert [r["member_ids"] for r in rows] == [r["member_ids"] for r in _run(emb, units)]
    position = {u["event_id"]: i for i, u in enumerate(units)}
    cuts = [(position[nxt["member_ids"][0]], at) for r, nxt, at in zip(rows, rows[1:], emitted_at)
            if r["boundary_signal"] == "surprise"]
    assert len(cuts) >= 3
    lookahead = COHESION_AFTER + DEPTH_RADIUS - REFINE_RADIUS  # units after the gap that its decision needs
    assert all(at - cut >= lookahead for cut, at in cuts), cuts
    assert all(r["boundary_score"] > SegmenterConfig().gamma for r in rows if r["boundary_signal"] == "surprise")


def test_rows_conform_to_episodes_schema_with_stable_ids(emb):
    units = _units(repeats=1)
    rows = _run(emb, units)
    table = conform("episodes", rows)
    assert table.num_rows == len(rows)
    first = rows[0]
    assert first["episode_id"] == stable_id("t1", "c1", units[0]["event_id"])
    assert first["start_time"] == units[0]["event_time"]
    assert len(first["surprise"]) == len(first["member_ids"])
    assert rows[-1]["boundary_signal"] == "end"
    assert [r["episode_id"] for r in _run(emb, units)] == [r["episode_id"] for r in rows]


def test_time_gap_and_structure_force_boundaries(emb):
    units = _units(repeats=1)[:6]
    units[3]["event_time"] = units[2]["event_time"] + timedelta(hours=5)
    units[4]["event_time"] = units[3]["event_time"] + timedelta(seconds=30)
    units[5]["event_time"] = units[4]["event_time"] + timedelta(seconds=30)
    units[5]["structure_break"] = True
    rows = _run(emb, units)
    assert [r["member_ids"] for r in rows] == [[u["event_id"] for u in units[:3]],
                                               [u["event_id"] for u in units[3:5]], [units[5]["event_id"]]]
    assert [r["boundary_signal"] for r in rows] == ["time_gap", "structure", "end"]
    assert rows[0]["boundary_score"] == pytest.approx(5.0)  # the gap in units of the im limit (1 h)


def test_gap_limit_follows_the_source_family(emb):
    units = _units(repeats=1)[:4]
    for u in units:
        u["source_kind"] = "email"
    units[2]["event_time"] = units[1]["event_time"] + timedelta(hours=5)
    rows = _run(emb, units)
    assert "time_gap" not in [r["boundary_signal"] for r in rows]
    short = SegmenterConfig(max_gap_s={"email": 60.0})
    seg = EpisodeSegmenter(emb, short)
    rows = seg.feed(units) + seg.flush()
    assert rows[0]["boundary_signal"] == "time_gap" and len(rows[0]["member_ids"]) == 2


def test_idle_timeout_closes_the_open_episode(emb):
    seg = EpisodeSegmenter(emb)
    units = _units(repeats=1)[:3]
    assert seg.feed(units) == []
    last = units[-1]["event_time"]
    assert seg.close_idle(last + timedelta(minutes=10)) == []
    rows = seg.close_idle(last + timedelta(hours=2))
    assert [r["boundary_signal"] for r in rows] == ["idle"]
    assert rows[0]["member_ids"] == [u["event_id"] for u in units]
    assert seg.flush() == []


def test_tenant_model_learns_across_conversations(emb):
    model = TenantModel(emb.vocab_size, SegmenterConfig())
    first = EpisodeSegmenter(emb, model=model)
    first.feed(_units("a", repeats=1)) + first.flush()
    seen = model.docs
    second = EpisodeSegmenter(emb, model=model)
    second.feed(_units("b", repeats=1))
    assert seen == 18 and model.docs == 36
    taxi = emb.token_ids(["train"])[0]
    assert model.weights(taxi)[0] < np.log(37)  # a word this tenant uses a lot weighs less than an unseen one


def test_cut_measures_prefer_the_true_split():
    blocks = np.kron(np.eye(2), np.ones((3, 3))) + 0.05
    np.fill_diagonal(blocks, 0.0)
    assert conductance(blocks, 3) < conductance(blocks, 2)
    assert modularity(blocks, 3) > modularity(blocks, 2) and modularity(blocks, 3) > 0


def test_modularity_refinement_also_segments(emb):
    seg = EpisodeSegmenter(emb, SegmenterConfig(refine="modularity"))
    rows = seg.feed(_units()) + seg.flush()
    assert len(rows) >= 3
    with pytest.raises(ValueError, match="refine"):
        EpisodeSegmenter(emb, SegmenterConfig(refine="louvain"))


def test_state_without_the_model_resumes_on_a_shared_tenant_model(emb):
    units = _units()
    model = TenantModel(emb.vocab_size, SegmenterConfig())
    seg = EpisodeSegmenter(emb, model=model)
    rows = seg.feed(units[:25])
    state = json.loads(json.dumps(seg.state(include_model=False)))
    assert "model" not in state
    resumed = EpisodeSegmenter(emb, model=model, state=state)
    rows += resumed.feed(units[25:]) + resumed.flush()
    assert [r["member_ids"] for r in rows] == [r["member_ids"] for r in _run(emb, units)]


def _topic_units(order: list[int], conversation: str) -> list[dict]:
    """Fixture units in the given order of fixture indices, one conversation, one a minute."""
    base = json.loads(FIXTURE.read_text())
    return [{"event_id": f"{conversation}-{n}", "tenant": "t1", "conversation_id": conversation, "source_kind": "im",
             "sender": base[i]["sender"], "text": base[i]["text"], "event_time": T0 + timedelta(minutes=n)}
            for n, i in enumerate(order)]


def test_a_conversation_that_dwells_on_one_topic_expects_longer_episodes_than_one_that_hops(emb):
    base = json.loads(FIXTURE.read_text())
    topics = sorted({item["topic"] for item in base})
    by_topic = [[i for i, item in enumerate(base) if item["topic"] == t] for t in topics]
    dwell = [i for _ in range(3) for i in by_topic[0]]  # one topic, 18 units
    hop = [by_topic[t % 3][(t // 3 * 2 + j) % len(by_topic[0])] for t in range(9) for j in range(2)]  # a new topic every 2
    expected = {}
    for name, order in (("dwell", dwell), ("hop", hop)):
        seg = EpisodeSegmenter(emb, model=TenantModel(emb.vocab_size, SegmenterConfig()))
        seg.feed(_topic_units(order, name))
        expected[name] = seg.expected_episode()
    assert expected["dwell"] > 2 * expected["hop"] > 0, expected
    assert SegmenterConfig().gamma <= EpisodeSegmenter(emb).threshold()


def test_no_surprise_cut_leaves_an_episode_shorter_than_the_conversation_allows(emb):
    units = _units()
    free = EpisodeSegmenter(emb, SegmenterConfig(episode_scale=1e9))
    strict = EpisodeSegmenter(emb, SegmenterConfig(episode_scale=1e-3))  # every conversation "dwells": no cut fits
    assert "surprise" in [r["boundary_signal"] for r in free.feed(units) + free.flush()]
    assert [r["boundary_signal"] for r in strict.feed(units) + strict.flush()] == ["end"]


def test_a_state_saved_before_drift_was_measured_still_resumes(emb):
    units = _units()
    seg = EpisodeSegmenter(emb)
    rows = seg.feed(units[:25])
    old = json.loads(json.dumps(seg.state()))
    del old["drift"]
    resumed = EpisodeSegmenter(emb, state=old)
    rows += resumed.feed(units[25:]) + resumed.flush()
    assert [m for r in rows for m in r["member_ids"]] == [u["event_id"] for u in units]
    assert resumed.near.n == len(units) - 25  # it measures the conversation afresh from there


@pytest.mark.parametrize("split", [None, 100])
def test_an_episode_without_a_topic_boundary_is_cut_at_its_strongest_gap_once_too_long(emb, split):
    units = _units(repeats=8)  # 144 units; no surprise cut fits, as on a busy channel that seems to dwell
    config = SegmenterConfig(episode_scale=1e-3, max_episode_units=40)
    seg = EpisodeSegmenter(emb, config)
    rows = seg.feed(units[:split]) if split else seg.feed(units)
    if split:
        seg = EpisodeSegmenter(emb, config, state=json.loads(json.dumps(seg.state())))
        rows += seg.feed(units[split:])
    rows += seg.flush()
    assert [m for r in rows for m in r["member_ids"]] == [u["event_id"] for u in units]
    assert all(len(r["member_ids"]) <= 40 for r in rows)
    assert {r["boundary_signal"] for r in rows[:-1]} == {"length"} and rows[-1]["boundary_signal"] == "end"
    for row in rows[:-1]:  # each cut sits at the strongest scored gap past the first quarter of the episode it closed
        assert len(row["member_ids"]) >= 41 // 4
        assert row["boundary_score"] >= max(row["surprise"][41 // 4:], default=float("-inf"))
    tokens = SegmenterConfig(episode_scale=1e-3, max_episode_tokens=200)
    capped = EpisodeSegmenter(emb, tokens)
    assert len(capped.feed(units) + capped.flush()) > 3  # the token bound cuts too


def test_cue_strength_counts_an_opening_acknowledgement_and_a_transition_marker():
    assert cue_strength("Okay, thank you. Now, Mark, your question.") == 2
    assert cue_strength("Right. Can I ask about the budget?") == 1
    assert cue_strength("So what happens to the budget?") == 1
    assert cue_strength("I think that is okay, so we agree.") == 0  # neither opens the unit


def test_where_topics_dwell_a_surprise_cut_needs_a_cue_opening_the_next_episode(emb):
    units = _units()
    cued = {i for i in range(1, len(units)) if units[i]["topic"] != units[i - 1]["topic"]}
    with_cues = [dict(u, text="Okay, thanks. Now, " + u["text"]) if i in cued else u for i, u in enumerate(units)]
    signals = {}
    for name, config, feed in (("free", SegmenterConfig(cue_episode=float("inf")), units),
                               ("asks", SegmenterConfig(cue_episode=0.0), units),
                               ("asks_cued", SegmenterConfig(cue_episode=0.0), with_cues)):
        seg = EpisodeSegmenter(emb, config)
        rows = seg.feed(feed) + seg.flush()
        signals[name] = [r["boundary_signal"] for r in rows]
        assert [m for r in rows for m in r["member_ids"]] == [u["event_id"] for u in units]
        if name == "asks_cued":
            starts = [int(after["member_ids"][0].rsplit("-", 1)[1])
                      for before, after in zip(rows, rows[1:]) if before["boundary_signal"] == "surprise"]
            assert starts and all(min(abs(s - c) for c in cued) <= REFINE_RADIUS for s in starts), starts
            first = EpisodeSegmenter(emb, config)  # the cue is read from the carried state's texts across a restart
            split = first.feed(feed[:25])
            resumed = EpisodeSegmenter(emb, config, state=json.loads(json.dumps(first.state())))
            split += resumed.feed(feed[25:]) + resumed.flush()
            assert [r["member_ids"] for r in split] == [r["member_ids"] for r in rows]
    assert "surprise" in signals["free"]
    assert signals["asks"] == ["end"]  # no unit opens with a cue, so no surprise peak may cut
