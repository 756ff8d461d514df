"""`memtape delete` removes a tenant's data and its bytes from the store directory."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from memtape.connectors.lance_store import Store, column_is
from memtape.pipelines.backfill import run_backfill
from memtape.pipelines.delete import delete_events, select_events
from memtape.pipelines.maintain import maintain
from memtape.pipelines.tombstones import bury

MARKER = "zebra-quokka-4711"


def _files_containing(root: Path, needle: str) -> list[Path]:
    data = needle.encode()
    return [p for p in root.rglob("*") if p.is_file() and data in p.read_bytes()]


@pytest.mark.slow
def test_deleted_source_id_is_gone_from_disk_and_other_tenants_keep_theirs(tmp_path):
    src = tmp_path / "chat.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in [
        {"id": "s1", "text": f"the {MARKER} plan is secret", "time": "2024-05-01T10:00:00+02:00", "sender": "ann"},
        {"id": "s2", "text": "public note", "time": "2024-05-01T10:01:00+02:00", "sender": "bob"},
    ]) + "\n")
    home = tmp_path / "home"
    store = Store(str(home))
    for tenant in ("t1", "t2"):
        run_backfill([f"jsonl:{src}"], tenant, store, runner="DirectRunner")
    maintain(store)
    assert _files_containing(home, MARKER), "the marker must be findable on disk before deletion"

    report = delete_events(store, "t1", select_events(store, "t1", source_ids=["s1"]))
    assert report.deleted["raw_events"] == 1
    assert store.read("raw_events", columns=["tenant", "source_id"]).to_pylist() == [
        {"tenant": "t1", "source_id": "s2"}, {"tenant": "t2", "source_id": "s1"}, {"tenant": "t2", "source_id": "s2"}]

    delete_events(store, "t2", select_events(store, "t2", everything=True))
    assert _files_containing(home, MARKER) == []
    assert store.count("raw_events") == 1


TENANT_MARK = "okapi-narwhal-9931"  # in the deleted tenant's text, ids, conversation, sender and a bad line


def _marked_source(folder: Path, tag: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    src = folder / "chat.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in [
        {"id": f"{tag}-1", "text": f"Ann told Bob about the {tag} garden plan.", "time": "2024-05-01T10:00:00Z",
         "sender": f"ann-{tag}", "conversation": f"conv-{tag}"},
        {"id": f"{tag}-2", "text": f"Bob asked whether the {tag} garden needs water.", "time": "2024-05-01T10:01:00Z",
         "sender": f"bob-{tag}", "conversation": f"conv-{tag}"},
        {"id": f"{tag}-3", "text": f"Ann said the {tag} roses bloom in June.", "time": "2024-05-01T10:02:00Z",
         "sender": f"ann-{tag}", "conversation": f"conv-{tag}"},
        {"id": f"{tag}-4", "text": "See you tomorrow then.", "time": "2024-05-01T10:03:00Z", "sender": f"bob-{tag}",
         "conversation": f"conv-{tag}"},
    ]) + f"\n{{not json {tag}\n")
    return src


def _tenant_rows(store: Store, tenant: str) -> dict[str, int]:
    from memtape.schemas import TABLES

    return {name: store.count(name, column_is("tenant", tenant)) for name in TABLES}


@pytest.mark.slow
def test_delete_all_leaves_no_byte_of_the_tenant_even_after_maintain_and_another_tenants_write(tmp_path):
    from click.testing import CliRunner

    from memtape.cli import cli

    home = tmp_path / "home"
    store = Store(str(home))
    run_backfill([f"jsonl:{_marked_source(tmp_path / 'gone', TENANT_MARK)}"], "gone", store, runner="DirectRunner")
    maintain(store)
    before = _tenant_rows(store, "gone")
    assert all(before[t] for t in ("raw_events", "memories", "dead_letters", "cursors", "pipeline_state")), before
    assert _files_containing(home, TENANT_MARK)

    out = CliRunner().invoke(cli, ["delete", "--tenant", "gone", "--all", "--home", str(home)])
    assert out.exit_code == 0, out.output
    run_backfill([f"jsonl:{_marked_source(tmp_path / 'kept', 'tulip')}"], "kept", store, runner="DirectRunner")
    maintain(store)

    assert _files_containing(home, TENANT_MARK) == []
    assert {t: n for t, n in _tenant_rows(store, "gone").items() if n} == {"tombstones": 1}
    assert store.count("raw_events", column_is("tenant", "kept")) == 4
    reply = json.loads(out.output)
    assert reply["tombstone"]["source_uri"] is None and reply["deleted"]["pipeline_state"] == before["pipeline_state"]


@pytest.mark.slow
def test_reimporting_a_deleted_source_lands_every_event_and_memory_again(tmp_path):
    store = Store(str(tmp_path / "home"))
    uri = f"jsonl:{_marked_source(tmp_path / 'src', 'iris')}"
    first = run_backfill([uri], "t", store, runner="DirectRunner")
    memories = store.count("memories")
    assert first.landed["raw_events"] == 4 and memories > 0

    delete_events(store, "t", select_events(store, "t", source_uri=uri), source_uri=uri)
    assert store.count("raw_events") == 0 and store.count("memories") == 0 and store.count("cursors") == 0
    again = run_backfill([uri], "t", store, runner="DirectRunner")
    assert again.landed["raw_events"] == 4 and store.count("raw_events") == 4
    assert store.count("memories") == memories and store.count("dead_letters") == 1


def _chat(tenant: str, tag: str, n: int) -> list:
    from memtape.schemas.records import RawEvent

    return [RawEvent(tenant, "im", "jsonl", f"{tag}-{i}", f"{tag} message {i}", None, conversation_id=f"c-{tag}",
                     source_uri=f"jsonl:/exports/{tenant}.jsonl") for i in range(n)]


@pytest.mark.slow
def test_a_kafka_replay_after_delete_lands_only_what_was_read_after_it(kafka_broker, tmp_path):
    import uuid

    from click.testing import CliRunner

    from memtape.cli import cli
    from memtape.connectors.kafka import RawEventConsumer, publish_records, raw_topic
    from memtape.pipelines.stream import RawLander
    from memtape.pipelines.stream_batches import StreamStats

    prefix = f"del{uuid.uuid4().hex[:8]}"
    topic = raw_topic("im", prefix)
    old = _chat("gone", "before", 5) + _chat("kept", "other", 3)
    assert publish_records(old, kafka_broker, prefix=prefix, partitions=1).events == 8
    home = tmp_path / "home"
    store = Store(str(home))
    run_backfill([f"kafka://{topic}?from=0&to=8"], "gone", store, runner="DirectRunner", derive_memories=False,
                 bootstrap_servers=kafka_broker)
    assert store.count("raw_events") == 5

    out = CliRunner(env={"MEMTAPE_KAFKA_TOPIC_PREFIX": prefix}).invoke(
        cli, ["delete", "--tenant", "gone", "--all", "--home", str(home), "--bootstrap-servers", kafka_broker])
    assert out.exit_code == 0, out.output
    assert [t["topic"] for t in json.loads(out.output)["kafka"]] == [topic]  # the records are still there
    new = _chat("gone", "after", 2)  # read from the source after the deletion
    assert publish_records(new, kafka_broker, prefix=prefix, partitions=1).events == 2

    run_backfill([f"kafka://{topic}?from=0&to=10"], "gone", store, runner="DirectRunner", derive_memories=False,
                 bootstrap_servers=kafka_broker)
    assert sorted(store.read("raw_events", columns=["source_id"]).column("source_id").to_pylist()) == ["after-0", "after-1"]

    stats = StreamStats()
    streamed = Store(str(tmp_path / "streamed"))  # the stream re-reads the topic from the start into a store
    bury(streamed, "gone", None, store.read("tombstones").column("deleted_time")[0].as_py())  # that saw the delete
    lander = RawLander(streamed, "g-replay", stats)
    seen, deadline = 0, time.monotonic() + 120
    with RawEventConsumer(kafka_broker, "g-replay", [topic], prefix=prefix, partitions=1) as consumer:
        while seen < 10 and time.monotonic() < deadline:  # all ten messages of the topic, the group joined
            batch = consumer.poll()
            if batch is not None:
                seen += len(batch.events)
                lander.land(batch.events)
    landed = sorted(streamed.read("raw_events", columns=["source_id"]).column("source_id").to_pylist())
    assert landed == ["after-0", "after-1", "other-0", "other-1", "other-2"] and stats.tombstoned == 5


def test_a_source_tombstone_buries_only_that_sources_older_records():
    from datetime import datetime, timedelta, timezone

    from memtape.pipelines.tombstones import Tombstones
    from memtape.schemas.records import RawEvent

    deleted = datetime(2026, 1, 1, tzinfo=timezone.utc)
    stones = Tombstones({("t", "jsonl:/a.jsonl"): deleted})

    def event(tenant: str, uri: str, read: datetime) -> RawEvent:
        return RawEvent(tenant, "im", "jsonl", "x", "text", None, source_uri=uri, ingest_time=read)

    before, after = deleted - timedelta(seconds=1), deleted + timedelta(seconds=1)
    assert stones.buries(event("t", "jsonl:/a.jsonl", before))
    assert not stones.buries(event("t", "jsonl:/a.jsonl", after))
    assert not stones.buries(event("t", "jsonl:/b.jsonl", before))
    assert not stones.buries(event("u", "jsonl:/a.jsonl", before))
