"""Checkpointed state: what a run that died before its checkpoint commit wrote never becomes the starting point;
the stream's idle timer counts from when a message was received."""
from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import pytest

from memtape.connectors.lance_store import Store
from memtape.pipelines.memory import SEGMENTER_STATE, StateTarget
from memtape.pipelines.state import Checkpoint, carried_conversations, commit_checkpoint, load_checkpoint
from memtape.pipelines import stream_batches
from memtape.pipelines.runner import pipeline_options
from memtape.pipelines.stream_batches import STREAM_TENANT, Landed, MicroBatcher, StreamStats
from memtape.schemas.records import RawEvent

PARTITION = "stream:g:memtape.raw.im:0"
KEY = "acme\x1fconv-1"
OPEN = json.dumps({"units": [{"event_id": "e1"}], "dropped": []})
CLOSED = json.dumps({"units": [], "dropped": []})


def test_state_left_by_a_run_that_died_before_its_commit_does_not_count_after_a_takeover(tmp_path):
    store = Store(str(tmp_path / "home"))
    store.upsert("pipeline_state", [StateTarget(PARTITION, 100).row("acme", SEGMENTER_STATE, KEY, OPEN)])
    commit_checkpoint(store, Checkpoint(PARTITION, STREAM_TENANT, 100, {"next_offset": 1}))
    # A run at generation 200 closed the episode, wrote that state, and was killed before committing its checkpoint.
    store.upsert("pipeline_state", [StateTarget(PARTITION, 200).row("acme", SEGMENTER_STATE, KEY, CLOSED)])

    MicroBatcher(store, None, idle_timeout_s=60.0, stats=StreamStats()).step([], {PARTITION})  # the next owner takes over
    commit_checkpoint(store, Checkpoint(PARTITION, STREAM_TENANT, 300, {"next_offset": 1}))  # a later run commits above 200

    assert carried_conversations(store, load_checkpoint(store, STREAM_TENANT, PARTITION)) == {KEY: OPEN}


CHAT = ["Dana booked the Lisbon venue for the March offsite.", "Bob will send the agenda to everyone by Friday.",
        "Ann asked whether the budget covers travel from Boston.", "Dana says flights are covered, hotels are not.",
        "The offsite dinner is at the harbour restaurant on the second night.",
        "Separately, the quarterly security audit starts next Monday with the payments team."]


def _landed(i: int, received: float | None = None) -> Landed:
    event = RawEvent("acme", "im", "jsonl", f"m{i}", CHAT[i], datetime(2026, 3, 1, 9, i, tzinfo=timezone.utc),
                     conversation_id="offsite", sender=["dana", "bob", "ann"][i % 3])
    return Landed(PARTITION, i, event.to_row(), received)


def _die_before_commit(name: str, *args) -> None:
    raise RuntimeError(f"killed before committing {name}")


@pytest.mark.slow
def test_episode_closed_by_a_run_that_died_before_its_commit_keeps_its_members_after_the_takeover(tmp_path, monkeypatch):
    store = Store(str(tmp_path / "home"))
    options = pipeline_options("DirectRunner")
    store.upsert("raw_events", [_landed(i).row for i in range(6)])
    ids = [_landed(i).row["event_id"] for i in range(6)]
    first = MicroBatcher(store, options, idle_timeout_s=3600.0, stats=StreamStats())
    first.step([_landed(i) for i in range(5)], {PARTITION})  # five messages, committed, their episode still open
    first.idle_timeout_s = 0.0  # the conversation goes idle: the next run closes it ...
    with monkeypatch.context() as patched:  # ... lands the episode and its memory, and dies before its commit
        patched.setattr(stream_batches, "commit_checkpoint", lambda store, checkpoint: _die_before_commit(checkpoint.name))
        with pytest.raises(RuntimeError, match="killed before committing"):
            first.step([], {PARTITION})
    dead_run_episodes = store.read("episodes").to_pylist()
    assert [sorted(e["member_ids"]) for e in dead_run_episodes] == [sorted(ids[:5])]

    # The next owner takes over while the conversation goes on; the sixth message must not join the closed episode.
    second = MicroBatcher(store, options, idle_timeout_s=3600.0, stats=StreamStats())
    second.step([_landed(5)], {PARTITION})
    second.idle_timeout_s = 0.0
    second.step([], {PARTITION})

    episodes = {e["episode_id"]: sorted(e["member_ids"]) for e in store.read("episodes").to_pylist()}
    assert episodes.pop(dead_run_episodes[0]["episode_id"]) == sorted(ids[:5])  # what readers saw stays as it was
    assert list(episodes.values()) == [[ids[5]]]  # the sixth message opened an episode of its own
    memories = store.read("memories", columns=["episode_id", "raw_event_ids"]).to_pylist()
    assert sorted(m for memory in memories for m in memory["raw_event_ids"]) == sorted(ids)


@pytest.mark.slow
def test_idle_timeout_counts_from_when_the_message_was_received_not_from_when_derivation_reached_it(tmp_path):
    store = Store(str(tmp_path / "home"))
    store.upsert("raw_events", [_landed(i).row for i in range(3)])
    batcher = MicroBatcher(store, pipeline_options("DirectRunner"), idle_timeout_s=60.0, stats=StreamStats())
    received_long_ago = time.monotonic() - 120.0  # derivation ran two minutes behind the consumer
    batcher.step([_landed(i, received_long_ago) for i in range(3)], {PARTITION})
    assert store.count("memories") == 0
    batcher.step([], {PARTITION})  # the conversation has been idle for longer than the timeout: it closes now
    memories = store.read("memories", columns=["raw_event_ids"]).to_pylist()
    assert [sorted(m["raw_event_ids"]) for m in memories] == [sorted(_landed(i).row["event_id"] for i in range(3))]
