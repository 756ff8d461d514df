"""Benchmark: memtape's Kafka publish/consume path against a bare kafka-python loop on the same broker.

Publishes and consumes N small IM messages (default 100,000) both ways on one
embedded broker (or ``--bootstrap-servers``), a few rounds each, and prints
JSON with the median messages/s of each path and their ratio. The bare loop
is what one writes by hand: ``json.dumps`` of a five-field dict, keyed by
conversation, sent with kafka-python's default producer, and on the consume
side a group member that polls and commits without decoding. memtape's path
starts from ``RawEvent`` objects and adds the full ``raw_events`` row (event id,
content hash), the codec header, ``acks=all``, bounded in-flight acks and the
read-back check, and on the consume side decoding into ``RawEvent`` and
dead-letter routing. A third publish loop sends memtape's own pre-encoded
bytes through a default producer, separating the transport's cost from the
encoding's. Group-join time is excluded on both sides. A benchmark, not a test.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer

from memtape.connectors.kafka_broker import EmbeddedBroker
from memtape.connectors.kafka_codec import encode_event, event_key
from memtape.connectors.kafka_io import Publisher, RawEventConsumer, ensure_topics, raw_topic
from memtape.schemas.records import RawEvent

CONVERSATIONS = 200
PARTITIONS = 6
SESSION_TIMEOUT_MS = 6000
_START = datetime(2024, 1, 1, tzinfo=timezone.utc)


def messages(n: int) -> list[RawEvent]:
    return [RawEvent("bench", "im", "jsonl", f"m{i}", f"short chat line number {i}, see you at {i % 24}:00",
                     _START + timedelta(seconds=i), conversation_id=f"c{i % CONVERSATIONS}", sender=f"u{i % 7}")
            for i in range(n)]


def bare_publish(servers: str, topic: str, chats: list[dict]) -> float:
    """What a hand-written loop does: json.dumps each message, key it by conversation, send, flush."""
    producer = KafkaProducer(bootstrap_servers=servers)
    started = time.perf_counter()
    for chat in chats:
        producer.send(topic, key=chat["conversation"].encode(), value=json.dumps(chat).encode())
    producer.flush()
    seconds = time.perf_counter() - started
    producer.close()
    return seconds


def bare_send_encoded(servers: str, topic: str, encoded: list[tuple[bytes, bytes, list]]) -> float:
    """Transport only: memtape's own key, value and header bytes, already encoded, through a default producer."""
    producer = KafkaProducer(bootstrap_servers=servers)
    started = time.perf_counter()
    for key, value, headers in encoded:
        producer.send(topic, key=key, value=value, headers=headers)
    producer.flush()
    seconds = time.perf_counter() - started
    producer.close()
    return seconds


def bare_consume(servers: str, topic: str, n: int) -> float:
    consumer = KafkaConsumer(topic, bootstrap_servers=servers, group_id=f"bare-{uuid.uuid4().hex[:6]}",
                             auto_offset_reset="earliest", enable_auto_commit=False, session_timeout_ms=SESSION_TIMEOUT_MS,
                             fetch_max_bytes=8 << 20, receive_message_max_bytes=12 << 20)
    got, started = 0, None
    while got < n:
        polled = consumer.poll(500)
        if polled and started is None:
            started = time.perf_counter()  # group join time is the broker's, not the loop's
        got += sum(len(batch) for batch in polled.values())
        consumer.commit()
    seconds = time.perf_counter() - started
    consumer.close()
    return seconds


def memtape_publish(servers: str, prefix: str, events: list[RawEvent]) -> float:
    with Publisher(servers, prefix=prefix, partitions=PARTITIONS) as publisher:
        started = time.perf_counter()
        publisher.publish(events)
        return time.perf_counter() - started


def memtape_consume(servers: str, prefix: str, n: int) -> float:
    got, started = 0, None
    with RawEventConsumer(servers, f"memtape-{uuid.uuid4().hex[:6]}", [raw_topic("im", prefix)], prefix=prefix,
                          session_timeout_ms=SESSION_TIMEOUT_MS) as consumer:
        while got < n:
            batch = consumer.poll()
            if batch is None:
                continue
            started = started or time.perf_counter()
            got += len(batch.events)
            consumer.commit(batch.offsets)
    return time.perf_counter() - started


def run(servers: str, n: int, rounds: int) -> dict:
    events = messages(n)
    chats = [{"id": e.source_id, "conversation": e.conversation_id, "sender": e.sender, "time": e.event_time.isoformat(),
              "text": e.text} for e in events]
    encoded = [(event_key(e), *encode_event(e)) for e in events]
    rates: dict[str, list[float]] = {"bare_publish": [], "bare_publish_memtape_bytes": [], "memtape_publish": [],
                                     "bare_consume": [], "memtape_consume": []}
    for _ in range(rounds):
        prefix = f"bench{uuid.uuid4().hex[:6]}"
        bare_topic = f"{prefix}.bare"
        ensure_topics(servers, [bare_topic, f"{prefix}.bytes"], PARTITIONS)
        rates["bare_publish"].append(n / bare_publish(servers, bare_topic, chats))
        rates["bare_publish_memtape_bytes"].append(n / bare_send_encoded(servers, f"{prefix}.bytes", encoded))
        rates["memtape_publish"].append(n / memtape_publish(servers, prefix, events))
        rates["bare_consume"].append(n / bare_consume(servers, bare_topic, n))
        rates["memtape_consume"].append(n / memtape_consume(servers, prefix, n))
    median = {k: round(statistics.median(v)) for k, v in rates.items()}
    return {
        "messages": n, "rounds": rounds, "bootstrap_servers": servers,
        **{f"{k}_msgs_per_s": v for k, v in median.items()},
        "publish_ratio": round(median["memtape_publish"] / median["bare_publish"], 3),
        "publish_ratio_same_bytes": round(median["memtape_publish"] / median["bare_publish_memtape_bytes"], 3),
        "consume_ratio": round(median["memtape_consume"] / median["bare_consume"], 3),
        "publish_target": 0.8,
        "all_rounds_msgs_per_s": {k: [round(x) for x in v] for k, v in rates.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bootstrap-servers", default=None, help="an existing broker; default: start an embedded one")
    args = parser.parse_args()
    if args.bootstrap_servers:
        print(json.dumps(run(args.bootstrap_servers, args.messages, args.rounds), indent=2))
        return
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker(log_path=Path(tmp) / "tansu.log") as broker:
        print(json.dumps(run(broker.bootstrap_servers, args.messages, args.rounds), indent=2))


if __name__ == "__main__":
    main()
