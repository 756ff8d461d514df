"""Checkpointed state: what a run that died before its checkpoint commit wrote never becomes the starting point."""
from __future__ import annotations

import json

from memtape.connectors.lance_store import Store
from memtape.pipelines.memory import SEGMENTER_STATE, StateTarget
from memtape.pipelines.state import Checkpoint, carried_conversations, commit_checkpoint, load_checkpoint
from memtape.pipelines.stream_batches import STREAM_TENANT, MicroBatcher, StreamStats

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
