"""The streaming job on the embedded broker: exactly-once landing across kill -9, and two processes in one group."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from memtape.connectors.kafka import publish_records
from memtape.connectors.lance_store import Store
from memtape.schemas.records import RawEvent

WORDS = ("budget review launch pricing slides offsite Berlin Friday contract invoice travel hotel flight agenda "
         "hiring interview roadmap release bug deploy server dinner").split()


def _events(tenants: list[str], conversations: int, per_conversation: int, start: datetime) -> list[RawEvent]:
    rng = random.Random(7)
    events = []
    for t in tenants:
        for c in range(conversations):
            for i in range(per_conversation):
                text = f"{rng.choice(['Alice', 'Bob', 'Dana'])} says the {rng.choice(WORDS)} {rng.choice(WORDS)} " \
                       f"moved to {rng.choice(WORDS)} number {c}-{i}."
                events.append(RawEvent(t, "im", "jsonl", f"{t}-c{c}-m{i}", text, start + timedelta(seconds=c * 0.01 + i * 0.5),
                                       conversation_id=f"conv-{c}", sender=["ann", "bob"][i % 2]))
    return events


def _stream(home: Path, bootstrap: str, prefix: str, group: str, max_seconds: float, idle: float = 600.0) -> subprocess.Popen:
    env = {**os.environ, "MEMTAPE_HOME": str(home), "MEMTAPE_KAFKA_TOPIC_PREFIX": prefix}
    return subprocess.Popen([sys.executable, "-m", "memtape", "stream", "--bootstrap-servers", bootstrap, "--group", group,
                             "--topic-prefix", prefix, "--max-seconds", str(max_seconds), "--idle-timeout", str(idle),
                             "--batch-wait", "0.5"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(predicate, timeout: float, every: float = 1.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(every)
    return predicate()


def _count(home: Path, table: str) -> int:
    return Store(str(home)).count(table) if (home / f"{table}.lance").exists() else 0


def _assert_no_duplicates(store: Store, expected_ids: set[str]) -> None:
    raw = store.read("raw_events", columns=["event_id"]).column("event_id").to_pylist()
    assert len(raw) == len(set(raw)) == len(expected_ids)
    assert set(raw) == expected_ids
    members = [m for ids in store.read("episodes", columns=["member_ids"]).column("member_ids").to_pylist() for m in ids]
    assert len(members) == len(set(members)), "a raw event sits in two episodes"
    in_memories = [m for ids in store.read("memories", columns=["raw_event_ids"]).column("raw_event_ids").to_pylist() for m in ids]
    assert len(in_memories) == len(set(in_memories)), "a raw event sits in two memories"


@pytest.mark.slow
def test_kill_9_at_random_moments_loses_and_duplicates_nothing(kafka_broker, tmp_path):
    prefix, home = "killtest", tmp_path / "home"
    events = _events(["acme", "globex"], conversations=6, per_conversation=25, start=datetime(2024, 5, 1, tzinfo=timezone.utc))
    report = publish_records(events, kafka_broker, prefix=prefix)
    assert report.events == len(events)
    rng = random.Random(11)
    for _ in range(3):
        proc = _stream(home, kafka_broker, prefix, "g-kill", max_seconds=300)
        _wait_for(lambda: _count(home, "raw_events") > 0, timeout=120, every=0.5)
        time.sleep(rng.uniform(0.0, 3.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    proc = _stream(home, kafka_broker, prefix, "g-kill", max_seconds=300)
    landed = _wait_for(lambda: _count(home, "raw_events") == len(events) and _count(home, "memories") > 0, timeout=240)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert landed, f"raw {_count(home, 'raw_events')}/{len(events)}, memories {_count(home, 'memories')}: {err[-3000:]}"
    assert proc.returncode == 0, err[-2000:]
    _assert_no_duplicates(Store(str(home)), {e.event_id for e in events})


def _settled(home: Path, total: int, quiet_s: float = 10.0, timeout: float = 300.0) -> bool:
    """Wait until every event landed and the derived tables stopped changing for ``quiet_s``."""
    if not _wait_for(lambda: _count(home, "raw_events") == total, timeout=timeout):
        return False
    end, last, since = time.monotonic() + timeout, None, time.monotonic()
    while time.monotonic() < end:
        now = tuple(_count(home, t) for t in ("episodes", "triples", "memories"))
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s and now[2] > 0:
            return True
        time.sleep(1.0)
    return False


def _derived(home: Path) -> dict[str, set]:
    store = Store(str(home))
    episodes = store.read("episodes", columns=["member_ids"]).column("member_ids").to_pylist()
    return {"raw": set(store.read("raw_events", columns=["event_id"]).column("event_id").to_pylist()),
            "episodes": {tuple(m) for m in episodes},
            "triples": set(store.read("triples", columns=["triple_id"]).column("triple_id").to_pylist()),
            "memories": {tuple(m) for m in store.read("memories", columns=["raw_event_ids"]).column("raw_event_ids").to_pylist()}}


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]
        assert "memtape stream: batches" in err  # without a terminal, progress still reaches stderr


@pytest.mark.slow
def test_two_processes_in_one_group_land_exactly_what_one_would(kafka_broker, tmp_path):
    prefix = "pairtest"
    events = _events(["acme", "globex"], conversations=4, per_conversation=15, start=datetime(2024, 6, 1, tzinfo=timezone.utc))
    assert publish_records(events, kafka_broker, prefix=prefix).events == len(events)
    single, pair = tmp_path / "single", tmp_path / "pair"
    # The two groups are independent, so the one-process job and the two-process job run side by side.
    procs = [_stream(single, kafka_broker, prefix, "g-single", max_seconds=400, idle=3),
             *(_stream(pair, kafka_broker, prefix, "g-pair", max_seconds=400, idle=3) for _ in range(2))]
    assert _settled(single, len(events)), f"single process: raw {_count(single, 'raw_events')}/{len(events)}"
    assert _settled(pair, len(events)), f"two processes: raw {_count(pair, 'raw_events')}/{len(events)}"
    _stop(procs)
    _assert_no_duplicates(Store(str(pair)), {e.event_id for e in events})
    assert _derived(pair) == _derived(single)
