"""Bounded reads: ``kafka://TOPIC?from=N&to=M`` ranges, and the true end offset of each partition.

A range stops on the data itself (the fetch responses' high watermark), never
on ListOffsets, which some brokers answer one batch short.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Iterable, Iterator, Mapping, Sequence
from urllib.parse import parse_qs, urlsplit

from kafka import KafkaConsumer, TopicPartition

from memtape.connectors.kafka.admin import DECODE_STAGE, MAX_POLL_RECORDS, POLL_TIMEOUT_MS, VERIFY_TIMEOUT_S, new_consumer
from memtape.connectors.kafka.consumer import Consumed
from memtape.connectors.kafka_codec import DEAD_LETTER_REASON, CodecError, decode_dead_letter, decode_event
from memtape.errors import UserError
from memtape.schemas.records import DeadLetter

RANGE_IDLE_LIMIT_S = 15.0  # a bounded read with no new data this long fails rather than truncate silently



@dataclasses.dataclass(frozen=True)
class TopicRange:
    """``kafka://TOPIC?from=N&to=M&partition=P``: offsets ``[from, to)`` of each chosen partition."""

    topic: str
    start: int | None = None
    stop: int | None = None
    partitions: tuple[int, ...] | None = None


def parse_kafka_uri(uri: str) -> TopicRange:
    """Parse a ``kafka://`` range URI; missing bounds mean the first and the last record present."""
    parts = urlsplit(uri)
    if parts.scheme != "kafka" or not parts.netloc:
        raise UserError(f"{uri}: expected kafka://TOPIC?from=OFFSET&to=OFFSET")
    query = parse_qs(parts.query)
    unknown = set(query) - {"from", "to", "partition"}
    if unknown:
        raise UserError(f"{uri}: unknown parameters {sorted(unknown)} (known: from, to, partition)")

    def offset(name: str) -> int | None:
        if name not in query:
            return None
        try:
            value = int(query[name][-1])
        except ValueError:
            raise UserError(f"{uri}: {name}= must be an offset (a non-negative integer)") from None
        if value < 0:
            raise UserError(f"{uri}: {name}= must not be negative")
        return value

    try:
        partitions = tuple(int(p) for p in query["partition"]) if "partition" in query else None
    except ValueError:
        raise UserError(f"{uri}: partition= must be an integer") from None
    return TopicRange(parts.netloc, offset("from"), offset("to"), partitions)


def _assign(consumer: KafkaConsumer, topic: str, partitions: Iterable[int] | None) -> list[TopicPartition]:
    known = consumer.partitions_for_topic(topic)
    if not known:
        raise UserError(f"{topic}: no such topic on {consumer.config['bootstrap_servers']}")
    chosen = sorted(known if partitions is None else partitions)
    missing = set(chosen) - known
    if missing:
        raise UserError(f"{topic}: no partitions {sorted(missing)} (it has {len(known)})")
    tps = [TopicPartition(topic, p) for p in chosen]
    consumer.assign(tps)
    return tps


def read_range(uri: str | TopicRange, bootstrap_servers: str, tenant: str = "default",
               options: Mapping[str, object] | None = None) -> Iterator[Consumed | DeadLetter]:
    """Stream exactly the records of a ``kafka://`` range, then stop.

    Each partition stops on the data itself: at the first record at or past
    ``to``, or once the read position reaches the high watermark that the
    broker's fetch responses carry. ``end_offsets()`` (ListOffsets) is never
    trusted: Tansu 0.6.0 answers the last batch's base offset + 1 there.
    Messages of a dead-letter topic and undecodable ones come out as
    ``DeadLetter`` values, as from any connector.
    """
    span = parse_kafka_uri(uri) if isinstance(uri, str) else uri
    consumer = new_consumer(bootstrap_servers, options or {}, max_poll_records=MAX_POLL_RECORDS, fetch_max_wait_ms=100)
    try:
        tps = _assign(consumer, span.topic, span.partitions)
        first = consumer.beginning_offsets(tps)
        open_ = set()
        for tp in tps:
            start = max(span.start or 0, first[tp])
            if span.stop is None or start < span.stop:
                consumer.seek(tp, start)
                open_.add(tp)
        last_progress = time.monotonic()
        while open_:
            for tp, messages in consumer.poll(POLL_TIMEOUT_MS).items():
                if tp not in open_:
                    continue
                last_progress = time.monotonic()
                for m in messages:
                    if span.stop is not None and m.offset >= span.stop:
                        open_.discard(tp)
                        break
                    if any(k == DEAD_LETTER_REASON for k, _ in m.headers or ()):
                        yield decode_dead_letter(m.value, m.headers, tenant)
                        continue
                    try:
                        yield Consumed(m.topic, m.partition, m.offset, decode_event(m.value, m.headers))
                    except CodecError as exc:
                        yield DeadLetter(tenant, "kafka", DECODE_STAGE, str(exc), position=f"{m.topic}:{m.partition}:{m.offset}",
                                         source_uri=f"kafka://{m.topic}", raw=m.value)
            for tp in list(open_):
                highwater = consumer.highwater(tp)
                position = consumer.position(tp)
                if (highwater is not None and position >= highwater) or (span.stop is not None and position >= span.stop):
                    open_.discard(tp)
            for tp in tps:
                if tp not in open_ and tp not in consumer.paused():
                    consumer.pause(tp)
            if open_ and time.monotonic() - last_progress > RANGE_IDLE_LIMIT_S:
                raise UserError(f"{span.topic}: no data from partitions {sorted(tp.partition for tp in open_)} "
                                f"for {RANGE_IDLE_LIMIT_S:.0f} s before the end of the range")
    finally:
        consumer.close()


def data_end_offsets(consumer: KafkaConsumer, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
    """Next offset of each partition, as the fetch responses' high watermark states it.

    ListOffsets (``end_offsets()``) only seeds the fetch position: it is never
    past the true end (Tansu reports the last batch's base offset + 1), so the
    fetch from there returns at most the last batch and its exact watermark.
    """
    consumer.assign(list(tps))
    hints = consumer.end_offsets(list(tps))
    for tp in tps:
        consumer.seek(tp, max(0, hints[tp] - 1))
    ends: dict[TopicPartition, int] = {}
    deadline = time.monotonic() + VERIFY_TIMEOUT_S
    while len(ends) < len(tps) and time.monotonic() < deadline:
        consumer.poll(POLL_TIMEOUT_MS)
        for tp in tps:
            highwater = consumer.highwater(tp)
            if highwater is not None and tp not in ends:
                ends[tp] = highwater
                consumer.pause(tp)
    missing = [f"{tp.topic}[{tp.partition}]" for tp in tps if tp not in ends]
    if missing:
        raise UserError(f"no fetch answer for {', '.join(missing)} within {VERIFY_TIMEOUT_S:.0f} s")
    return ends
