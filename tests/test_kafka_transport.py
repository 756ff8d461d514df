"""Kafka transport on the embedded broker: publish, consumer group, dead letters, bounded reads, broker restarts."""
from __future__ import annotations

import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from email.parser import BytesHeaderParser
from pathlib import Path

import pytest
from kafka import KafkaProducer, TopicPartition

from memtape.connectors.base import connectors
from memtape.connectors.kafka_broker import EmbeddedBroker
from memtape.connectors.kafka_codec import encode_event
from memtape.connectors.kafka import (
    Consumed, Publisher, RawEventConsumer, SourceRecords, data_end_offsets, dead_letter_topic, describe_topics,
    publish_records, raw_topic, read_range, new_consumer,
)
from memtape.schemas.records import DeadLetter, RawEvent
from fixtures_broker import restart_broker

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
MAILDIR = SHARED / "email" / "skilling-j"
SLACK = SHARED / "im" / "slack" / "testarchive.zip"
FAST_JOIN_MS = 6000  # Tansu answers JoinGroup after half the session timeout
OUTAGE_S = 30.0  # the requirement: the broker away for 30 s, publishers and consumers retry and resume


def _prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


def _im(i: int, conversation: str = "c0", tenant: str = "acme") -> RawEvent:
    return RawEvent(tenant, "im", "jsonl", f"m{i}", f"message {i}", datetime(2024, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=i),
                    conversation_id=conversation, sender=f"u{i % 3}")


def _consume_all(servers: str, prefix: str, group: str, expected: int) -> tuple[list[Consumed], int]:
    """Consume in a group, committing each batch after 'landing' it, until ``expected`` events arrived."""
    got: list[Consumed] = []
    dead = 0
    with RawEventConsumer(servers, group, prefix=prefix, session_timeout_ms=FAST_JOIN_MS) as consumer:
        for batch in consumer.batches(idle_stop_s=10):
            got.extend(batch.events)
            dead += batch.dead_lettered
            consumer.commit(batch.offsets)
            if len(got) >= expected:
                break
    return got, dead


def _maildir_message_ids() -> set[str]:
    parser = BytesHeaderParser()
    ids = set()
    for path in MAILDIR.rglob("*"):
        if path.is_file():
            message_id = parser.parsebytes(path.read_bytes()).get("Message-ID")
            if message_id:
                ids.add(message_id.strip())
    return ids


def _slack_message_count() -> int:
    import json
    import zipfile

    with zipfile.ZipFile(SLACK) as archive:
        return len({(name.split("/")[0], m["ts"]) for name in archive.namelist() if "/" in name and name.endswith(".json")
                    for m in json.loads(archive.read(name))})


@pytest.mark.slow
@pytest.mark.skipif(not MAILDIR.exists(), reason=f"{MAILDIR} absent: ../shared/data not checked out beside the repo")
def test_maildir_and_slack_arrive_exactly_once_each_through_a_consumer_group(kafka_broker):
    prefix = _prefix()
    uris = [f"maildir:{MAILDIR}"]
    has_slack = "slack" in connectors() and SLACK.exists()
    if has_slack:
        uris.append(f"slack:{SLACK}")
    report = publish_records(SourceRecords(tuple(uris), "acme"), kafka_broker, prefix=prefix, partitions=3)
    message_ids = _maildir_message_ids()
    slack_count = _slack_message_count() if has_slack else 0
    assert report.events == len(message_ids) + slack_count

    got, dead = _consume_all(kafka_broker, prefix, "stream-test", report.events)
    emails = {c.event.source_id for c in got if c.topic == raw_topic("email", prefix)}
    assert emails == message_ids  # 1,496 distinct Message-IDs: every message, none twice
    assert len(got) == report.events and dead == 0
    if has_slack:
        assert len({c.event.source_id for c in got if c.topic == raw_topic("im", prefix)}) == slack_count
    skilling = next(c.event for c in got if c.event.source_id == "<10617394.1075840149224.JavaMail.evans@thyme>")
    assert skilling.source_kind == "email" and skilling.tenant == "acme" and skilling.text

    by_conversation: dict[str, set[int]] = {}
    for c in got:
        by_conversation.setdefault(c.event.conversation_id, set()).add(c.partition)
    assert all(len(parts) == 1 for parts in by_conversation.values())  # a conversation never spans partitions

    lag = {(p.topic, p.partition): p.lag("stream-test") for p in describe_topics(kafka_broker)
           if p.topic.startswith(prefix + ".raw.") and p.end_offset}
    assert lag and set(lag.values()) == {0}  # manual commits covered every message
    letters = list(read_range(f"kafka://{dead_letter_topic(prefix)}", kafka_broker))
    assert len(letters) == report.dead_letters  # the non-message file 'inbox/genie' is documented, not dropped


@pytest.mark.slow
def test_poison_message_goes_to_the_dead_letter_topic_and_the_consumer_goes_on(kafka_broker):
    prefix = _prefix()
    publish_records([_im(0)], kafka_broker, prefix=prefix, partitions=1)
    topic = raw_topic("im", prefix)
    producer = KafkaProducer(bootstrap_servers=kafka_broker, acks="all")
    producer.send(topic, key=b"acme\x1fc0", value=b"\x00garbage", headers=[("memtape-codec", b"json/1;raw_events/1")])
    value, headers = encode_event(_im(1))
    producer.send(topic, key=b"acme\x1fc0", value=value, headers=headers)
    producer.flush()
    producer.close()

    got, dead = _consume_all(kafka_broker, prefix, "poison-test", 2)
    assert [c.event.source_id for c in got] == ["m0", "m1"] and [c.offset for c in got] == [0, 2]
    assert dead == 1
    [letter] = read_range(f"kafka://{dead_letter_topic(prefix)}", kafka_broker)
    assert isinstance(letter, DeadLetter) and letter.raw == b"\x00garbage"
    assert letter.stage == "kafka-decode" and "not JSON" in letter.error and letter.position == f"{topic}:0:1"


@pytest.mark.slow
def test_bounded_read_stops_on_the_data_with_exact_counts(kafka_broker):
    prefix = _prefix()
    records = [_im(i) for i in range(1000)]
    with Publisher(kafka_broker, prefix=prefix, partitions=1, max_in_flight=37) as publisher:
        publisher.publish(records)  # many small batches: Tansu's ListOffsets would say last batch base + 1
    topic = raw_topic("im", prefix)
    tp = TopicPartition(topic, 0)
    consumer = new_consumer(kafka_broker, {})
    assert data_end_offsets(consumer, [tp]) == {tp: 1000}
    consumer.close()
    offsets = [c.offset for c in read_range(f"kafka://{topic}?from=100&to=350", kafka_broker)]
    assert offsets == list(range(100, 350))
    everything = list(read_range(f"kafka://{topic}", kafka_broker))
    assert [c.event.source_id for c in everything] == [f"m{i}" for i in range(1000)]  # one conversation, in order
    assert [c.offset for c in read_range(f"kafka://{topic}?from=990&to=5000", kafka_broker)] == list(range(990, 1000))
    assert list(read_range(f"kafka://{topic}?from=1000", kafka_broker)) == []


@pytest.mark.slow
def test_publish_through_a_broker_restarted_mid_run_loses_nothing(private_kafka_broker: EmbeddedBroker):
    """The embedded broker keeps messages in memory, so a restart also loses what it had acknowledged.

    The publisher notices (offsets go back, or its last acknowledged record is not there to read back),
    recreates the topics and sends the re-readable input again; only then does the run complete.
    """
    servers, prefix, total = private_kafka_broker.bootstrap_servers, _prefix(), 6000
    outage: list[threading.Thread] = []

    class RestartMidway:
        """Re-readable input that, on its first pass, stops the broker a third of the way and restarts it 30 s later."""

        def __iter__(self):
            for i in range(total):
                if i == total // 3 and not outage:
                    private_kafka_broker.stop()
                    outage.append(threading.Thread(target=restart_broker, args=(private_kafka_broker, OUTAGE_S)))
                    outage[0].start()
                yield _im(i, conversation=f"c{i % 40}")

    with Publisher(servers, prefix=prefix, partitions=4, max_in_flight=500) as publisher:
        report = publisher.publish(RestartMidway())
    outage[0].join()
    assert report.replays >= 1 and report.events == total
    ids = [c.event.source_id for c in read_range(f"kafka://{raw_topic('im', prefix)}", servers)]
    assert set(ids) == {f"m{i}" for i in range(total)}
    last_pass: dict[str, dict[int, None]] = {}  # per conversation, ids in order of their last occurrence
    for source_id in ids:
        seq = last_pass.setdefault(f"c{int(source_id[1:]) % 40}", {})
        seq.pop(int(source_id[1:]), None)
        seq[int(source_id[1:])] = None
    assert all(list(seq) == sorted(seq) for seq in last_pass.values())  # the complete pass kept each conversation in order


@pytest.mark.slow
def test_consumer_rides_out_a_30_s_broker_outage_and_resumes(private_kafka_broker: EmbeddedBroker):
    """A group member keeps polling through 30 s without a broker, then rejoins and receives every event.

    The restarted (memory-only) broker is empty, so the publisher sends its input again, as ``memtape publish``
    does after a loss, plus records new since; the member picks both up without being restarted itself. It
    rejoins after the topics are back, as against a real cluster, whose topics survive a restart (Tansu 0.6
    leaves a member that rejoins an empty broker before its topics exist with no partitions).
    """
    servers, prefix = private_kafka_broker.bootstrap_servers, _prefix()
    before = [_im(i, conversation=f"c{i % 10}") for i in range(500)]
    after = [_im(i, conversation=f"c{i % 10}") for i in range(500, 1000)]
    publish_records(before, servers, prefix=prefix, partitions=2)
    seen: set[str] = set()

    def drain(consumer: RawEventConsumer, want: int, within_s: float) -> None:
        deadline = time.monotonic() + within_s
        while len(seen) < want and time.monotonic() < deadline:
            batch = consumer.poll()
            if batch is not None:
                seen.update(c.event.source_id for c in batch.events)
                consumer.commit(batch.offsets)

    def outage_then_republish() -> None:
        private_kafka_broker.stop()
        time.sleep(OUTAGE_S)
        restarting.set()
        private_kafka_broker.start()
        publish_records([*before, *after], servers, prefix=prefix, partitions=2)

    restarting = threading.Event()
    with RawEventConsumer(servers, "outage-test", prefix=prefix, partitions=2, session_timeout_ms=FAST_JOIN_MS) as consumer:
        drain(consumer, len(before), 20)
        assert len(seen) == len(before)
        outage = threading.Thread(target=outage_then_republish)
        outage.start()
        while not restarting.is_set():
            assert consumer.poll(200) is None  # no broker: empty polls, no exception
        outage.join()
        drain(consumer, len(before) + len(after), 30)
    assert seen == {f"m{i}" for i in range(1000)}
