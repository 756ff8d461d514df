"""`memtape backfill kafka://TOPIC?from=N&to=M` on the embedded broker: the same rows as a direct backfill."""
from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner
from kafka import KafkaProducer

from memtape.cli import cli
from memtape.connectors.base import read_source
from memtape.connectors.kafka import SourceRecords, publish_records, raw_topic
from memtape.connectors.lance_store import Store
from memtape.pipelines.backfill import run_backfill
from memtape.schemas.records import RawEvent

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
SLACK = f"slack:{SAMPLES / 'im' / 'slack' / 'testarchive.zip'}"
OTHER_TENANT_CHAT = f"jsonl:{SAMPLES / 'jsonl' / 'team-chat.jsonl'}"
POISON = b"{not a memtape record"
COMPARED = ["event_id", "source_uri", "conversation_id", "sender", "event_time", "tz_offset_minutes", "text", "payload"]


def _ids(store: Store) -> list[str]:
    return sorted(store.read("raw_events", columns=["event_id"]).column("event_id").to_pylist())


def _rows(store: Store) -> list[dict]:
    return sorted(store.read("raw_events", columns=COMPARED).to_pylist(), key=lambda r: r["event_id"])


@pytest.fixture(scope="module")
def topic(kafka_broker: str) -> dict:
    """One single-partition im topic: alice's Slack sample, then bob's team chat, then one poison message."""
    prefix = f"kb{uuid.uuid4().hex[:8]}"
    publish_records(SourceRecords((SLACK,), "alice"), kafka_broker, prefix=prefix, partitions=1)
    publish_records(SourceRecords((OTHER_TENANT_CHAT,), "bob"), kafka_broker, prefix=prefix, partitions=1)
    producer = KafkaProducer(bootstrap_servers=kafka_broker, acks="all")
    producer.send(raw_topic("im", prefix), key=b"alice", value=POISON).get(30)
    producer.close()
    alice = [r for r in read_source(SLACK, "alice") if isinstance(r, RawEvent)]
    bob = [r for r in read_source(OTHER_TENANT_CHAT, "bob") if isinstance(r, RawEvent)]
    return {"name": raw_topic("im", prefix), "alice": alice, "bob": bob, "end": len(alice) + len(bob) + 1}


def test_kafka_range_lands_the_direct_backfills_event_ids_and_a_rerun_adds_nothing(topic, kafka_broker, tmp_path,
                                                                                   monkeypatch):
    monkeypatch.setenv("MEMTAPE_KAFKA_BOOTSTRAP_SERVERS", kafka_broker)  # no --bootstrap-servers: the config's
    uri = f"kafka://{topic['name']}?from=0&to={topic['end']}"
    store = Store(str(tmp_path / "from-kafka"))
    result = run_backfill([uri], "alice", store, runner="DirectRunner", derive_memories=False)
    direct = Store(str(tmp_path / "direct"))
    run_backfill([SLACK], "alice", direct, runner="DirectRunner", derive_memories=False)

    assert _ids(store) == sorted(e.event_id for e in topic["alice"])
    assert _rows(store) == _rows(direct)  # same ids, same content: the codec round-trips each event
    assert result.landed == {"raw_events": len(topic["alice"]), "dead_letters": 1}
    assert result.other_tenant_records == len(topic["bob"])  # bob's records wait for bob's own backfill
    [letter] = store.read("dead_letters").to_pylist()
    assert letter["stage"] == "kafka-decode" and "unsupported" in letter["error"]
    assert letter["position"] == f"{topic['name']}:0:{topic['end'] - 1}" and letter["raw"] == POISON

    run_backfill([uri], "alice", store, runner="DirectRunner", derive_memories=False)
    assert store.count("raw_events") == len(topic["alice"]) and store.count("dead_letters") == 1


@pytest.mark.slow  # derives episodes and memories: loads the spaCy and MiniLM models
def test_cli_backfill_of_an_offset_subrange_lands_exactly_those_records(topic, kafka_broker, tmp_path):
    start, stop = 40, 60
    home = tmp_path / "home"
    result = CliRunner().invoke(cli, ["backfill", f"kafka://{topic['name']}?from={start}&to={stop}&partition=0",
                                      "--bootstrap-servers", kafka_broker, "--tenant", "alice", "--home", str(home),
                                      "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["landed"]["raw_events"] == stop - start
    store = Store(str(home))
    landed = _ids(store)
    assert landed == sorted(e.event_id for e in topic["alice"][start:stop])
    memories = store.read("memories", columns=["raw_event_ids"]).column("raw_event_ids").to_pylist()
    assert memories and set().union(*memories) <= set(landed)  # derived from exactly what the range landed
