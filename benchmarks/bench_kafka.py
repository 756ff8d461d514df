"""Benchmark: memtape's Kafka publish/consume path against a bare kafka-python loop on the same broker.

Publishes and consumes N small IM messages (default 100,000) both ways on one
embedded broker (or ``--bootstrap-servers``), several rounds, and prints JSON
with the median messages/s of each path and the median of the per-round
ratios (each round runs both sides back to back, alternating which goes first,
so load from other work on the machine hits both alike). ``wall`` is
messages per second; ``cpu`` is messages per CPU-second of this process (both
kafka-python threads), the steadier measure on a machine shared with other
work.

Source parsing is excluded on both sides. memtape's side is
``Publisher.publish`` exactly as ``memtape publish`` runs it after its
connectors: it starts from ``RawEvent`` objects and derives the row (event id,
content hash, UTC times), encodes it, keys it, adds the codec header, bounds
in-flight acks and reads its last acks back. The bare loop starts from ready
dicts holding the same row values and does what one writes by hand:
``json.dumps`` each, send it with the same key, flush. Both use the same
producer settings (``producer_settings()``: acks=all, one request in flight,
gzip, linger, batch size, the key-hash-caching partitioner), and their
messages are the same size. A third loop sends memtape's own pre-encoded
bytes and headers with those settings: the transport alone, the ceiling for
any encoder. On the consume side both are
group members with the same fetch settings that commit every poll; the bare
one ``json.loads`` each value, memtape's decodes it into a checked
``RawEvent`` and routes poison to the dead-letter topic. Group-join time is
excluded on both sides. A benchmark, not a test.
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
from memtape.connectors.kafka import (
    CONSUMER_SETTINGS, MAX_POLL_RECORDS, Publisher, RawEventConsumer, ensure_topics, producer_settings, raw_topic,
)
from memtape.schemas.records import RawEvent

CONVERSATIONS = 200
PARTITIONS = 6
SESSION_TIMEOUT_MS = 6000  # Tansu answers JoinGroup after half the session timeout
_START = datetime(2024, 1, 1, tzinfo=timezone.utc)
Encoded = tuple[bytes, bytes, list[tuple[str, bytes]]]
Timing = tuple[float, float]  # wall seconds, CPU seconds of this process (all its threads)


def _now() -> Timing:
    return time.perf_counter(), time.process_time()


def _since(started: Timing) -> Timing:
    return time.perf_counter() - started[0], time.process_time() - started[1]


def messages(n: int) -> list[RawEvent]:
    return [RawEvent("bench", "im", "jsonl", f"m{i}", f"short chat line number {i}, see you at {i % 24}:00",
                     _START + timedelta(seconds=i), conversation_id=f"c{i % CONVERSATIONS}", sender=f"u{i % 7}")
            for i in range(n)]


def bare_publish(servers: str, topic: str, rows: list[tuple[bytes, dict]]) -> Timing:
    """What a hand-written loop does: json.dumps each ready dict, send it keyed, flush."""
    producer = KafkaProducer(bootstrap_servers=servers, **producer_settings())
    started = _now()
    for key, row in rows:
        producer.send(topic, key=key, value=json.dumps(row, separators=(",", ":")).encode())
    producer.flush()
    seconds = _since(started)
    producer.close()
    return seconds


def transport_only(servers: str, topic: str, encoded: list[Encoded]) -> Timing:
    """memtape's own key, value and header bytes, already encoded, with the same producer settings."""
    producer = KafkaProducer(bootstrap_servers=servers, **producer_settings())
    started = _now()
    for key, value, headers in encoded:
        producer.send(topic, key=key, value=value, headers=headers)
    producer.flush()
    seconds = _since(started)
    producer.close()
    return seconds


def memtape_publish(servers: str, prefix: str, events: list[RawEvent]) -> Timing:
    with Publisher(servers, prefix=prefix, partitions=PARTITIONS) as publisher:
        started = _now()
        publisher.publish(events)
        return _since(started)


def bare_consume(servers: str, topic: str, n: int) -> Timing:
    consumer = KafkaConsumer(topic, bootstrap_servers=servers, group_id=f"bare-{uuid.uuid4().hex[:6]}",
                             auto_offset_reset="earliest", max_poll_records=MAX_POLL_RECORDS,
                             session_timeout_ms=SESSION_TIMEOUT_MS, heartbeat_interval_ms=SESSION_TIMEOUT_MS // 5,
                             **CONSUMER_SETTINGS)
    got, started = 0, None
    while got < n:
        polled = consumer.poll(500)
        if not polled:
            continue
        started = started or _now()  # group join time is the broker's, not the loop's
        got += sum(1 for batch in polled.values() for m in batch if json.loads(m.value))
        consumer.commit()
    seconds = _since(started)
    consumer.close()
    return seconds


def memtape_consume(servers: str, prefix: str, n: int) -> Timing:
    got, started = 0, None
    with RawEventConsumer(servers, f"memtape-{uuid.uuid4().hex[:6]}", [raw_topic("im", prefix)], prefix=prefix,
                          session_timeout_ms=SESSION_TIMEOUT_MS) as consumer:
        while got < n:
            batch = consumer.poll()
            if batch is None:
                continue
            started = started or _now()
            got += len(batch.events)
            consumer.commit(batch.offsets)
    return _since(started)


def _ready_row(event: RawEvent) -> dict:
    """The row as a source hands a bare loop ready values: strings for times, ids already known."""
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in event.to_row().items()}


def run(servers: str, n: int, rounds: int) -> dict:
    events = messages(n)
    rows = [(event_key(e), _ready_row(e)) for e in events]
    encoded = [(event_key(e), *encode_event(e)) for e in events]
    paths = ("bare_publish", "transport_only", "memtape_publish", "bare_consume", "memtape_consume")
    rates: dict[str, dict[str, list[float]]] = {clock: {k: [] for k in paths} for clock in ("wall", "cpu")}
    for i in range(rounds):
        prefix = f"bench{uuid.uuid4().hex[:6]}"
        bare_topic = f"{prefix}.bare"
        ensure_topics(servers, [bare_topic, f"{prefix}.transport"], PARTITIONS)
        publishes = [("bare_publish", lambda bare_topic=bare_topic: bare_publish(servers, bare_topic, rows)),
                     ("transport_only", lambda prefix=prefix: transport_only(servers, f"{prefix}.transport", encoded)),
                     ("memtape_publish", lambda prefix=prefix: memtape_publish(servers, prefix, events))]
        consumes = [("bare_consume", lambda bare_topic=bare_topic: bare_consume(servers, bare_topic, n)),
                    ("memtape_consume", lambda prefix=prefix: memtape_consume(servers, prefix, n))]
        for name, measure in [*(publishes[::-1] if i % 2 else publishes), *(consumes[::-1] if i % 2 else consumes)]:
            wall, cpu = measure()
            rates["wall"][name].append(n / wall)
            rates["cpu"][name].append(n / cpu)

    def ratios(clock: str) -> dict[str, list[float]]:
        r = rates[clock]
        return {name: [a / b for a, b in zip(r[mine], r[base])] for name, mine, base in (
            ("publish", "memtape_publish", "bare_publish"), ("publish_vs_transport", "memtape_publish", "transport_only"),
            ("consume", "memtape_consume", "bare_consume"))}

    return {
        "messages": n, "rounds": rounds, "bootstrap_servers": servers,
        "source_parse": "excluded on both sides (memtape starts from RawEvent objects, the bare loop from ready dicts)",
        "producer_settings": {k: v for k, v in producer_settings().items() if k in ("acks", "linger_ms", "batch_size",
                                                                                    "compression_type")},
        "publish_target": 0.8,
        **{clock: {
            "msgs_per_s" if clock == "wall" else "msgs_per_cpu_s": {k: round(statistics.median(v)) for k, v in rates[clock].items()},
            "ratios": {k: round(statistics.median(v), 3) for k, v in ratios(clock).items()},
            "all_rounds_ratios": {k: [round(x, 3) for x in v] for k, v in ratios(clock).items()},
        } for clock in ("wall", "cpu")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--bootstrap-servers", default=None, help="an existing broker; default: start an embedded one")
    args = parser.parse_args()
    if args.bootstrap_servers:
        print(json.dumps(run(args.bootstrap_servers, args.messages, args.rounds), indent=2))
        return
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker(log_path=Path(tmp) / "tansu.log") as broker:
        print(json.dumps(run(broker.bootstrap_servers, args.messages, args.rounds), indent=2))


if __name__ == "__main__":
    main()
